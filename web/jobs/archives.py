"""The images inside a zip or tar archive, one entry at a time, each bounded.

An archive is untrusted: a member may claim one size and inflate to another (a zip bomb), name a
path outside any folder (`../../etc/passwd`), be a link or a device, or not be an image at all.
None of that stops the job: each such member becomes an entry with the reason it was refused,
and the good ones go on. What refuses the archive as a whole: more members than a job may hold
(directories included), metadata past its bounds, overlapping zip entries, or inflating past
the job's bounds (web.jobs.members.Inflation) - each decided before the expensive part.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from web.errors import ArchiveError
from web.jobs.members import Entry, Inflation, display_name
from web.jobs.tar_entries import tar_entries
from web.jobs.zip_entries import zip_entries

__all__ = ["Entry", "display_name", "entries", "kind"]


def kind(head: bytes) -> str | None:
    """'zip', 'tar' (plain or compressed) or None, from the first bytes."""
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "zip"
    if head.startswith((b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")) or head[257:262] == b"ustar":
        return "tar"
    return None


def entries(
    file: BinaryIO,
    *,
    max_images: int,
    max_bytes: int,
    max_inflated_bytes: int | None = None,
    max_ratio: float | None = None,
) -> Iterator[Entry]:
    """Every file member of the archive in `file` (seekable), in archive order."""
    file.seek(0, 2)
    inflation = Inflation(file.tell(), max_bytes, max_inflated_bytes, max_ratio)
    file.seek(0)
    head = file.read(512)
    file.seek(0)
    found = kind(head)
    if found == "zip":
        yield from zip_entries(file, max_images, max_bytes, inflation)
    elif found == "tar":
        yield from tar_entries(file, max_images, max_bytes, inflation)
    else:
        raise ArchiveError("not a zip or tar archive (tar may be gzip, bzip2 or xz compressed)")
