"""What a run sends and what it expects back: image bytes read once, and the expected labels."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path, PurePath

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"}
_HEADER_FIRST = {"image", "images", "file", "filename", "name"}
_HEADER_SECOND = {"result", "results", "label", "labels", "expected"}


class InputError(ValueError):
    """An image folder or expected-labels file that cannot be used; the message is one line."""


@dataclass(frozen=True)
class Image:
    filename: str
    data: bytes


def load_images(folder: str | Path) -> tuple[Image, ...]:
    """Every image file directly in `folder`, sorted by name, read into memory once."""
    path = Path(folder)
    if not path.exists():
        raise InputError(f"image folder not found: {path}")
    if not path.is_dir():
        raise InputError(f"not a folder: {path}")
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        suffixes = " ".join(sorted(IMAGE_SUFFIXES))
        raise InputError(f"no image files ({suffixes}) in {path}")
    images = []
    for file in files:
        try:
            data = file.read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read {file}: {exc.strerror or exc}") from None
        if data:  # an empty file is no image; the server would only answer 400
            images.append(Image(file.name, data))
    if not images:
        raise InputError(f"all image files in {path} are empty")
    return tuple(images)


Expected = dict[str, frozenset[str]]


def load_expected(path: str | Path) -> Expected:
    """Accepted labels by filename (or stem): the course's CSV, or `{"file": [labels]}` JSON."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # the course's CSV may carry a BOM
    except FileNotFoundError:
        raise InputError(f"expected-labels file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read expected-labels file {path}: {exc}") from None
    expected = _from_json(path, text) if path.suffix.lower() == ".json" else _from_csv(path, text)
    if not expected:
        raise InputError(f"no labels in expected-labels file {path}")
    return expected


def _from_json(path: Path, text: str) -> Expected:
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise InputError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise InputError(f'{path}: expected a JSON object {{"file": ["label", ...]}}')
    expected: Expected = {}
    for name, labels in obj.items():
        if isinstance(labels, str):
            labels = [labels]
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise InputError(f"{path}: labels of {name!r} must be a string or a list of strings")
        expected[name] = frozenset(label.strip() for label in labels)
    return expected


def _from_csv(path: Path, text: str) -> Expected:
    rows = [row for row in csv.reader(text.splitlines()) if any(cell.strip() for cell in row)]
    if rows and _is_header(rows[0]):
        rows = rows[1:]
    expected: dict[str, set[str]] = {}
    for number, row in enumerate(rows, start=1):
        if len(row) < 2:
            raise InputError(f"{path}: row {number} needs two columns, filename and label")
        expected.setdefault(row[0].strip(), set()).add(row[1].strip())
    return {name: frozenset(labels) for name, labels in expected.items()}


def _is_header(row: list[str]) -> bool:
    cells = [cell.strip().lower() for cell in row]
    return len(cells) >= 2 and cells[0] in _HEADER_FIRST and cells[1] in _HEADER_SECOND


def accepted_labels(expected: Expected, filename: str) -> frozenset[str] | None:
    """The labels accepted for `filename`; lists may key by full name or by stem."""
    found = expected.get(filename)
    return found if found is not None else expected.get(PurePath(filename).stem)
