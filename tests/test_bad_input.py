"""Every bad upload gets a clear 4xx with a one-line reason, and leaves nothing behind."""

from __future__ import annotations

import io
import time

import boto3
import pytest
import requests
from PIL import Image

from runtime.messages import MAX_FILENAME
from tests.http_client import photos, upload


def _png(size: tuple[int, int], mode: str = "1") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, format="PNG")
    return buffer.getvalue()


def _truncated_jpeg() -> bytes:
    # The header is sound (the web tier accepts it); the pixel data stops short.
    data = photos()[0][1]
    return data[: len(data) // 3]


@pytest.fixture(scope="module")
def s3_sqs(running_service):
    kwargs = {"endpoint_url": running_service.env["AWS_ENDPOINT_URL"], "region_name": "us-east-1"}
    return boto3.client("s3", **kwargs), boto3.client("sqs", **kwargs)


def _objects(s3, bucket: str) -> int:
    return s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0)


CASES = [
    (
        "no file field",
        lambda url: requests.post(f"{url}/upload", files={"other": ("a.jpg", b"x")}),
        400,
    ),
    ("empty file", lambda url: upload(url, b"", "empty.jpg"), 400),
    ("not multipart", lambda url: requests.post(f"{url}/upload", data=b"abc"), 400),
    ("text file", lambda url: upload(url, b"hello, world\n" * 50, "notes.jpg"), 415),
    ("pdf", lambda url: upload(url, b"%PDF-1.4\n%\xe2\xe3\n1 0 obj\n", "doc.pdf"), 415),
    (
        "too large",
        lambda url: upload(url, b"\xff\xd8\xff" + b"0" * (11 * 1024 * 1024), "big.jpg"),
        413,
    ),
    ("pixel bomb", lambda url: upload(url, _png((12000, 12000)), "bomb.png"), 413),
    ("wrong method", lambda url: requests.put(f"{url}/upload", data=b"x"), 405),
    ("get on upload", lambda url: requests.get(f"{url}/upload"), 405),
]


@pytest.mark.parametrize(("case", "send", "status"), CASES, ids=[c[0] for c in CASES])
def test_bad_upload_is_refused_cleanly(running_service, s3_sqs, case, send, status):
    s3, _ = s3_sqs
    before = _objects(s3, running_service.settings.input_bucket)
    response = send(running_service.webs[0])
    assert response.status_code == status, response.text
    reason = response.text.strip()
    assert reason and "\n" not in reason and "Traceback" not in reason
    assert _objects(s3, running_service.settings.input_bucket) == before


def test_reason_as_json_when_asked(running_service):
    response = upload(running_service.webs[0], b"", "e.jpg", accept="application/json")
    assert response.status_code == 400
    assert response.json()["reason"] == "the uploaded file is empty"


def test_undecodable_image_gets_422_with_the_reason(running_service):
    response = upload(running_service.webs[0], _truncated_jpeg(), "broken.jpg")
    assert response.status_code == 422, response.text
    assert "decode" in response.text and "\n" not in response.text.strip()


@pytest.mark.parametrize(
    "filename",
    ["../../etc/passwd.jpg", "a\x00b.jpg", "x" * 2000 + ".jpg", "фото 🐈.jpg", "<script>.jpg"],
)
def test_hostile_filenames_shape_nothing(running_service, s3_sqs, filename):
    s3, _ = s3_sqs
    name, data, accepted = photos()[0]
    response = upload(running_service.webs[0], data, filename, accept="application/json")
    assert response.status_code == 200, response.text
    body = response.json()
    assert "/" not in body["filename"] and "\x00" not in body["filename"]
    assert len(body["filename"]) <= MAX_FILENAME
    # Stored under the id only (a cache hit has no upload of its own, only its result).
    assert _eventually_stored(s3, running_service.settings.output_bucket, body["id"])


def _eventually_stored(s3, bucket: str, request_id: str) -> bool:
    for _ in range(100):
        listing = s3.list_objects_v2(Bucket=bucket, Prefix=f"results/{request_id}")
        if listing.get("KeyCount"):
            return [o["Key"] for o in listing["Contents"]] == [f"results/{request_id}.json"]
        time.sleep(0.1)
    return False
