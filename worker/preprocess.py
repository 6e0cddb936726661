"""A package's preprocessing in Pillow and numpy: what torchvision's Resize, CenterCrop, ToDtype
and Normalize do, without torch, so a worker on onnxruntime or OpenVINO never imports it.

The sizes follow torchvision exactly (short side to `resize_side`, the long side floored; the
crop's offsets rounded). The resample is Pillow's, which antialiases as torchvision's
`antialias=True` does but with a slightly different bicubic kernel: the pixels differ by a few
levels, the labels do not (tests/test_runtimes.py compares both on every sample and phone photo).
Only the centre crop is resampled (worker.resample): within one level of resizing the whole image
then cropping it, the same top-1 (tests/test_preprocess_values.py).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from worker.package import Preprocessing
from worker.resample import crop_offsets, resized_crop

# Which arrays ArrayTransform makes: bump it whenever they change, even by one level in a pixel.
# A built-in model's export computes PyTorch's reference answers on these arrays, and each
# runtime is checked against those answers on the same arrays (worker.exported), so the version
# is part of what an export depends on: a changed preprocess makes a new package, never a check
# of new arrays against answers on old ones. 2: the resize computes only the centre crop.
PREPROCESS_VERSION = 2
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
                if pre.crop is not None and pre.crop <= min(size):
                    image = resized_crop(image, size, pre.crop, _RESAMPLE[pre.interpolation])
                else:
                    image = image.resize(size, _RESAMPLE[pre.interpolation])
        if pre.crop is not None and image.size != (pre.crop, pre.crop):
            image = _centre_crop(image, pre.crop)
        return self._normalised(np.asarray(image))

    def _normalised(self, pixels: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (3, H, W) float32, (x / 255 - mean) / std.

        Read channels-first straight from the uint8 pixels into one float32 array (each uint8
        is exact in float32, so the product is that of a float copy), then shifted in place:
        the values of (x - mean) / std on a float copy, bit for bit, with no copy in between
        (docs/performance.md)."""
        out = np.empty((3, *pixels.shape[:2]), dtype=np.float32)
        np.multiply(pixels.transpose(2, 0, 1), self._scale, out=out)
        out -= self._offset
        return out


def _centre_crop(image: Image.Image, crop: int) -> Image.Image:
    left, top = crop_offsets(*image.size, crop)
    if top < 0 or left < 0:
        # Smaller than the crop (no resize before it): torchvision pads with zeros.
        image = _pad(image, crop)
        left, top = crop_offsets(*image.size, crop)
    return image.crop((left, top, left + crop, top + crop))


def _pad(image: Image.Image, crop: int) -> Image.Image:
    width, height = image.size
    canvas = Image.new("RGB", (max(width, crop), max(height, crop)))
    canvas.paste(image, ((canvas.width - width) // 2, (canvas.height - height) // 2))
    return canvas
