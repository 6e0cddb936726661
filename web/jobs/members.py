"""One archive member as a job sees it, and the bounds every member is read under.

A member may claim one size and inflate to another (a zip bomb), name a path outside any folder
(`../../etc/passwd`), or be a link or a device: each such member becomes an Entry with the reason
it was refused, and the good ones go on. What the whole archive may cost is bounded by Inflation.
"""

from __future__ import annotations

import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import PurePosixPath

from runtime.messages import printable_name
from web.errors import ArchiveError


@dataclass(frozen=True)
class Entry:
    name: str  # the member's path inside the archive, cleaned for display
    data: bytes = b""
    error: str = ""  # why the member was not taken; empty for one to classify


def display_name(raw: str) -> tuple[str, str]:
    """The member's name for the CSV, and a reason to refuse it ('' if it is safe)."""
    name = printable_name(raw)  # cut before anything is built from it
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or (name[1:3] == ":/" and name[0].isalpha()):
        return name, "unsafe path in the archive (absolute or with '..')"
    return name, ""


class Inflation:
    """The bytes one archive may inflate to: at most `max_total`, and at most `max_ratio` times
    the archive's own size plus one image's worth (so a small archive of one image passes).
    Checked with what a member will inflate to before it is read, or skipped."""

    def __init__(self, archive_bytes: int, max_image_bytes: int, max_total, max_ratio):
        bounds = [max_total] if max_total else []
        if max_ratio:
            bounds.append(int(max_ratio * archive_bytes) + max_image_bytes)
        self.limit = min(bounds) if bounds else None
        self._archive_bytes = archive_bytes

    def check(self, inflated: int) -> None:
        if self.limit is not None and inflated > self.limit:
            raise ArchiveError(
                f"the {self._archive_bytes}-byte archive inflates past {self.limit} bytes"
                " (JOB_MAX_INFLATED_BYTES, JOB_MAX_RATIO)"
            )


def too_large(max_bytes: int) -> str:
    return f"larger than the {max_bytes}-byte limit of one image"


def read(name: str, opener, max_bytes: int) -> tuple[Entry, int]:
    """The member, at most max_bytes + 1 bytes of it (a member whose header lies about its size
    stops there), and how many bytes were inflated to read it."""
    try:
        with opener() as stream:
            data = stream.read(max_bytes + 1)
    except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError, ValueError) as error:
        return Entry(name, error=f"unreadable member: {error}"), 0
    except zlib.error as error:  # a corrupt deflate stream (zip) or gzip block (tar)
        return Entry(name, error=f"unreadable member: corrupt compressed data ({error})"), 0
    except RuntimeError as error:  # an encrypted zip member
        return Entry(name, error=f"unreadable member: {error}"), 0
    except NotImplementedError as error:  # a zip compression method Python lacks
        return Entry(name, error=f"unsupported compression: {error}"), 0
    if len(data) > max_bytes:
        return Entry(name, error=too_large(max_bytes)), len(data)
    return Entry(name, data=data), len(data)
