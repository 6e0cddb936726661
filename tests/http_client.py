"""A small multipart client for the tests, over real HTTP."""

from __future__ import annotations

import io
from pathlib import Path

import requests
from PIL import Image

from tests.conftest import IMAGES, photo_labels


def upload(
    base_url: str,
    data: bytes,
    filename: str,
    *,
    field: str = "myfile",
    path: str = "/upload",
    accept: str | None = None,
    timeout: float = 120,
    request_id: str | None = None,
    api_key: str | None = None,
    model: str | None = None,
    prefer_async: bool = False,
) -> requests.Response:
    """model: sent in the form's `model` field; prefer_async: `Prefer: respond-async`."""
    headers = {"Accept": accept} if accept else {}
    if request_id:
        headers["X-Request-Id"] = request_id
    if api_key:
        headers["X-Api-Key"] = api_key
    if prefer_async:
        headers["Prefer"] = "respond-async"
    return requests.post(
        base_url + path,
        files={field: (filename, data, "application/octet-stream")},
        data={"model": model} if model is not None else None,
        headers=headers,
        timeout=timeout,
    )


def photos() -> list[tuple[str, bytes, list[str]]]:
    return [(name, (IMAGES / name).read_bytes(), ok) for name, ok in photo_labels().items()]


def variants(count: int) -> list[tuple[str, bytes]]:
    """`count` distinct JPEGs cut from the real photos: each a different crop and size."""
    sources = [Image.open(IMAGES / name).convert("RGB") for name in photo_labels()]
    out = []
    for i in range(count):
        image = sources[i % len(sources)]
        width, height = image.size
        margin = 0.02 * (i // len(sources) + 1)
        box = (
            int(width * margin),
            int(height * margin),
            int(width * (1 - margin / 2)),
            int(height * (1 - margin / 2)),
        )
        side = 160 + 8 * (i % 12)
        crop = image.crop(box)
        crop.thumbnail((side * 2, side * 2))
        buffer = io.BytesIO()
        crop.save(buffer, format="JPEG", quality=85 + i % 10)
        out.append((f"img_{i}.jpg", buffer.getvalue()))
    return out


def stem_and_label(text: str) -> tuple[str, str]:
    stem, _, label = text.partition(":")
    return stem, label


def stem(name: str) -> str:
    return Path(name).stem
