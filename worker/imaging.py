"""Uploaded bytes to a model's input: decoded to an RGB image within the decode budget, or one
typed error that says why not (`decode`); then resized, cropped and normalised as the model's
package says, in Pillow and numpy (`ArrayTransform`, below).

An image here is a uint8 tensor of shape (3, H, W): what torchvision's transforms take and what
`transforms.ToTensor()` yields (divided by 255) for the same pixels; or, for a model that runs
without PyTorch (`output="pil"`), an RGB PIL image decoded by Pillow alone, and torch is never
imported. JPEG and PNG, nearly all of
the traffic, go through torchvision.io (libjpeg-turbo / libpng straight into a tensor, no PIL
image in between); the other formats Pillow reads go through Pillow. Both paths honour the EXIF
orientation, drop alpha and expand grey/palette images to RGB, so a photo gives the same pixels
whichever path decodes it.

A model that resizes its input (short side 256 for the default) needs no more pixels than that.
`decode(..., min_side=256)` lets libjpeg scale a JPEG down by 1/2, 1/4 or 1/8 while it decodes
(DCT-domain scaling, Pillow's `draft`), to the smallest scale whose short side is still at least
`min_side`; the model's own resize then does the one real resample. A 4000x3000 phone photo
decodes straight to 500x375, several times faster than in full (docs/performance.md). Other
formats, and JPEGs already too small to scale, decode in full.

Decodes run only while their estimated peak memory fits the worker's decode budget
(`DecodeBudget`). The intake fetches and decodes up to FETCH_CONCURRENCY images at once; ten of
the largest allowed images at once would take several GB. Each decode reserves its estimated peak
(decoded size x PEAK_FACTOR) and waits while the reservations in hand would exceed the budget; an
image larger than the whole budget decodes alone. An image over the decoded-size limit is refused
before any pixel is allocated, as the web tier refuses it.
"""

from __future__ import annotations

import functools
import io
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from runtime.budget import ByteBudget
from runtime.messages import IMAGE_FORMATS
from runtime.pixels import footprint, limit_bytes
from worker.package import Preprocessing

_TORCHVISION_FORMATS = frozenset({"jpeg", "png"})
# What decode() returns: "tensor", a (3, H, W) uint8 torch tensor (PyTorch's transforms take it),
# or "pil", an RGB PIL image (ArrayTransform below takes it; torch is never imported for it).
OUTPUTS = ("tensor", "pil")
# torchvision 0.29 marks its image codecs deprecated in favour of TorchCodec and warns on every
# call; they are still the fastest JPEG/PNG path here (see decode), so the notice is silenced.
warnings.filterwarnings(
    "ignore",
    message="The image decoding and encoding capabilities of TorchVision are deprecated",
    category=DeprecationWarning,
)
# Sizes of the BMP info headers (core, v1-v5, OS/2): two bytes of "BM" alone would also match
# plain text such as "BMW ...", so the header size has to be plausible too.
_BMP_HEADER_SIZES = frozenset({12, 16, 40, 52, 56, 64, 108, 124})


class ImageError(ValueError):
    """Bytes that are not a complete image in one of IMAGE_FORMATS."""


def sniff(data: bytes) -> str | None:
    """The format named by the leading magic bytes, or None for anything not allowed."""
    head = bytes(data[:32])
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head[:2] == b"BM" and len(head) >= 18:
        if int.from_bytes(head[14:18], "little") in _BMP_HEADER_SIZES:
            return "bmp"
    return None


def decode(
    data: bytes,
    *,
    max_pixels: int | None = None,
    min_side: int | None = None,
    output: str = "tensor",
):
    """Decode `data` to a (3, H, W) uint8 RGB tensor (output="tensor") or an RGB PIL image
    (output="pil"); raise ImageError with a one-line reason.

    With `min_side`, a JPEG may come back scaled down (never below `min_side` on its short side,
    never changing the aspect ratio by more than rounding); None decodes every pixel.
    """
    fmt = sniff(data)
    if fmt is None:
        raise ImageError(
            "not an image: the bytes match none of " + ", ".join(sorted(IMAGE_FORMATS))
        )
    if max_pixels is not None:
        _check_pixels(data, fmt, max_pixels)
    if fmt == "jpeg" and (min_side or output == "pil"):
        scaled = _decode_jpeg(data, min_side, full_size=output == "pil")
        if scaled is not None:
            return scaled if output == "pil" else _to_tensor(scaled)
    if output == "pil":
        return _decode_pillow(data, fmt)
    if fmt in _TORCHVISION_FORMATS:
        return _decode_torchvision(data, fmt)
    return _to_tensor(_decode_pillow(data, fmt)).contiguous()


def _to_tensor(rgb: Image.Image):
    import torch

    # A (3, H, W) view of the (H, W, 3) pixels: the model's resize reads it as fast as a copied
    # (3, H, W) tensor, so the copy is saved.
    return torch.from_numpy(np.array(rgb)).permute(2, 0, 1)


