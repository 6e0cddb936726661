"""The images inside a zip or tar archive, one entry at a time, each bounded.

An archive is untrusted: a member may claim one size and inflate to another (a zip bomb), name a
path outside any folder (`../../etc/passwd`), be a link or a device, or not be an image at all.
None of that stops the job: each such member becomes an entry with the reason it was refused,
and the good ones go on. Only more members than a job may hold refuses the archive as a whole.
"""

from __future__ import annotations

import tarfile
import unicodedata
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import BinaryIO

from web.errors import ArchiveError, TooManyImages
from web.tar_headers import BoundedTarInfo
from web.zip_directory import check_entries

_MAX_NAME = 255
_MAX_SKIPPED_IMAGES = 20  # oversized tar members skipped, in units of the one-image limit


@dataclass(frozen=True)
class Entry:
    name: str  # the member's path inside the archive, cleaned for display
    data: bytes = b""
    error: str = ""  # why the member was not taken; empty for one to classify


def kind(head: bytes) -> str | None:
    """'zip', 'tar' (plain or compressed) or None, from the first bytes."""
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "zip"
    if head.startswith((b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")) or head[257:262] == b"ustar":
        return "tar"
    return None


def entries(file: BinaryIO, *, max_images: int, max_bytes: int) -> Iterator[Entry]:
    """Every file member of the archive in `file` (seekable), in archive order."""
    file.seek(0)
    head = file.read(512)
    file.seek(0)
    found = kind(head)
    if found == "zip":
        yield from _zip_entries(file, max_images, max_bytes)
    elif found == "tar":
        yield from _tar_entries(file, max_images, max_bytes)
    else:
        raise ArchiveError("not a zip or tar archive (tar may be gzip, bzip2 or xz compressed)")


def display_name(raw: str) -> tuple[str, str]:
    """The member's name for the CSV, and a reason to refuse it ('' if it is safe)."""
    # Cut first: a name may be as long as its header allows, and nothing is built from the rest.
    raw = raw[: 4 * _MAX_NAME]
    name = "".join(ch for ch in raw if unicodedata.category(ch)[0] != "C")[:_MAX_NAME]
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or (name[1:3] == ":/" and name[0].isalpha()):
        return name, "unsafe path in the archive (absolute or with '..')"
    return name, ""


def _zip_entries(file: BinaryIO, max_images: int, max_bytes: int) -> Iterator[Entry]:
    check_entries(file, max_images)  # before zipfile parses the directory whole
    try:
        archive = zipfile.ZipFile(file)
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        raise ArchiveError(f"unreadable zip archive: {error}") from None
    with archive:
        for member in archive.infolist():  # at most max_images, directories included
            if member.is_dir():
                continue
            name, unsafe = display_name(member.filename)
            if unsafe:
                yield Entry(name, error=unsafe)
            elif member.file_size > max_bytes:
                yield Entry(name, error=_too_large(max_bytes))
            else:
                yield _read(name, lambda m=member: archive.open(m), max_bytes)


def _tar_entries(file: BinaryIO, max_images: int, max_bytes: int) -> Iterator[Entry]:
    try:
        archive = tarfile.open(fileobj=file, mode="r:*", tarinfo=BoundedTarInfo)
    except (tarfile.TarError, OSError, EOFError) as error:
        raise ArchiveError(f"unreadable tar archive: {error}") from None
    count, skipped = 0, 0
    with archive:
        try:
            for member in archive:
                count += 1  # directories too: each one costs a TarInfo kept by the archive
                if count > max_images:
                    raise TooManyImages.limit(max_images)
                if member.isdir():
                    continue
                name, unsafe = display_name(member.name)
                if unsafe:
                    yield Entry(name, error=unsafe)
                elif not member.isfile():
                    yield Entry(name, error="not a regular file (a link or a device)")
                elif member.size > max_bytes:
                    # Skipping a member of a compressed tar still inflates it: bound that work.
                    skipped += member.size
                    if skipped > _MAX_SKIPPED_IMAGES * max_bytes:
                        raise ArchiveError("the archive inflates far past its images' limits")
                    yield Entry(name, error=_too_large(max_bytes))
                else:
                    yield _read(name, lambda m=member: archive.extractfile(m), max_bytes)
        except (tarfile.TarError, OSError, EOFError, zipfile.BadZipFile) as error:
            raise ArchiveError(f"tar archive broken after {count} members: {error}") from None


def _too_large(max_bytes: int) -> str:
    return f"larger than the {max_bytes}-byte limit of one image"


def _read(name: str, opener, max_bytes: int) -> Entry:
    """At most max_bytes + 1 bytes: a member whose header lies about its size stops there."""
    try:
        with opener() as stream:
            data = stream.read(max_bytes + 1)
    except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError, ValueError) as error:
        return Entry(name, error=f"unreadable member: {error}")
    except RuntimeError as error:  # an encrypted zip member
        return Entry(name, error=f"unreadable member: {error}")
    except NotImplementedError as error:  # a zip compression method Python lacks
        return Entry(name, error=f"unsupported compression: {error}")
    if len(data) > max_bytes:
        return Entry(name, error=_too_large(max_bytes))
    return Entry(name, data=data)
