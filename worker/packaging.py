"""Make and check a model package from a user's network and class names (issue 22, item 1).

`python -m worker.models package NET.onnx --labels labels.txt --name N --version V --out DIR`
loads the network with an ONNX runtime, runs it on the sample photos with the given
preprocessing, checks that it gives one output per label, and writes the package with the
artefact's SHA-256. ONNX is the accepted format: it is what every runtime here loads, and
PyTorch writes it (`torch.onnx.export`); a TorchScript file or torch.export program is exported
to ONNX first. Every refusal is one line (PackageError).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from worker.package import ModelPackage, PackageError, Preprocessing, write_package
from worker.runtimes import ONNX_RUNTIMES, available, open_session

SAMPLES = Path(__file__).resolve().parent.parent / "images"


def make_package(
    network: Path,
    labels_file: Path,
    out: Path,
    *,
    name: str,
    version: str,
    preprocessing: Preprocessing,
) -> ModelPackage:
    network, labels_file, out = Path(network), Path(labels_file), Path(out)
    preprocessing.check()
    if not labels_file.is_file():
        raise PackageError(f"labels file {labels_file} does not exist")
    labels = [line.strip() for line in labels_file.read_text(encoding="utf-8").splitlines()]
    labels = [label for label in labels if label]
    if not labels:
        raise PackageError(f"labels file {labels_file} names no class")
    if not network.is_file():
        raise PackageError(f"network {network} does not exist")
    if network.suffix != ".onnx":
        raise PackageError(
            f"{network.name}: only ONNX (.onnx) is accepted; export TorchScript or torch.export"
            " programs with torch.onnx.export first"
        )
    if preprocessing.crop is None:
        raise PackageError("preprocessing needs a crop: the network takes one input size")
    runtime = next((r for r in ONNX_RUNTIMES[::-1] if available(r)), None)
    if runtime is None:
        raise PackageError("no ONNX runtime is installed to check the network with")
    try:
        session = open_session(runtime, network, 1)
    except RuntimeError as error:
        raise PackageError(f"{network.name} is not a model {runtime} can load: {error}") from None
    outputs = _run_on_samples(session, preprocessing, network)
    if outputs.ndim != 2 or outputs.shape[1] != len(labels):
        width = outputs.shape[1] if outputs.ndim == 2 else f"shape {tuple(outputs.shape)}"
        raise PackageError(
            f"{network.name} gives {width} outputs per image but {labels_file.name} names"
            f" {len(labels)} classes"
        )
    if not np.isfinite(outputs).all():
        raise PackageError(f"{network.name} gives non-finite outputs on the sample photos")
    return write_package(
        out,
        network,
        labels,
        name=name,
        version=version,
        preprocessing=preprocessing,
        source={"made_from": network.name},
    )


def _run_on_samples(session, preprocessing: Preprocessing, network: Path) -> np.ndarray:
    from worker.imaging import decode
    from worker.preprocess import ArrayTransform

    transform = ArrayTransform(preprocessing)
    paths = sorted(SAMPLES.glob("*.jpg"))
    if not paths:
        raise PackageError(f"no sample photos in {SAMPLES} to check the network on")
    batch = np.stack(
        [
            transform(decode(p.read_bytes(), min_side=preprocessing.resize_side, output="pil"))
            for p in paths
        ]
    )
    try:
        return np.asarray(session.run(batch))
    except Exception as error:  # noqa: BLE001 - each runtime raises its own kinds
        first = " ".join(str(error).split())[:300] or type(error).__name__
        raise PackageError(
            f"{network.name} does not run on a batch of (3, {preprocessing.crop},"
            f" {preprocessing.crop}) images: {first}"
        ) from None