def _decode_jpeg(data: bytes, min_side: int | None, *, full_size: bool) -> Image.Image | None:
    """The JPEG decoded by libjpeg at the smallest 1/2, 1/4 or 1/8 scale whose short side is at
    least `min_side` (None: every pixel), EXIF orientation applied.

    Where no scale fits, `full_size` decodes every pixel from the same open image, as
    _decode_pillow would but without opening the file again or copying the pixels twice
    (exif_transpose's copy, convert's copy): the same pixels, about 0.3 ms less for a 640 x 427
    photo (docs/performance.md). Without it, None: torchvision then decodes it in full, faster
    than Pillow at full size."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            if min_side:
                # draft() picks the largest reduction that keeps both sides >= the size asked
                # for; asking for a square of min_side keeps the short side >= min_side. The
                # EXIF rotation comes after and only swaps the sides.
                full = img.size
                img.draft("RGB", (min_side, min_side))
                if img.size == full and not full_size:
                    return None
            img.load()
            ImageOps.exif_transpose(img, in_place=True)
            return img if img.mode == "RGB" else img.convert("RGB")
    except Image.DecompressionBombError as exc:
        raise ImageError(f"jpeg is too large to decode: {_reason(exc)}") from None
    except (OSError, ValueError, SyntaxError, UnidentifiedImageError) as exc:
        raise ImageError(f"jpeg is truncated or corrupt: {_reason(exc)}") from None


def _check_pixels(data: bytes, fmt: str, max_pixels: int) -> None:
    # Pillow reads only the header here, so a decompression bomb is refused before any pixel
    # buffer is allocated by either decoder.
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{fmt} has too many pixels: {_reason(exc)}") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"{fmt} header is unreadable: {_reason(exc)}") from None
    if width * height > max_pixels:
        raise ImageError(f"{width}x{height} pixels is more than the {max_pixels} allowed")


def _decode_torchvision(data: bytes, fmt: str):
    import torch
    from torchvision.io import ImageReadMode, decode_image

    try:
        image = decode_image(
            torch.frombuffer(bytearray(data), dtype=torch.uint8),
            mode=ImageReadMode.RGB,
            apply_exif_orientation=True,
        )
    except RuntimeError as exc:
        raise ImageError(f"{fmt} is truncated or corrupt: {_reason(exc)}") from None
    if image.dtype == torch.uint16:
        # 16-bit PNGs keep their depth; the models want 8 bits like every other input. The
        # high byte of each sample, read in place: widening to int32 to shift (no uint16
        # shift on CPU) cost 30 bytes a pixel at peak, this costs 9.
        high = 1 if sys.byteorder == "little" else 0
        pixels = image.permute(1, 2, 0)  # the decoder's own (H, W, 3) layout: no copy
        image = pixels.view(torch.uint8)[..., high::2].contiguous().permute(2, 0, 1)
    return image


def _decode_pillow(data: bytes, fmt: str) -> Image.Image:
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                # 16-bit grey: the high byte of each sample, as the tensor path keeps it
                # (Pillow's own conversion to RGB clips at 255 instead).
                img = Image.fromarray((np.asarray(img).astype(np.uint32) >> 8).astype(np.uint8))
            rgb = img.convert("RGB")
    except (OSError, ValueError, SyntaxError, UnidentifiedImageError) as exc:
        # Pillow reports truncation as OSError, bad headers as SyntaxError or ValueError.
        raise ImageError(f"{fmt} is truncated or corrupt: {_reason(exc)}") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{fmt} is too large to decode: {_reason(exc)}") from None
    return rgb


def _reason(exc: BaseException) -> str:
    # torchvision prefixes its messages with a C++ source location: keep only the last clause,
    # and always one line, since the reason travels in a result message.
    text = " ".join(str(exc).split()) or type(exc).__name__
    if ".cpp:" in text:
        text = text.rsplit(".cpp:", 1)[1].split(",", 1)[-1].strip()
    return text[:200]


# Peak resident bytes over decoded bytes, measured per decode path on 6300x6300 images
# (docs/reliability.md): JPEG and 8-bit PNG 1x, 16-bit PNG 1.5x, the Pillow formats (TIFF,
# WebP, GIF, BMP) up to 5x. One factor, the largest, keeps the rule simple and safe.
PEAK_FACTOR = 5


class DecodeBudget:
    def __init__(self, budget_bytes: int, max_pixels: int):
        self.budget_bytes = budget_bytes
        self._limit_bytes = limit_bytes(max_pixels)
        self._bytes = ByteBudget(budget_bytes)

    @property
    def peak_reserved(self) -> int:
        """The most ever reserved at once: tests and logs read it."""
        return self._bytes.peak

    def cost(self, data: bytes) -> int:
        """Estimated peak bytes of decoding `data`; ImageError if it is over the limit."""
        try:
            size = footprint(data)
        except Image.DecompressionBombError as error:
            raise ImageError(f"too many pixels: {error}") from None
        except Exception:  # noqa: BLE001 - not an image header: the decoder says why, cheaply
            return 0
        if size.decoded_bytes > self._limit_bytes:
            raise ImageError(
                f"{size.describe()} needs {size.decoded_bytes // 2**20} MiB decoded, more than "
                f"the {self._limit_bytes // 2**20} MiB allowed (MAX_PIXELS x 3 bytes)"
            )
        return size.decoded_bytes * PEAK_FACTOR

    @contextmanager
    def reserve(self, data: bytes) -> Iterator[None]:
        with self._bytes.reserved(self.cost(data)):
            yield


# ---- Preprocessing -------------------------------------------------------------------------------
# A package's preprocessing in Pillow and numpy: what torchvision's Resize, CenterCrop, ToDtype
# and Normalize do, without torch, so a worker on onnxruntime or OpenVINO never imports it.
#
# The sizes follow torchvision exactly (short side to `resize_side`, the long side floored; the
# crop's offsets rounded). The resample is Pillow's, which antialiases as torchvision's
# `antialias=True` does but with a slightly different bicubic kernel: the pixels differ by a few
# levels, the labels do not (tests/test_runtimes.py compares both on every sample and phone photo).
# Only the centre crop is resampled (below): within one level of resizing the whole image
# then cropping it, the same top-1 (tests/test_preprocess_values.py).

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


# ---- Resampling only the centre crop -------------------------------------------------------------
# The centre crop of a resized image, resampling only the crop's pixels (issue 23).
#
# Resizing a 4:3 photo's short side to 256 and keeping the centre 224 x 224 throws away more than a
# third of the pixels the resize computed (224 x 224 of 341 x 256). Pillow's `resize(box=...)`
# computes only a region: the crop's box in source coordinates, resized to the crop's size, uses
# the same kernels over the same source pixels as the whole resize did (a kernel still reaches
# outside the box, as far as the image goes), at about half the CPU.
#
# Two things keep it apart from the whole resize, and what is done about each:
#
# - Pillow takes the box as single-precision floats and places the kernel centres from it, so a
#   few coefficients round the other way: up to 1 level in 255, in at most 0.04 % of the values on
#   the sample and phone photos (tests/test_preprocess_values.py). Accepted: issue 23's rule is the
#   same top-1 and top-5 scores within a few points, which it meets on every sample and phone photo.
# - Pillow resamples in two passes, horizontal and vertical, each rounded to 8 bits, and since
#   Pillow 13 it runs the vertical one first when the height loses more than twice the pixels the
#   width loses (`Resample.c`). That compares the whole image with the output size, so a tall
#   image's crop and the whole image can get different orders, and the order moves pixels by up
#   to 23 levels on noise. Where they would differ, the crop is resampled in two one-axis passes
#   in the whole image's order.


def crop_offsets(width: int, height: int, crop: int) -> tuple[int, int]:
    """(left, top) of the centre crop, rounded as torchvision's CenterCrop rounds them."""
    return int(round((width - crop) / 2.0)), int(round((height - crop) / 2.0))


