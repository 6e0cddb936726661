"""Archive members one at a time, each bounded (unit level: archives built in memory)."""

from __future__ import annotations

import io
import struct
import tarfile
import tracemalloc
import zipfile

import pytest

from tests.job_client import (
    corrupt_member,
    damaged_tar,
    metadata_bomb,
    overlapping_zip,
    tar_bz2_of,
    tar_of,
    with_folders,
    zip_of,
)
from web.errors import ArchiveError, TooManyImages
from web.jobs.archives import display_name, entries, kind
from web.jobs.zip_directory import check_entries

LIMIT = 1000


def _entries(data: bytes, max_images: int = 10) -> list:
    return list(entries(io.BytesIO(data), max_images=max_images, max_bytes=LIMIT))


@pytest.mark.parametrize(
    ("raw", "unsafe"),
    [
        ("cats/tabby.jpg", False),
        ("../etc/passwd", True),
        ("a/../../b.jpg", True),
        ("/etc/passwd", True),
        ("C:/Windows/x.jpg", True),
        ("..\\..\\x.jpg", True),
        ("name\x00with\x1fcontrols.jpg", False),
    ],
)
def test_display_name(raw, unsafe):
    name, reason = display_name(raw)
    assert bool(reason) is unsafe
    assert "\x00" not in name and "\x1f" not in name


def test_kind_from_the_first_bytes():
    assert kind(zip_of([("a", b"x")])[:512]) == "zip"
    assert kind(tar_of([("a", b"x")])[:512]) == "tar"  # gzip
    plain = io.BytesIO()
    with tarfile.open(fileobj=plain, mode="w") as archive:
        archive.addfile(tarfile.TarInfo("a"), io.BytesIO(b""))
    assert kind(plain.getvalue()[:512]) == "tar"
    assert kind(b"GIF89a....") is None


@pytest.mark.parametrize("build", [zip_of, tar_of])
def test_bad_members_fail_alone_and_good_ones_pass(build):
    members = [
        ("ok.jpg", b"a" * 10),
        ("../up.jpg", b"b"),
        ("big.jpg", b"\0" * (LIMIT + 1)),
        ("dir/ok2.jpg", b"c" * LIMIT),
    ]
    found = {e.name: e for e in _entries(build(members))}
    assert found["ok.jpg"].data == b"a" * 10 and not found["ok.jpg"].error
    assert found["dir/ok2.jpg"].data == b"c" * LIMIT
    assert "unsafe path" in found["../up.jpg"].error and not found["../up.jpg"].data
    assert "byte limit" in found["big.jpg"].error and not found["big.jpg"].data


@pytest.mark.parametrize("build", [zip_of, tar_of])
def test_too_many_members_refuse_the_archive(build):
    members = [(f"{i}.jpg", b"x") for i in range(4)]
    assert len(_entries(build(members), max_images=4)) == 4
    with pytest.raises(TooManyImages):
        _entries(build(members), max_images=3)


@pytest.mark.parametrize("data", [b"", b"hello", b"PK\x03\x04garbage", b"\x1f\x8bnot gzip"])
def test_not_an_archive_is_one_typed_error(data):
    with pytest.raises(ArchiveError):
        _entries(data)


def test_a_symlink_in_a_tar_is_not_followed():
    (link,) = _entries(tar_of([], links=("passwd.jpg",)))
    assert "not a regular file" in link.error and not link.data


@pytest.mark.parametrize("kind", [tarfile.GNUTYPE_LONGNAME, tarfile.XHDTYPE, tarfile.XGLTYPE])
def test_a_tar_metadata_bomb_is_refused_before_it_is_read(kind):
    bomb = metadata_bomb(kind, 16 * 1024 * 1024)
    assert len(bomb) < 2048
    refused = ""
    tracemalloc.start()
    try:
        _entries(bomb)
    except ArchiveError as error:
        refused = str(error)
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < 2 * 1024 * 1024, peak  # not the 16 MiB payload, read whole
    assert "tar header declares 16777216 bytes" in refused
    assert len(refused.splitlines()) == 1


def test_small_metadata_still_reads_and_long_names_are_cut():
    long_name = "d/" * 300 + "cat.jpg"
    (entry,) = _entries(tar_of([(long_name, b"x")]))  # a pax or GNU header carries the name
    assert entry.data == b"x" and len(entry.name) == 255


def test_chained_metadata_headers_are_bounded():
    raw = b""
    for _ in range(50):  # each long-name header recurses into the next one
        header = tarfile.TarInfo("././@LongLink")
        header.type, header.size = tarfile.GNUTYPE_LONGNAME, 10
        raw += header.tobuf(format=tarfile.GNU_FORMAT) + b"x" * 10 + b"\0" * 502
    image = tarfile.TarInfo("cat.jpg")
    raw += image.tobuf(format=tarfile.GNU_FORMAT) + b"\0" * 1024
    with pytest.raises(ArchiveError, match="chained"):
        _entries(raw)


