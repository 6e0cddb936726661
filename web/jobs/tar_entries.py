"""The members of a tar archive (plain, gzip, bzip2 or xz), each bounded (web.jobs.members).

Metadata headers are bounded before `tarfile` reads them (web.jobs.tar_headers); every member counts
toward the job's limit, directories included; the stream position after each member's data is
checked against the archive's Inflation before the member is read or skipped, since skipping a
member of a compressed tar inflates it all the same.
"""

from __future__ import annotations

import tarfile
import zipfile
from collections.abc import Iterator
from typing import BinaryIO

from web.errors import ArchiveError, TooManyImages
from web.jobs.members import Entry, Inflation, display_name, read, too_large
from web.jobs.tar_headers import BoundedTarInfo


def tar_entries(
    file: BinaryIO, max_images: int, max_bytes: int, inflation: Inflation
) -> Iterator[Entry]:
    try:
        archive = tarfile.open(fileobj=file, mode="r:*", tarinfo=BoundedTarInfo)
    except (tarfile.TarError, OSError, EOFError) as error:
        raise ArchiveError(f"unreadable tar archive: {error}") from None
    count = 0
    with archive:
        try:
            for member in archive:
                count += 1  # directories too: each one costs a TarInfo kept by the archive
                if count > max_images:
                    raise TooManyImages.limit(max_images)
                inflation.check(member.offset_data + member.size)
                if not member.isdir():
                    yield _entry(archive, member, max_bytes)
        except (tarfile.TarError, OSError, EOFError, zipfile.BadZipFile) as error:
            raise ArchiveError(f"tar archive broken after {count} members: {error}") from None


def _entry(archive: tarfile.TarFile, member: tarfile.TarInfo, max_bytes: int) -> Entry:
    name, unsafe = display_name(member.name)
    if unsafe:
        return Entry(name, error=unsafe)
    if not member.isfile():
        return Entry(name, error="not a regular file (a link or a device)")
    if member.size > max_bytes:
        return Entry(name, error=too_large(max_bytes))
    entry, _ = read(name, lambda: archive.extractfile(member), max_bytes)
    return entry
