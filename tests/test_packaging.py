"""`python -m worker.models package`: a user's network (ONNX, TorchScript or a torch.export
program) and labels in, a checked package out, or one line and a non-zero exit; `check` reads a
package already made. The networks are real: the default model's export, and the default network
folded into cat / dog / other (tests/support/folded.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from worker.package import MANIFEST, load_package

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [
    pytest.mark.e2e,  # exports and runs the real model, starts processes
    pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities"),
]


def _models(command: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "worker.models", command, *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )


def _package(
    network: Path, labels: Path, out: Path, name: str = "mine"
) -> subprocess.CompletedProcess:
    return _models(
        "package",
        f"--network={network}",
        f"--labels={labels}",
        f"--name={name}",
        "--version=3",
        f"--out={out}",
        "--mean=0.5,0.5,0.5",
        "--std=0.5,0.5,0.5",
    )


def test_an_onnx_network_and_its_labels_make_a_package(exported_model, tmp_path):
    out = tmp_path / "pkg"
    done = _package(exported_model.artefact, exported_model.root / "labels.txt", out)
    assert done.returncode == 0, done.stderr
    assert "mine 3" in done.stdout and "1000 classes" in done.stdout
    package = load_package(out)
    assert package.manifest.sha256 == exported_model.manifest.sha256
    assert package.manifest.preprocessing == exported_model.manifest.preprocessing


@pytest.mark.parametrize("form", ["pt", "pt2", "onnx"])
def test_each_accepted_format_makes_a_package_that_calls_chelsea_a_cat(
    folded_networks, tmp_path, form
):
    out = tmp_path / "catdog"
    done = _package(folded_networks[form], folded_networks["labels"], out, name="catdog")
    assert done.returncode == 0, done.stderr
    package = load_package(out)  # its SHA-256 checked
    assert package.labels == ("cat", "dog", "other")
    assert package.manifest.source == {"made_from": f"catdog.{form}"}
    # The answers the worker's runtimes are checked against: the network's own on the samples.
    reference = json.loads((out / "reference.json").read_text())
    assert reference["chelsea.jpg"][0][0] == 0 and reference["chelsea.jpg"][0][1] > 0.5
    assert reference["rocket.jpg"][0][0] == 2
    checked = _models("check", str(out))
    assert checked.returncode == 0, checked.stderr
    assert "catdog 3" in checked.stdout


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda e, t: (e.artefact, t / "absent.txt"), "labels file"),
        (lambda e, t: (e.artefact, _write(t / "few.txt", "cat\ndog\n")), "gives 1000 outputs"),
        (lambda e, t: (_write(t / "x.onnx", "not a model"), e.root / "labels.txt"), "not a model"),
        (lambda e, t: (_write(t / "x.pt", "not a model"), e.root / "labels.txt"), "not a model"),
        (lambda e, t: (_write(t / "x.pt2", "not a model"), e.root / "labels.txt"), "not a model"),
        (lambda e, t: (_write(t / "net.pkl", "weights"), e.root / "labels.txt"), "not a model"),
        (lambda e, t: (t / "absent.onnx", e.root / "labels.txt"), "does not exist"),
    ],
)
def test_a_bad_network_or_labels_file_gets_one_line_and_a_non_zero_exit(
    exported_model, tmp_path, make, message
):
    network, labels = make(exported_model, tmp_path)
    done = _package(network, labels, tmp_path / "pkg")
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("worker.models: ") and message in line
    assert not (tmp_path / "pkg").exists()


def test_a_torchscript_network_of_the_wrong_width_is_refused(
    folded_networks, exported_model, tmp_path
):
    done = _package(folded_networks["pt"], exported_model.root / "labels.txt", tmp_path / "pkg")
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert "catdog.pt gives 3 outputs per image but labels.txt names 1000 classes" in line
    assert not (tmp_path / "pkg").exists()


def test_a_manifest_with_an_unknown_field_is_refused_by_check(exported_model, tmp_path):
    out = tmp_path / "pkg"
    assert (
        _package(exported_model.artefact, exported_model.root / "labels.txt", out).returncode == 0
    )
    manifest = json.loads((out / MANIFEST).read_text())
    manifest["preprocessing"]["gamma"] = 2.2
    (out / MANIFEST).write_text(json.dumps(manifest))
    done = _models("check", str(out))
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert line == "worker.models: preprocessing has unknown fields: gamma"


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
