"""A package's preprocessing in Pillow and numpy: what torchvision's Resize, CenterCrop, ToDtype
and Normalize do, without torch, so a worker on onnxruntime or OpenVINO never imports it.

The sizes follow torchvision exactly (short side to `resize_side`, the long side floored; the
crop's offsets rounded). The resample is Pillow's, which antialiases as torchvision's
`antialias=True` does but with a slightly different bicubic kernel: the pixels differ by a few
levels, the labels do not (tests/test_preprocess.py compares both on every sample and phone photo).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from worker.package import Preprocessing

_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}


def resized_size(width: int, height: int, side: int) -> tuple[int, int]:
    """(width, height) with the short side `side` and the long side floored, as torchvision."""
    if width <= height:
        return side, int(side * height / width)
    return int(side * width / height), side


class ArrayTransform:
    """An RGB PIL image (or an (H, W, 3) uint8 array) -> the (3, h, w) float32 array."""

    def __init__(self, pre: Preprocessing):
        self.pre = pre
        std = np.asarray(pre.std, dtype=np.float32)
        # (x / 255 - mean) / std as one multiply and one subtract per pixel.
        self._scale = (1.0 / (255.0 * std)).reshape(3, 1, 1)
        self._offset = (np.asarray(pre.mean, dtype=np.float32) / std).reshape(3, 1, 1)

    def __call__(self, image: Image.Image | np.ndarray) -> np.ndarray:
        if isinstance(image, np.ndarray):
            image = Image.fromarray(image)
        if image.mode != "RGB":
            image = image.convert("RGB")
        pre = self.pre
        if pre.resize_side is not None:
            size = resized_size(*image.size, pre.resize_side)
            if size != image.size:
                image = image.resize(size, _RESAMPLE[pre.interpolation])
        if pre.crop is not None:
            width, height = image.size
            top = int(round((height - pre.crop) / 2.0))
            left = int(round((width - pre.crop) / 2.0))
            if top < 0 or left < 0:
                # Smaller than the crop (no resize before it): torchvision pads with zeros.
                image = _pad(image, pre.crop)
                width, height = image.size
                top = int(round((height - pre.crop) / 2.0))
                left = int(round((width - pre.crop) / 2.0))
            image = image.crop((left, top, left + pre.crop, top + pre.crop))
        # Channels first while still uint8 (a quarter of the bytes to move), then one float32
        # array scaled and shifted in place: the same values as (x - mean) / std computed on a
        # float copy, at about 0.35 instead of 0.85 CPU ms per image (docs/performance.md).
        pixels = np.ascontiguousarray(np.asarray(image).transpose(2, 0, 1)).astype(np.float32)
        pixels *= self._scale
        pixels -= self._offset
        return pixels


def _pad(image: Image.Image, crop: int) -> Image.Image:
    width, height = image.size
    canvas = Image.new("RGB", (max(width, crop), max(height, crop)))
    canvas.paste(image, ((canvas.width - width) // 2, (canvas.height - height) // 2))
    return canvas
