"""Helpers for the batch-job tests: archives built in memory, polling, the CSV read back."""

from __future__ import annotations

import csv
import io
import tarfile
import time
import zipfile

import boto3
import requests


def zip_of(members: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return buffer.getvalue()


def tar_of(members: list[tuple[str, bytes]], links: tuple[str, ...] = ()) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name in links:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            archive.addfile(info)
    return buffer.getvalue()


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
