"""Make and check a model package from a user's network and class names (issue 22, item 1).

`python -m worker.models package --network NET --labels labels.txt --name N --version V --out DIR`
loads the network, runs it on the sample photos with the given preprocessing, checks that it
gives one finite output per label, and writes the package (worker.package) with the artefact's
SHA-256 and the answers the worker's runtimes are checked against at their first start.

Accepted networks: ONNX (`.onnx`, taken as it is), TorchScript (`.pt`, `.pth`, `.ts`,
`.torchscript`, `.jit`: what `torch.jit.script`/`trace` save) and torch.export programs (`.pt2`:
what `torch.export.save` writes). Both PyTorch forms are exported to ONNX here, because ONNX is
the one artefact every runtime of the worker loads; their own answers on the sample photos are
the reference the export must match. A pickled state dict is not accepted: it is weights without
the code that runs them. Every refusal is one line (PackageError).

`python -m worker.models check DIR` checks a package already made (or edited by hand).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from worker.exported import REFERENCE, Refused, sample_inputs, verify
from worker.package import (
    ARTEFACT,
    LABELS,
    ModelPackage,
    PackageError,
    Preprocessing,
    load_package,
    write_package,
)
from worker.served import ONNX_RUNTIMES, Session, available, open_session, softmax

ONNX_SUFFIXES = (".onnx",)
# Each accepted format by what its file is called (kept beside the exporter: worker.export).
FORMAT_HELP = "ONNX (.onnx), TorchScript (.pt .pth .ts .torchscript .jit), torch.export (.pt2)"


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
    labels = read_labels(labels_file)
    if not network.is_file():
        raise PackageError(f"network {network} does not exist")
    if preprocessing.crop is None:
        raise PackageError("preprocessing needs a crop: the network takes one input size")
    if out.exists() and any(out.iterdir()):
        raise PackageError(f"{out} exists and is not empty: a version is written once")
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
    try:
        artefact, reference = _as_onnx(network, work, preprocessing)
        session = _checker(artefact, network)
        outputs = _run_on_samples(session, preprocessing, network)
        _check_outputs(outputs, labels, network.name, labels_file.name)
        converted = reference is not None
        if not converted:  # an ONNX network is its own reference
            reference = _top5(outputs, list(sample_inputs(preprocessing)))
        (work / REFERENCE).write_text(json.dumps(reference, indent=1))
        package = write_package(
            work,
            artefact,
            labels,
            name=name,
            version=version,
            preprocessing=preprocessing,
            source={"made_from": network.name},
        )
        if converted:
            _, problem = verify(session, package)
            if problem:
                raise PackageError(f"the ONNX export of {network.name} differs: {problem}")
        if out.exists():
            out.rmdir()
        work.rename(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return load_package(out)


def check_package(root: Path) -> ModelPackage:
    """Read a package (its manifest, labels and hash) and run it on the sample photos."""
    package = load_package(root)
    session = _checker(package.artefact, package.artefact)
    outputs = _run_on_samples(session, package.manifest.preprocessing, package.artefact)
    _check_outputs(outputs, package.labels, package.artefact.name, LABELS)
    _, problem = verify(session, package)
    if problem:
        raise PackageError(f"{package.root}: {problem}")
    return package


def read_labels(labels_file: Path) -> list[str]:
    if not labels_file.is_file():
        raise PackageError(f"labels file {labels_file} does not exist")
    labels = [line.strip() for line in labels_file.read_text(encoding="utf-8").splitlines()]
    labels = [label for label in labels if label]
    if not labels:
        raise PackageError(f"labels file {labels_file} names no class")
    return labels


def _as_onnx(network: Path, work: Path, pre: Preprocessing) -> tuple[Path, dict | None]:
    """The network as an ONNX file, and (for a PyTorch network) its own answers on the samples."""
    if network.suffix in ONNX_SUFFIXES:
        return network, None
    from worker import export  # PyTorch: only for a PyTorch network

    if network.suffix not in export.TORCHSCRIPT_SUFFIXES + export.PROGRAM_SUFFIXES:
        raise PackageError(f"{network.name} is not a model file this accepts: {FORMAT_HELP}")
    try:
        loaded = export.load_network(network)
        reference = _torch_answers(export, loaded, pre, network)
        export.network_to_onnx(loaded, work / ARTEFACT, pre.crop)
    except Refused as refusal:
        raise PackageError(str(refusal)) from None
    return work / ARTEFACT, reference


def _torch_answers(export, loaded, pre: Preprocessing, network: Path) -> dict:
    try:
        return export.program_answers(loaded, pre)
    except Refused:
        raise
    except Exception as error:  # noqa: BLE001 - the user's network raises what it raises
        raise PackageError(_not_runnable(network, pre, error)) from None


def _checker(artefact: Path, network: Path) -> Session:
    runtime = next((r for r in ONNX_RUNTIMES[::-1] if available(r)), None)
    if runtime is None:
        raise PackageError("no ONNX runtime is installed to check the network with")
    try:
        return open_session(runtime, artefact, 1)
    except RuntimeError as error:
        raise PackageError(f"{network.name} is not a model {runtime} can load: {error}") from None


def _check_outputs(outputs: np.ndarray, labels, network: str, labels_name: str) -> None:
    if outputs.ndim != 2 or outputs.shape[1] != len(labels):
        width = outputs.shape[1] if outputs.ndim == 2 else f"shape {tuple(outputs.shape)}"
        raise PackageError(
            f"{network} gives {width} outputs per image but {labels_name} names"
            f" {len(labels)} classes"
        )
    if not np.isfinite(outputs).all():
        raise PackageError(f"{network} gives non-finite outputs on the sample photos")


def _top5(outputs: np.ndarray, photos: list[str]) -> dict:
    probs = softmax(outputs)
    top = np.argsort(-probs, axis=1, kind="stable")[:, :5]
    return {
        photo: [[int(c), float(probs[row, c])] for c in top[row]]
        for row, photo in enumerate(photos)
    }


def _run_on_samples(session: Session, pre: Preprocessing, network: Path) -> np.ndarray:
    try:
        batch = np.stack(list(sample_inputs(pre).values()))
    except Refused as refusal:
        raise PackageError(str(refusal)) from None
    try:
        return np.asarray(session.run(batch))
    except Exception as error:  # noqa: BLE001 - each runtime raises its own kinds
        raise PackageError(_not_runnable(network, pre, error)) from None


def _not_runnable(network: Path, pre: Preprocessing, error: BaseException) -> str:
    first = " ".join(str(error).split())[:300] or type(error).__name__
    return f"{network.name} does not run on a batch of (3, {pre.crop}, {pre.crop}) images: {first}"
