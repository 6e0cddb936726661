"""The upload for each request, and with --unique distinct bytes for the same picture, so a
result cache keyed by the bytes cannot answer.

The mark is metadata every decoder skips: a JPEG comment (COM) segment right after the
start-of-image marker, or a PNG tEXt chunk right after IHDR. The pixels decode identically.
"""

from __future__ import annotations

import struct
import uuid
import zlib

from loadgen.client import Upload, make_upload
from loadgen.inputs import Image, InputError

JPEG_SOI = b"\xff\xd8"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IHDR_END = len(PNG_SIGNATURE) + 8 + 13 + 4  # length, type, 13 bytes of data, CRC


def can_mark(data: bytes) -> bool:
    return data.startswith(JPEG_SOI) or data.startswith(PNG_SIGNATURE)


def marked(data: bytes, serial: str) -> bytes:
    """`data` with `serial` written into a metadata field; the image itself is unchanged."""
    text = f"loadgen {serial}".encode()
    if data.startswith(JPEG_SOI):
        segment = b"\xff\xfe" + struct.pack(">H", len(text) + 2) + text
        return JPEG_SOI + segment + data[len(JPEG_SOI) :]
    if data.startswith(PNG_SIGNATURE):
        body = b"Comment\x00" + text
        chunk = struct.pack(">I", len(body)) + b"tEXt" + body
        chunk += struct.pack(">I", zlib.crc32(b"tEXt" + body))
        return data[:_PNG_IHDR_END] + chunk + data[_PNG_IHDR_END:]
    raise ValueError("only JPEG and PNG images can be marked")


class Uploads:
    """Request i sends image i mod n; with `unique`, its bytes also carry this run's id and i."""

    def __init__(self, field: str, images: tuple[Image, ...], unique: bool):
        if unique:
            unmarkable = [image.filename for image in images if not can_mark(image.data)]
            if unmarkable:
                raise InputError(
                    f"--unique marks JPEG and PNG images only, not {', '.join(unmarkable[:3])}"
                )
        self._field, self._images, self._unique = field, images, unique
        # Per run, too: a second run's request i must not repeat the first run's bytes.
        self._run = uuid.uuid4().hex[:12]
        self._built = tuple(make_upload(field, i.filename, i.data) for i in images)

    def __len__(self) -> int:
        return len(self._images)

    def __call__(self, index: int) -> Upload:
        if not self._unique:
            return self._built[index % len(self._built)]
        image = self._images[index % len(self._images)]
        return make_upload(self._field, image.filename, marked(image.data, f"{self._run}-{index}"))