def resized_crop(
    image: Image.Image, size: tuple[int, int], crop: int, resample: Image.Resampling
) -> Image.Image:
    """What `image.resize(size, resample)` then its centre `crop` x `crop` would give (within a
    level), resampling only the crop; `size` must be at least `crop` on both sides."""
    width, height = size
    left, top = crop_offsets(width, height, crop)
    scale_x, scale_y = image.width / width, image.height / height
    x0, x1 = left * scale_x, (left + crop) * scale_x
    y0, y1 = top * scale_y, (top + crop) * scale_y
    whole_first = vertical_first(image.size, size)
    if whole_first == vertical_first(image.size, (crop, crop)):
        return image.resize((crop, crop), resample, box=(x0, y0, x1, y1))
    if whole_first:
        rows = image.resize((image.width, crop), resample, box=(0, y0, image.width, y1))
        return rows.resize((crop, crop), resample, box=(x0, 0, x1, crop))
    columns = image.resize((crop, image.height), resample, box=(x0, 0, x1, image.height))
    return columns.resize((crop, crop), resample, box=(0, y0, crop, y1))


def vertical_first(source: tuple[int, int], out: tuple[int, int]) -> bool:
    """Whether Pillow's resize of a `source` image to `out` runs its vertical pass first."""
    (width, height), (out_width, out_height) = source, out
    lost_height = height - out_height
    return _orders_passes() and lost_height > 0 and lost_height > 2 * (width - out_width)


@functools.cache
def _orders_passes() -> bool:
    """Whether this Pillow runs the vertical pass first where the height loses the most (13
    does, earlier ones never do): one tiny resize where the rule says vertical first, against
    each order done by hand."""
    source = Image.fromarray(np.random.default_rng(13).integers(0, 256, (60, 6), dtype=np.uint8))
    resample = Image.Resampling.BICUBIC
    whole = np.asarray(source.resize((4, 12), resample))
    by_rows = np.asarray(source.resize((6, 12), resample).resize((4, 12), resample))
    by_columns = np.asarray(source.resize((4, 60), resample).resize((4, 12), resample))
    if np.array_equal(by_rows, by_columns):
        raise RuntimeError("the pass-order probe cannot tell the orders apart")
    return bool(np.array_equal(whole, by_rows))
