"""The model package format: what is accepted, and one line for each thing that is not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from worker.package import PackageError, Preprocessing, load_package, write_package


@pytest.fixture
def package(tmp_path) -> Path:
    artefact = tmp_path / "net.onnx"
    artefact.write_bytes(b"not really onnx: the format module does not run the network")
    root = tmp_path / "pkg"
    write_package(
        root, artefact, ["cat", "dog"], name="pets", version="1", preprocessing=Preprocessing()
    )
    return root


def _manifest(root: Path, **changes) -> None:
    raw = json.loads((root / "manifest.json").read_text())
    for key, value in changes.items():
        if value is None:
            raw.pop(key, None)
        else:
            raw[key] = value
    (root / "manifest.json").write_text(json.dumps(raw))


def test_a_written_package_reads_back_with_its_labels_and_preprocessing(package):
    loaded = load_package(package)
    assert loaded.labels == ("cat", "dog")
    assert loaded.manifest.name == "pets" and loaded.manifest.version == "1"
    assert loaded.manifest.preprocessing == Preprocessing()
    assert len(loaded.manifest.sha256) == 64


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda r: (r / "labels.txt").unlink(), "has no labels.txt"),
        (lambda r: (r / "model.onnx").unlink(), "has no model.onnx"),
        (lambda r: (r / "labels.txt").write_text("\n\n"), "names no class"),
        (lambda r: (r / "manifest.json").write_text("{"), "manifest.json is not JSON"),
        (lambda r: (r / "manifest.json").write_text("[]"), "must be a JSON object"),
        (lambda r: _manifest(r, colour="blue"), "manifest.json has unknown fields: colour"),
        (lambda r: _manifest(r, version=None), "manifest.json lacks version"),
        (lambda r: _manifest(r, format="pickle"), "format 'pickle' is not accepted: onnx"),
        (lambda r: _manifest(r, name=""), "name must be a non-empty string"),
        (
            lambda r: _manifest(r, preprocessing={"resize_side": 256, "gamma": 2}),
            "preprocessing has unknown fields: gamma",
        ),
        (
            lambda r: _manifest(r, preprocessing={"std": [0, 1, 1]}),
            "preprocessing.std must be three positive numbers",
        ),
        (
            lambda r: _manifest(r, preprocessing={"interpolation": "lanczos"}),
            "preprocessing.interpolation must be bicubic|bilinear|nearest",
        ),
        (
            lambda r: _manifest(r, preprocessing={"crop": -1}),
            "preprocessing.crop must be a positive integer or null",
        ),
        (
            lambda r: (r / "model.onnx").write_bytes(b"changed"),
            "does not match the sha256 in manifest.json",
        ),
    ],
)
def test_a_bad_package_is_refused_with_one_line(package, damage, message):
    damage(package)
    with pytest.raises(PackageError) as raised:
        load_package(package)
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_path_that_is_not_a_directory_is_one_line(tmp_path):
    with pytest.raises(PackageError, match="is not a directory"):
        load_package(tmp_path / "absent")


def _cache_with(tmp_path: Path, *dirs: str) -> Path:
    cache = tmp_path / "cache"
    artefact = tmp_path / "net.onnx"
    artefact.write_bytes(b"an artefact")
    for i, dirname in enumerate(dirs):
        name = dirname.rsplit("-", 1)[0]
        write_package(
            cache / dirname,
            artefact,
            ["cat"],
            name=name,
            version=str(i),
            preprocessing=Preprocessing(),
        )
    return cache


def test_without_torch_the_package_the_build_exported_serves(tmp_path, monkeypatch):
    """The worker image has no PyTorch: its key (which names torch's version) cannot be
    computed, so the cache's package of that name is the one."""
    from worker import exported

    cache = _cache_with(tmp_path, "efficientnet_lite0-aaaa", "resnet18-bbbb")
    monkeypatch.setattr(exported.util, "find_spec", lambda name: None)
    found = exported.ensure_package("efficientnet_lite0", cache)
    assert found.root == cache / "efficientnet_lite0-aaaa"
    assert found.manifest.name == "efficientnet_lite0"
    with pytest.raises(exported.Refused, match="no exported package of resnet50 .* no PyTorch"):
        exported.ensure_package("resnet50", cache)


def test_without_torch_a_refused_package_is_one_line_not_a_fallback(tmp_path, monkeypatch):
    from worker import exported, models

    monkeypatch.setattr(models.util, "find_spec", lambda name: None)
    monkeypatch.setattr(exported.util, "find_spec", lambda name: None)
    with pytest.raises(models.ModelError, match="no exported package of efficientnet_lite0"):
        models.load_classifier("efficientnet_lite0", optimize="jit", runtime="auto",
                               cache_dir=tmp_path)  # fmt: skip
    with pytest.raises(models.ModelError, match="PyTorch is not installed"):
        models.load_classifier("efficientnet_lite0", optimize="jit", runtime="torch")