def test_display_name_cuts_before_it_filters():
    raw = "x" * 10_000_000
    tracemalloc.start()
    try:
        name, reason = display_name(raw)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert name == "x" * 255 and not reason
    assert peak < 1024 * 1024, peak  # not a list of every character


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_directories_count_toward_the_member_limit(kind):
    archive = with_folders([("cat.jpg", b"x")], 3, kind)
    assert [e.name for e in _entries(archive, max_images=4)] == ["cat.jpg"]
    with pytest.raises(TooManyImages):
        _entries(archive, max_images=3)


def _peak(work) -> int:
    tracemalloc.start()
    try:
        work()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _refused(data: bytes, max_images: int):
    def work():
        with pytest.raises(TooManyImages):
            _entries(data, max_images=max_images)

    return work


def test_a_zip_directory_is_counted_before_it_is_parsed():
    archive = with_folders([], 20_000, "zip")
    # zipfile alone builds 20,000 ZipInfo objects (several MiB) before any count.
    assert _peak(_refused(archive, 10)) < 512 * 1024
    # The end record's count may lie (zipfile walks the directory by its size): counted anyway.
    end = archive.rindex(b"PK\x05\x06")
    lying = archive[: end + 8] + struct.pack("<HH", 1, 1) + archive[end + 12 :]
    assert _peak(_refused(lying, 10)) < 512 * 1024


def test_a_zip64_directory_is_counted(monkeypatch):
    monkeypatch.setattr(zipfile, "ZIP_FILECOUNT_LIMIT", 2)  # zip64 end records from 3 entries
    archive = zip_of([(f"{i}.jpg", b"x") for i in range(5)])
    assert b"PK\x06\x06" in archive
    assert check_entries(io.BytesIO(archive), 5) == 5
    assert len(_entries(archive, max_images=5)) == 5
    with pytest.raises(TooManyImages):
        _entries(archive, max_images=4)


def test_a_zip_entry_with_a_huge_name_is_refused():
    archive = zip_of([("n" * 5000 + ".jpg", b"x")])
    with pytest.raises(ArchiveError, match="zip directory entry holds 5004 bytes"):
        _entries(archive)


def test_overlapping_zip_entries_refuse_the_archive():
    bomb = overlapping_zip("same.jpg", b"\0" * LIMIT, 10)
    assert len(bomb) < 1000
    with pytest.raises(ArchiveError, match="overlapping zip entries"):
        _entries(bomb)


@pytest.mark.parametrize("build", [zip_of, tar_bz2_of])
def test_an_archive_that_inflates_past_its_ratio_is_refused(build):
    archive = build([(f"{i}.jpg", b"\0" * LIMIT) for i in range(40)])
    assert len(archive) < 5000  # 40 KB of members (and tar headers) from a few KB
    found = list(entries(io.BytesIO(archive), max_images=100, max_bytes=LIMIT, max_ratio=1000))
    assert len(found) == 40  # under 1000 times (plus one image): taken
    with pytest.raises(ArchiveError, match="inflates past"):
        list(entries(io.BytesIO(archive), max_images=100, max_bytes=LIMIT, max_ratio=5))


@pytest.mark.parametrize("build", [zip_of, tar_bz2_of])
def test_the_total_bound_stops_before_the_member_past_it(build):
    archive = build([(f"{i}.jpg", b"\1" * LIMIT) for i in range(5)])
    found = entries(io.BytesIO(archive), max_images=10, max_bytes=LIMIT, max_inflated_bytes=3500)
    taken = []
    with pytest.raises(ArchiveError, match="inflates past 3500 bytes"):
        taken.extend(found)
    assert 1 <= len(taken) < 4  # stopped as it went, not after reading everything


def test_a_corrupt_deflate_stream_fails_its_member_alone():
    archive = corrupt_member(zip_of([("bad.jpg", b"a" * 500), ("ok.jpg", b"b" * 10)]), "bad.jpg")
    bad, ok = _entries(archive)
    assert "corrupt compressed data" in bad.error and not bad.data
    assert ok.data == b"b" * 10


def test_a_tar_damaged_after_its_second_member_is_refused():
    members = [(f"{i}.jpg", bytes([i]) * 700) for i in range(3)]
    with pytest.raises(ArchiveError, match="damaged at byte"):
        _entries(damaged_tar(members, after=2))  # tarfile alone: 2 of 3, no word of the third
