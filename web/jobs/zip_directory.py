"""A zip's central directory counted and bounded before `zipfile` parses it.

`zipfile.ZipFile` reads the whole central directory into memory and builds an object per entry
before anyone can count them: 300,000 directory entries cost 149 MiB. The end-of-central-directory
record's count can lie (zipfile walks the directory by its byte size, not the count), so the
entries are walked here, header by header, reading 46 bytes of each and seeking past its name,
extra field and comment, and the walk stops at the first entry past the limit.
"""

from __future__ import annotations

import struct
from typing import BinaryIO

from web.errors import ArchiveError, TooManyImages

MAX_ENTRY_BYTES = 4096  # one entry's name + extra field + comment; a 255-character name is ~1 KiB

_END = b"PK\x05\x06"
_END_SIZE = 22
_END64_LOCATOR = b"PK\x06\x07"
_END64_LOCATOR_SIZE = 20
_END64 = b"PK\x06\x06"
_END64_SIZE = 56
_ENTRY = b"PK\x01\x02"
_ENTRY_SIZE = 46
_LOCAL = b"PK\x03\x04"
_LOCAL_SIZE = 30


def check_entries(file: BinaryIO, max_entries: int) -> int:
    """How many entries the directory holds, directories included; TooManyImages past
    `max_entries`, ArchiveError for a directory zipfile would also refuse or one too large."""
    size, start = _directory(file)
    count, position = 0, start
    while position < start + size:
        file.seek(position)
        header = file.read(_ENTRY_SIZE)
        if len(header) < _ENTRY_SIZE or not header.startswith(_ENTRY):
            raise ArchiveError("unreadable zip archive: bad central directory entry")
        count += 1
        if count > max_entries:
            raise TooManyImages.limit(max_entries)
        name, extra, comment = struct.unpack("<HHH", header[28:34])
        if name + extra + comment > MAX_ENTRY_BYTES:
            raise ArchiveError(
                f"a zip directory entry holds {name + extra + comment} bytes of name, extra"
                f" field and comment (at most {MAX_ENTRY_BYTES})"
            )
        position += _ENTRY_SIZE + name + extra + comment
    return count


def _directory(file: BinaryIO) -> tuple[int, int]:
    """(directory size, directory start), found as zipfile finds them."""
    file.seek(0, 2)
    length = file.tell()
    tail_at = max(0, length - _END_SIZE - 0xFFFF)  # the record, then a comment of up to 64 KiB
    file.seek(tail_at)
    tail = file.read()
    found = tail.rfind(_END)
    if found < 0 or len(tail) - found < _END_SIZE:
        raise ArchiveError("unreadable zip archive: no end of central directory")
    end = tail_at + found
    (size,) = struct.unpack("<I", tail[found + 12 : found + 16])
    start = end - size
    locator_at = end - _END64_LOCATOR_SIZE
    if locator_at >= 0:
        file.seek(locator_at)
        if file.read(4) == _END64_LOCATOR:  # zip64: the real size is in its own end record
            file.seek(end - _END64_LOCATOR_SIZE - _END64_SIZE)
            record = file.read(_END64_SIZE)
            if len(record) < _END64_SIZE or not record.startswith(_END64):
                raise ArchiveError("unreadable zip archive: bad zip64 end record")
            (size,) = struct.unpack("<Q", record[40:48])
            start = end - _END64_LOCATOR_SIZE - _END64_SIZE - size
    if start < 0:
        raise ArchiveError("unreadable zip archive: the central directory starts before the file")
    return size, start


def check_no_overlap(file: BinaryIO, members, directory_start: int) -> None:
    """ArchiveError if two members' data overlap, or one runs into the central directory.

    Each member spans at least its local header (30 bytes, its name and extra field, read from
    the header itself) and its compressed data; a data descriptor after it only adds to that.
    """
    end_of_previous = 0
    for member in sorted(members, key=lambda m: m.header_offset):
        if member.header_offset < end_of_previous:
            raise ArchiveError("overlapping zip entries (one stream read as many: a zip bomb)")
        file.seek(member.header_offset)
        local = file.read(_LOCAL_SIZE)
        name, extra = 0, 0
        if len(local) == _LOCAL_SIZE and local.startswith(_LOCAL):
            name, extra = struct.unpack("<HH", local[26:30])
        # A bad local header is that member's own failure when it is read.
        end_of_previous = member.header_offset + _LOCAL_SIZE + name + extra + member.compress_size
    if end_of_previous > directory_start:
        raise ArchiveError("overlapping zip entries (data runs into the central directory)")
