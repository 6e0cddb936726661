"""`python -m worker.models package`: a user's ONNX network and labels in, a checked package out,
or one line and a non-zero exit. The network is the default model's real export."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from worker import exported
from worker.models import DEFAULT_MODEL
from worker.package import load_package

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [
    pytest.mark.e2e,  # exports and runs the real model, starts processes
    pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities"),
]


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    return exported.ensure_package(DEFAULT_MODEL, tmp_path_factory.mktemp("models"))


def _package(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "worker.models", "package", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _args(network: Path, labels: Path, out: Path) -> list[str]:
    return [
        str(network),
        f"--labels={labels}",
        "--name=lite0-mine",
        "--version=3",
        f"--out={out}",
        "--mean=0.5,0.5,0.5",
        "--std=0.5,0.5,0.5",
    ]


def test_a_network_and_its_labels_make_a_package_that_classifies(export, tmp_path):
    out = tmp_path / "pkg"
    done = _package(*_args(export.artefact, export.root / "labels.txt", out))
    assert done.returncode == 0, done.stderr
    assert "lite0-mine 3" in done.stdout and "1000 classes" in done.stdout
    package = load_package(out)
    assert package.manifest.sha256 == export.manifest.sha256
    assert package.manifest.preprocessing == export.manifest.preprocessing


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda e, t: (e.artefact, t / "absent.txt"), "labels file"),
        (lambda e, t: (e.artefact, _write(t / "few.txt", "cat\ndog\n")), "gives 1000 outputs"),
        (
            lambda e, t: (_write(t / "x.onnx", "not a model"), e.root / "labels.txt"),
            "is not a model",
        ),
        (lambda e, t: (_write(t / "net.pt", "torchscript"), e.root / "labels.txt"), "only ONNX"),
        (lambda e, t: (t / "absent.onnx", e.root / "labels.txt"), "does not exist"),
    ],
)
def test_a_bad_package_gets_one_line_and_a_non_zero_exit(export, tmp_path, make, message):
    network, labels = make(export, tmp_path)
    done = _package(*_args(network, labels, tmp_path / "pkg"))
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("worker.models: ") and message in line
    assert not (tmp_path / "pkg").exists()


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
