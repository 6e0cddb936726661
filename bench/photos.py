"""Distinct test images cut from the real photos in images/.

The service caches results by content hash, so every upload that is meant to reach the model
must carry bytes never sent before in the run: each image here is a different crop, and the
generator refuses to hand out the same bytes twice.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

IMAGES = Path(__file__).resolve().parent.parent / "images"
SMALL_SIDE = 64


@dataclass(frozen=True)
class Photo:
    filename: str
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


class Photos:
    """Hands out distinct JPEGs: near full-size photos, or 64x64 thumbnails."""

    def __init__(self, directory: Path = IMAGES):
        names = sorted(json.loads((directory / "labels.json").read_text()))
        self._sources = [(Path(n).stem, Image.open(directory / n).convert("RGB")) for n in names]
        self._count = 0
        self._seen: set[str] = set()

    def full(self, count: int) -> list[Photo]:
        """Photos at their own size (300 to 1280 px wide) less a few pixels of crop."""
        return [self._next(self._full_crop) for _ in range(count)]

    def mixed(self, count: int) -> list[Photo]:
        """Alternating 64x64 and full-size photos."""
        return [self._next(self._small_crop if i % 2 else self._full_crop) for i in range(count)]

    def _next(self, cut) -> Photo:
        while True:
            index = self._count
            self._count += 1
            stem, source = self._sources[index % len(self._sources)]
            image = cut(source, index // len(self._sources))
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=90)
            photo = Photo(f"{stem}_{index}.jpg", buffer.getvalue())
            if photo.sha256 not in self._seen:
                self._seen.add(photo.sha256)
                return photo

    @staticmethod
    def _full_crop(image: Image.Image, k: int) -> Image.Image:
        # Up to 16 x 16 x 4 different boxes per photo, each at most 48 px smaller than the original.
        width, height = image.size
        left, top, cut = 3 * (k % 16), 3 * (k // 16 % 16), 3 * (k // 256 % 4)
        return image.crop((left, top, width - cut, height - cut))

    @staticmethod
    def _small_crop(image: Image.Image, k: int) -> Image.Image:
        width, height = image.size
        side = int(min(width, height) * (0.5 + 0.05 * (k % 10)))
        left, top = 4 * (k // 10 % 16), 4 * (k // 160 % 16)
        return image.crop((left, top, left + side, top + side)).resize((SMALL_SIDE, SMALL_SIDE))
