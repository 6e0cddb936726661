"""Helpers for the batch-job tests: archives built in memory, polling, the CSV read back."""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import struct
import tarfile
import time
import zipfile

import boto3
import requests
import urllib3


def zip_of(members: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return buffer.getvalue()


def tar_bz2_of(members: list[tuple[str, bytes]]) -> bytes:
    return tar_of(members, mode="w:bz2")


def tar_of(
    members: list[tuple[str, bytes]], links: tuple[str, ...] = (), mode: str = "w:gz"
) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name in links:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            archive.addfile(info)
    return buffer.getvalue()


def metadata_bomb(kind: bytes, declared: int) -> bytes:
    """A bzip2 tar whose first header (`kind`: a GNU long name or a pax header) declares and holds
    `declared` bytes, then one small image: bzip2 squeezes the payload to a few hundred bytes."""
    header = tarfile.TarInfo("././@LongLink")
    header.type, header.size = kind, declared
    pax = kind in (tarfile.XHDTYPE, tarfile.XGLTYPE)
    payload = pax_record(declared) if pax else b"a" * declared
    image = tarfile.TarInfo("cat.jpg")
    image.size = 3
    raw = (
        header.tobuf(format=tarfile.GNU_FORMAT)
        + payload
        + b"\0" * (-declared % tarfile.BLOCKSIZE)
        + image.tobuf(format=tarfile.GNU_FORMAT)
        + b"cat".ljust(tarfile.BLOCKSIZE, b"\0")
        + b"\0" * (2 * tarfile.BLOCKSIZE)
    )
    return bz2.compress(raw)


def pax_record(size: int) -> bytes:
    """One `comment` pax record of exactly `size` bytes (its length counts its own digits)."""
    value = "c" * (size - len(str(size)) - len(" comment=\n"))
    return f"{size} comment={value}\n".encode()


def post_archive(url: str, body: bytes, content_type: str = "application/zip"):
    return requests.post(
        f"{url}/jobs", data=body, headers={"Content-Type": content_type}, timeout=120
    )


def wait_done(url: str, job_id: str, limit_s: float = 300) -> dict:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        progress = requests.get(f"{url}/jobs/{job_id}", timeout=10).json()
        if progress["state"] == "done":
            return progress
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} not done after {limit_s} s: {progress}")


def results(url: str, job_id: str) -> list[dict]:
    response = requests.get(f"{url}/jobs/{job_id}/results.csv", timeout=60)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    return list(csv.DictReader(io.StringIO(response.text)))


def clients(service):
    kwargs = {"endpoint_url": service.env["AWS_ENDPOINT_URL"], "region_name": "us-east-1"}
    return boto3.client("s3", **kwargs), boto3.client("sqs", **kwargs)


def queue_depth(sqs, name: str) -> int:
    url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    attributes = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return sum(int(value) for value in attributes.values())


def with_folders(members: list[tuple[str, bytes]], folders: int, kind: str) -> bytes:
    """A zip or tar.bz2 of `members` and `folders` directory entries (which cost as much)."""
    buffer = io.BytesIO()
    if kind == "zip":
        with zipfile.ZipFile(buffer, "w") as archive:
            for i in range(folders):
                archive.writestr(f"d{i}/", b"")
            for name, data in members:
                archive.writestr(name, data)
        return buffer.getvalue()
    with tarfile.open(fileobj=buffer, mode="w:bz2") as archive:
        for i in range(folders):
            info = tarfile.TarInfo(f"d{i}")
            info.type = tarfile.DIRTYPE
            archive.addfile(info)
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def form_of(files: list[tuple[str, bytes]], fields: dict[str, str] | None = None):
    """(body, Content-Type) of a multipart form of image files and text fields."""
    parts = [(name, value) for name, value in (fields or {}).items()]
    parts += [("images", (name, data, "application/octet-stream")) for name, data in files]
    return urllib3.encode_multipart_formdata(parts)


def overlapping_zip(name: str, data: bytes, copies: int) -> bytes:
    """A zip whose directory lists one deflated member `copies` times, every entry pointing at
    the same data: it inflates `copies` times what it holds (older CPython reads it whole)."""
    one = zip_of([(name, data)])
    directory = one.rindex(b"PK\x01\x02")
    end = one.rindex(b"PK\x05\x06")
    entry = one[directory:end]
    tail = struct.pack(
        "<4s4H2LH", b"PK\x05\x06", 0, 0, copies, copies, len(entry) * copies, directory, 0
    )
    return one[:directory] + entry * copies + tail


def flat_bmp(side: int = 1000) -> bytes:
    """A valid, uniform BMP of side x side pixels: 3 bytes a pixel that compress to nothing."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (side, side), "white").save(buffer, format="BMP")
    return buffer.getvalue()


def corrupt_member(archive: bytes, name: str) -> bytes:
    """The zip with `name`'s deflate stream made invalid (its first block of a reserved type)."""
    with zipfile.ZipFile(io.BytesIO(archive)) as opened:
        info = opened.getinfo(name)
    start = info.header_offset
    name_length, extra_length = struct.unpack("<HH", archive[start + 26 : start + 30])
    data = start + 30 + name_length + extra_length
    return archive[:data] + b"\xff" + archive[data + 1 :]


def damaged_tar(members: list[tuple[str, bytes]], after: int) -> bytes:
    """A tar.gz whose header after its first `after` members is damaged (a bad checksum)."""
    plain = io.BytesIO()
    with tarfile.open(fileobj=plain, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        offsets = []
        for name, data in members:
            offsets.append(plain.tell())
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    raw = bytearray(plain.getvalue())
    raw[offsets[after] + 148] ^= 0x7  # one digit of the checksum field
    return gzip.compress(bytes(raw))
