"""Turn uploaded bytes into an RGB image, or one typed error that says why not.

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

_TORCHVISION_FORMATS = frozenset({"jpeg", "png"})
# What decode() returns: "tensor", a (3, H, W) uint8 torch tensor (PyTorch's transforms take it),
# or "pil", an RGB PIL image (worker.preprocess takes it; torch is never imported for it).
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
