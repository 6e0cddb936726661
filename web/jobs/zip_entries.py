"""The members of a zip archive, each bounded (web.jobs.members).

The central directory is counted before `zipfile` parses it (web.jobs.zip_directory); members whose
data overlap (one deflate stream shared by many entries: a bomb that newer CPython refuses, older
does not) refuse the archive on every Python; the bytes read count toward the Inflation.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from typing import BinaryIO

from web.errors import ArchiveError
from web.jobs.members import Entry, Inflation, display_name, read, too_large
from web.jobs.zip_directory import check_entries, check_no_overlap


def zip_entries(
    file: BinaryIO, max_images: int, max_bytes: int, inflation: Inflation
) -> Iterator[Entry]:
    check_entries(file, max_images)  # before zipfile parses the directory whole
    try:
        archive = zipfile.ZipFile(file)
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        raise ArchiveError(f"unreadable zip archive: {error}") from None
    with archive:
        check_no_overlap(file, archive.infolist(), archive.start_dir)
        inflated = 0
        for member in archive.infolist():  # at most max_images, directories included
            if member.is_dir():
                continue
            name, unsafe = display_name(member.filename)
            if unsafe:
                yield Entry(name, error=unsafe)
            elif member.file_size > max_bytes:
                yield Entry(name, error=too_large(max_bytes))
            else:
                inflation.check(inflated + member.file_size)
                entry, size = read(name, lambda m=member: archive.open(m), max_bytes)
                inflated += max(size, member.file_size)
                inflation.check(inflated)  # its header may have understated it
                yield entry
