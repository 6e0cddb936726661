"""PyTorch -> model package: torch.onnx.export of a built-in model, checked before it is cached.

The dynamo exporter (torch.export, then onnxscript) is torch's supported path; the TorchScript
one is deprecated. The batch dimension stays dynamic, so one artefact serves every pass size.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

from worker import torch_models
from worker.exported import REFERENCE, Refused, sample_inputs, verify
from worker.package import ARTEFACT, ModelPackage, load_package, write_package
from worker.served import ONNX_RUNTIMES, available, open_session


def export_package(name: str, root: Path, source: dict) -> ModelPackage:
    """Export `name` into the package directory `root` (absent; written whole or not at all);
    raise Refused with one line when the export fails or does not answer as PyTorch does."""
    model, _, categories, pre = torch_models.build(name)
    if pre is None or pre.crop is None:
        raise Refused("its preprocessing is not a resize, a centre crop and a normalisation")
    root.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}-"))
    try:
        _export_onnx(model, work / ARTEFACT, pre.crop)
        (work / REFERENCE).write_text(json.dumps(reference_answers(model, pre), indent=1))
        package = write_package(
            work,
            work / ARTEFACT,
            categories,
            name=name,
            version=root.name.rsplit("-", 1)[-1],
            preprocessing=pre,
            source=source,
        )
        checker = next((r for r in ONNX_RUNTIMES[::-1] if available(r)), None)
        if checker is not None:  # each runtime is checked again before its first use
            _, problem = verify(open_session(checker, package.artefact, 1), package)
            if problem:
                raise Refused(f"the export does not answer as PyTorch fp32 ({checker}): {problem}")
        try:
            work.rename(root)
        except OSError:
            # Another worker started at the same time got there first: keep its package.
            return load_package(root)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return ModelPackage(root=root, manifest=package.manifest, labels=package.labels)


def reference_answers(model, pre) -> dict[str, list[list]]:
    """PyTorch fp32's top-5 `[[class, probability], ...]` per sample photo (REFERENCE)."""
    inputs = sample_inputs(pre)
    with torch.inference_mode():
        probs = model(torch.from_numpy(np.stack(list(inputs.values())))).float().softmax(1)
    top = probs.topk(min(5, probs.shape[1]), dim=1)
    return {
        photo: [[int(c), float(p)] for c, p in zip(top.indices[row], top.values[row], strict=True)]
        for row, photo in enumerate(inputs)
    }


# A user's network as training leaves it (worker.packaging): the file suffixes of each format.
TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".ts", ".torchscript", ".jit")
PROGRAM_SUFFIXES = (".pt2",)


def load_network(path: Path):
    """A TorchScript file or a saved torch.export program, ready to run; Refused (one line) for
    a file that is neither."""
    kind = "torch.export program" if path.suffix in PROGRAM_SUFFIXES else "TorchScript file"
    if not zipfile.is_zipfile(path):  # both are zip archives; torch logs a traceback otherwise
        raise Refused(f"{path.name} is not a model: not a {kind} (not a zip archive)")
    try:
        if path.suffix in PROGRAM_SUFFIXES:
            return torch.export.load(str(path))
        return torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds for a file it cannot read
        first = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise Refused(
            f"{path.name} is not a model: not a {kind} torch can load ({first})"
        ) from None


def network_to_onnx(network, path: Path, side: int) -> None:
    """`network` (from load_network) as ONNX with a dynamic batch; Refused when it cannot be.

    Why two exporters: torch.export (dynamo) cannot trace a TorchScript module, which only the
    TorchScript exporter reads; a torch.export program is what the dynamo exporter takes."""
    if isinstance(network, torch.export.ExportedProgram):
        _export_onnx(network, path, side, dynamic=False)  # its saved shapes say what is dynamic
        return
    example = torch.zeros(2, 3, side, side)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                network,
                (example,),
                str(path),
                input_names=["input"],
                output_names=["logits"],
                dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                dynamo=False,
            )
    except Exception as exc:  # noqa: BLE001 - the exporter raises many kinds
        first = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise Refused(f"torch.onnx.export failed: {first}") from None


def program_answers(network, pre) -> dict[str, list[list]]:
    """reference_answers for a network from load_network (a program runs as its module)."""
    if isinstance(network, torch.export.ExportedProgram):
        network = network.module()
    return reference_answers(network, pre)


def _export_onnx(model, path: Path, side: int, *, dynamic: bool = True) -> None:
    # A batch of 2: the exporter specialises a dimension whose example size is 1.
    example = torch.zeros(2, 3, side, side)
    batch = torch.export.Dim("batch", min=1, max=1024)
    for name in ("onnxscript", "onnx_ir"):  # a line per rewrite rule at INFO: not ours to show
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        # The exporter reports its progress on stdout and warns about its own internals.
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (example,),
                str(path),
                input_names=["input"],
                output_names=["logits"],
                dynamic_shapes=({0: batch},) if dynamic else None,
                dynamo=True,
                external_data=False,
            )
    except Exception as exc:  # noqa: BLE001 - the exporter raises many kinds
        first = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise Refused(f"torch.onnx.export failed: {first}") from None
