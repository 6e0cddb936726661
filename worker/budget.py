"""Decodes run only while their estimated peak memory fits the worker's decode budget.

The intake fetches and decodes up to FETCH_CONCURRENCY images at once; ten of the largest
allowed images at once would take several GB. Each decode reserves its estimated peak (decoded
size x PEAK_FACTOR) and waits while the reservations in hand would exceed the budget; an image
larger than the whole budget decodes alone. An image over the decoded-size limit is refused
before any pixel is allocated, as the web tier refuses it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from PIL import Image

from runtime.budget import ByteBudget
from runtime.pixels import footprint, limit_bytes
from worker.imaging import ImageError

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
