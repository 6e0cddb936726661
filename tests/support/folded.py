"""A real custom model made from what is on this machine (issue 22 item 5): the default network
with its 1,000-way ImageNet head folded into cat / dog / other, saved in each accepted format.

The fold adds up each group's probabilities: its output for a group is the logsumexp of the
group's ImageNet logits, so softmax over the three outputs is exactly the summed ImageNet
probabilities of each group. (Adding the raw logits would let the 877 "other" classes outvote
any photo: a logit sum is not a probability.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

LABELS = ("cat", "dog", "other")
CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
DOGS = range(151, 269)  # Chihuahua ... Mexican hairless
SIDE = 224


class Folded(torch.nn.Module):
    def __init__(self, network: torch.nn.Module):
        super().__init__()
        self.network = network
        others = [c for c in range(1000) if c not in CATS and c not in DOGS]
        self.register_buffer("cats", torch.tensor(list(CATS)))
        self.register_buffer("dogs", torch.tensor(list(DOGS)))
        self.register_buffer("others", torch.tensor(others))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.network(x)
        groups = (self.cats, self.dogs, self.others)
        return torch.stack([torch.logsumexp(logits.index_select(1, g), 1) for g in groups], 1)


def folded_default() -> torch.nn.Module:
    from worker import torch_models
    from worker.models import DEFAULT_MODEL

    network, *_ = torch_models.build(DEFAULT_MODEL)
    return Folded(network).eval()


def save_torchscript(model: torch.nn.Module, path: Path) -> Path:
    with torch.inference_mode():
        torch.jit.trace(model, torch.zeros(2, 3, SIDE, SIDE)).save(str(path))
    return path


def save_program(model: torch.nn.Module, path: Path) -> Path:
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(
        model, (torch.zeros(2, 3, SIDE, SIDE),), dynamic_shapes=({0: batch},)
    )
    torch.export.save(program, str(path))
    return path


def save_onnx(model: torch.nn.Module, path: Path) -> Path:
    from worker.export import _export_onnx

    _export_onnx(model, path, SIDE)
    return path


def write_labels(path: Path) -> Path:
    path.write_text("".join(f"{label}\n" for label in LABELS))
    return path


def package(network: Path, labels: Path, out: Path, version: str) -> Path:
    """`python -m worker.models package` as a user runs it: catdog VERSION into `out`."""
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-m", "worker.models", "package", f"--network={network}"]
        + [f"--labels={labels}", "--name=catdog", f"--version={version}"]
        + [f"--out={out}", "--mean=0.5,0.5,0.5", "--std=0.5,0.5,0.5"],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return out
