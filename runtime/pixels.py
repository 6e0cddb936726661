"""How much memory an image takes once decoded, read from its header alone.

The one rule the web tier (refuse the upload) and the worker (refuse the request, budget its
decodes) share. MAX_PIXELS counts 8-bit RGB pixels: an image may take at most MAX_PIXELS x 3
bytes decoded, so a 16-bit or 4-channel image gets proportionally fewer pixels. Counting pixels
alone let a 231 KB 16-bit PNG of 6300x6300 (under 40 M pixels) take 1.1 GB to decode.
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass

from PIL import Image, ImageMode

RGB_BYTES = 3  # what one MAX_PIXELS pixel may take decoded
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class Footprint:
    width: int
    height: int
    channels: int  # at least 3: every decoder here yields RGB, some via RGBA or CMYK
    sample_bytes: int  # 1 for 8-bit, 2 for 16-bit, 4 for 32-bit samples

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def decoded_bytes(self) -> int:
        return self.pixels * self.channels * self.sample_bytes

    def describe(self) -> str:
        return f"{self.width}x{self.height} at {self.channels * self.sample_bytes} bytes a pixel"


def limit_bytes(max_pixels: int) -> int:
    return max_pixels * RGB_BYTES


def footprint(data: bytes) -> Footprint:
    """The decoded size from the header; raises what Image.open raises for non-images
    (DecompressionBombError included: Pillow's own bomb check runs first)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(data)) as image:
            (width, height), mode = image.size, image.mode
    mode_info = ImageMode.getmode(mode)
    channels = max(3, len(mode_info.bands))
    sample_bytes = max(1, int(mode_info.typestr[-1]))
    png_depth = _png_bit_depth(data)
    if png_depth == 16:  # Pillow reports 16-bit RGB(A) PNGs as 8-bit modes; torchvision keeps 16
        sample_bytes = 2
    return Footprint(width, height, channels, sample_bytes)


def _png_bit_depth(data: bytes) -> int | None:
    # IHDR is the first chunk: 8 magic, 4 length, 4 type, 4 width, 4 height, 1 bit depth.
    if len(data) < 25 or not data.startswith(_PNG_MAGIC) or data[12:16] != b"IHDR":
        return None
    return struct.unpack_from(">B", data, 24)[0]
