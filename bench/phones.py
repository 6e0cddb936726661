"""Phone-size photos: 12 MP JPEGs made from the real photos in images/, cached on disk.

No photo of 12 MP or more ships with the project (100 MB of test photos do not belong in git),
so each one is made: a sample photo scaled up (bicubic) to 4032x3024, the size of a 12 MP phone
camera, plus sensor-like noise (Gaussian, a little stronger in the chroma than in the luma, as
a phone's small pixels give) so that it compresses like a photo and not like a smooth upscale,
saved as JPEG q92 with 4:2:0 chroma, as phones do. About 3-4 MB each. Every third photo is
stored landscape with EXIF orientation 6, as a phone held upright stores it.

The set is made once into a cache directory (about 2 s a photo) and reused; each upload gets
its own bytes (a JPEG comment with a counter, which no decoder reads) so that the service's
result cache, keyed by content, never answers one of them without the model.
"""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import numpy as np
from PIL import Image

from bench.photos import IMAGES, Photo

SIZE = (4032, 3024)
QUALITY = 92
# Noise standard deviation in 8-bit levels: luma, then the two chroma channels.
NOISE = (3.0, 4.5)
VERSION = 1  # part of every cached name: a change of recipe makes new files
DEFAULT_CACHE = Path(__file__).resolve().parent.parent / ".run" / "bench-phones"


def make_phone_photo(source: Image.Image, seed: int, rotated: bool) -> bytes:
    """`source` scaled up and cropped to 4032x3024 (12.2 MP), with sensor-like noise, as JPEG."""
    width, height = SIZE
    scale = max(width / source.width, height / source.height)
    big = source.convert("RGB").resize(
        (round(source.width * scale), round(source.height * scale)), Image.Resampling.BICUBIC
    )
    left, top = (big.width - width) // 2, (big.height - height) // 2
    ycbcr = np.asarray(big.crop((left, top, left + width, top + height)).convert("YCbCr"))
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(ycbcr.shape, dtype=np.float32)
    noise *= np.array([NOISE[0], NOISE[1], NOISE[1]], dtype=np.float32)
    noisy = np.clip(ycbcr + noise, 0, 255).astype(np.uint8)
    image = Image.fromarray(noisy, "YCbCr").convert("RGB")
    options = {"quality": QUALITY, "subsampling": "4:2:0"}
    if rotated:
        # Stored landscape, shown portrait: the decoder must apply the rotation.
        exif = Image.Exif()
        exif[0x0112] = 6
        options["exif"] = exif.tobytes()
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", **options)
    return buffer.getvalue()


def with_comment(data: bytes, text: str) -> bytes:
    """The same JPEG with a COM segment right after SOI: other bytes, the same pixels."""
    payload = text.encode()
    return data[:2] + b"\xff\xfe" + struct.pack(">H", len(payload) + 2) + payload + data[2:]


class PhonePhotos:
    """Hands out distinct 12 MP JPEGs, cycling over `distinct` photos made once into `cache`."""

    def __init__(self, distinct: int = 30, cache: Path = DEFAULT_CACHE):
        self._paths = ensure_cached(distinct, cache)
        self._count = 0

    def take(self, count: int) -> list[Photo]:
        photos = []
        for _ in range(count):
            path = self._paths[self._count % len(self._paths)]
            data = with_comment(path.read_bytes(), f"bench upload {self._count}")
            photos.append(Photo(f"{path.stem}_{self._count}.jpg", data))
            self._count += 1
        return photos


def ensure_cached(count: int, cache: Path) -> list[Path]:
    """The first `count` photos of the set, made into `cache` where missing."""
    names = sorted(json.loads((IMAGES / "labels.json").read_text()))
    cache.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        name = names[index % len(names)]
        path = cache / f"phone_v{VERSION}_{index:03d}_{Path(name).stem}.jpg"
        if not path.exists():
            with Image.open(IMAGES / name) as source:
                data = make_phone_photo(source, seed=index, rotated=index % 3 == 2)
            partial = path.with_suffix(".partial")
            partial.write_bytes(data)
            partial.replace(path)  # never a half-written photo in the cache
        paths.append(path)
    return paths
