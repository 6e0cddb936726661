"""The clients of the two new modes against the real service: --async, and classify DIR."""

from __future__ import annotations

import csv
import functools
import json
import shutil

import boto3
import pytest

from tests.conftest import IMAGES, photo_labels
from tests.support.loadgen import loadgen

# A job of every sample photo, end to end, takes minutes on a busy machine.
_loadgen = functools.partial(loadgen, timeout_s=400)


def test_loadgen_async_submits_then_polls(running_service):
    result = _loadgen(
        "--async",
        "--num_request", "18",
        "--url", running_service.webs[0] + "/upload",
        "--image_folder", str(IMAGES),
        "--expected", str(IMAGES / "labels.json"),
        "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["ok"] == 18 and not summary["errors"]
    assert summary["accuracy"] == {"correct": 18, "scored": 18, "ratio": 1.0}
    # Every request went the asynchronous way: a worker marked each one taken.
    s3 = boto3.client("s3", endpoint_url=running_service.env["AWS_ENDPOINT_URL"])
    listing = s3.list_objects_v2(Bucket=running_service.settings.output_bucket, Prefix="started/")
    assert listing["KeyCount"] == 18


def test_loadgen_classify_a_folder_as_a_job(running_service, tmp_path):
    folder = tmp_path / "photos"
    (folder / "nested").mkdir(parents=True)
    labels = photo_labels()
    for i, name in enumerate(labels):
        shutil.copy(IMAGES / name, folder / ("nested" if i % 2 else "") / name)
    (folder / "broken.jpg").write_bytes(b"not really a jpeg")
    out = tmp_path / "results.csv"
    result = _loadgen("classify", str(folder), "--url", running_service.webs[0], "--out", str(out))
    assert result.returncode == 3, result.stderr  # one image failed: a distinct exit status
    assert f"{len(labels)} classified, 1 failed" in result.stderr
    assert "classify" in result.stderr and "img" in result.stderr  # the progress bar
    with out.open(newline="") as handle:
        rows = {row["filename"]: row for row in csv.DictReader(handle)}
    assert "not an image" in rows.pop("broken.jpg")["error"]
    assert len(rows) == len(labels)
    for name, row in rows.items():
        assert row["label"] in labels[name.split("/")[-1]], row


@pytest.mark.e2e  # starts processes
def test_loadgen_classify_bad_input_is_one_line(tmp_path):
    missing = _loadgen("classify", str(tmp_path / "nope"), "--url", "http://127.0.0.1:9")
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1
    assert "not a folder" in missing.stderr
    (tmp_path / "a.jpg").write_bytes(b"x")
    unreachable = _loadgen("classify", str(tmp_path), "--url", "http://127.0.0.1:9")
    assert unreachable.returncode == 1 and "cannot reach" in unreachable.stderr
