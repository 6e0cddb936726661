"""web.jobs.store.JobStore's own rules with stub clients (unit level): the CSV it writes, what it
answers when AWS fails, what a failed creation leaves behind."""

from __future__ import annotations

import csv
import datetime
import io
import json
import time
import zipfile

import falcon.testing
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from runtime.keys import job_item_key, job_prefix
from runtime.messages import Result, new_request_id
from runtime.settings import Settings
from web.app import create_app
from web.guards import Backlog
from web.jobs.store import JobLimits, JobStore, _csv_line


def _cell(value: str) -> str:
    (row,) = csv.reader(io.StringIO(_csv_line([value]).decode()))
    return row[0]


@pytest.mark.parametrize(
    "name",
    [
        "=1+1",
        "@SUM(A1)",
        "\t=1",
        " =1+1",  # a leading space
        "\u00a0=1+1",  # NBSP
        "\u2003+1",  # an em space
        "\u3000-1",  # the ideographic space
        "\uff1dHYPERLINK(1)",  # full-width '='
        "\u200b\uff20x",  # zero-width space, then full-width '@'
    ],
)
def test_a_name_that_starts_like_a_formula_is_neutralised(name):
    assert _cell(name) == "'" + name


@pytest.mark.parametrize("name", ["cat.jpg", "a=b.jpg", " cat.jpg", "\uff43at.jpg", "", "1-2.jpg"])
def test_other_names_are_left_alone(name):
    assert _cell(name) == name


class JobS3:
    """The S3 calls JobStore makes, in memory; `failing` keys (or every key, `down`) raise
    what boto3 raises when S3 does not answer."""

    def __init__(self):
        self.objects: dict[tuple[str, str], bytes] = {}
        self.failing: set[str] = set()
        self.down = False

    def _check(self, key: str = "") -> None:
        if self.down or key in self.failing:
            raise EndpointConnectionError(endpoint_url="http://s3.invalid")

    def get_object(self, *, Bucket, Key):  # noqa: N803 - boto3's names
        self._check(Key)
        if (Bucket, Key) not in self.objects:
            raise ClientError({"Error": {"Code": "NoSuchKey", "Message": Key}}, "GetObject")
        return {"Body": io.BytesIO(self.objects[Bucket, Key])}

    def put_object(self, *, Bucket, Key, Body, **_):  # noqa: N803
        self._check(Key)
        self.objects[Bucket, Key] = Body

    def delete_objects(self, *, Bucket, Delete):  # noqa: N803
        for obj in Delete["Objects"]:
            self.objects.pop((Bucket, obj["Key"]), None)

    def get_paginator(self, name):
        assert name == "list_objects_v2"
        return self

    def paginate(self, *, Bucket, Prefix):  # noqa: N803
        self._check()
        now = datetime.datetime.now(datetime.UTC)
        found = sorted(k for b, k in self.objects if b == Bucket and k.startswith(Prefix))
        yield {"Contents": [{"Key": k, "Size": 1, "LastModified": now} for k in found]}


JOB = "c" * 32


class FailingSQS:
    """SendMessageBatch that succeeds `good` times, then fails as an SQS outage does."""

    def __init__(self, good: int):
        self.good, self.sent = good, []

    def send_message_batch(self, *, QueueUrl, Entries):  # noqa: N803
        if len(self.sent) >= self.good:
            raise EndpointConnectionError(endpoint_url="http://sqs.invalid")
        self.sent.append(Entries)
        return {"Successful": [{"Id": e["Id"]} for e in Entries]}


def _store(s3: JobS3, images: int, sqs=None, backlog=None, accepted=lambda: None) -> JobStore:
    """A job of `images` finished images, all classified."""
    s3.objects["out", f"{job_prefix(JOB)}job.json"] = json.dumps(
        {"id": JOB, "created": time.time(), "source": "archive", "total": images, "rejected": 0}
    ).encode()
    for index in range(images):
        result = Result(id=new_request_id(), filename=f"{index}.jpg", label="tabby")
        s3.objects["out", job_item_key(JOB, index, True)] = result.encode().encode()
    return JobStore(
        s3=s3,
        sqs=sqs,
        input_bucket="in",
        output_bucket="out",
        job_queue_url="",
        limits=JobLimits(100, 1000),
        check_image=lambda data: "",
        deadline_s=60,
        backlog=backlog,
        accepted=accepted,
    )


def _client(store: JobStore, **settings) -> falcon.testing.TestClient:
    app = create_app(
        Settings(**settings), gateway=None, ready=lambda: None, status=dict, jobs=store
    )
    return falcon.testing.TestClient(app)


@pytest.mark.parametrize("path", [f"/jobs/{JOB}", f"/jobs/{JOB}/results.csv"])
def test_job_endpoints_answer_503_with_retry_after_when_s3_is_away(path):
    """Issue 26, finding 9: a bare 500."""
    s3 = JobS3()
    client = _client(_store(s3, 3))
    s3.down = True
    response = client.simulate_get(path)
    assert response.status_code == 503 and response.headers["Retry-After"]
    assert "could not read the job" in response.text and "Traceback" not in response.text


def test_a_result_that_cannot_be_read_is_a_503_or_a_row_never_missing():
    """Issue 26, finding 9: results.csv dropped the row and still answered 200."""
    s3 = JobS3()
    images = 150  # past the first chunk of rows, which is read before the answer starts
    client = _client(_store(s3, images))
    s3.failing = {job_item_key(JOB, 1, True)}
    early = client.simulate_get(f"/jobs/{JOB}/results.csv")
    assert early.status_code == 503 and early.headers["Retry-After"], early.text

    s3.failing = {job_item_key(JOB, images - 1, True)}  # read after the 200 went out
    late = client.simulate_get(f"/jobs/{JOB}/results.csv")
    assert late.status_code == 200
    rows = list(csv.DictReader(io.StringIO(late.text)))
    assert len(rows) == images
    assert [r["filename"] for r in rows[:-1]] == [f"{i}.jpg" for i in range(images - 1)]
    assert "could not be read" in rows[-1]["error"] and not rows[-1]["label"], rows[-1]


def test_a_job_that_cannot_be_queued_whole_leaves_nothing_behind():
    """Issue 26, finding 7: one SendMessageBatch failing midway answered 503 while the staged
    inputs, the refused rows and the manifest stayed, and the job never finished."""
    s3, sqs = JobS3(), FailingSQS(good=1)
    client = _client(_store(s3, 0, sqs))
    s3.objects.clear()
    members = [(f"{i}.jpg", b"image %d" % i) for i in range(15)] + [("../escape.jpg", b"x")]
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        for name, data in members:
            zf.writestr(name, data)
    response = client.simulate_post(
        "/jobs", body=archive.getvalue(), headers={"Content-Type": "application/zip"}
    )
    assert response.status_code == 503 and response.headers["Retry-After"], response.text
    assert "Location" not in response.headers  # no job to follow
    assert len(sqs.sent) == 1  # the first batch went out before the failure
    assert [key for _, key in s3.objects] == []  # no staged input, refused row or manifest


class DeepQueue:
    """A job lane that already holds `visible` images; records what is sent to it."""

    def __init__(self, visible: int):
        self.visible, self.sent = visible, []

    def get_queue_attributes(self, *, QueueUrl, AttributeNames):  # noqa: N803
        return {"Attributes": {"ApproximateNumberOfMessages": str(self.visible)}}

    def send_message_batch(self, *, QueueUrl, Entries):  # noqa: N803
        self.sent.append(Entries)
        return {"Successful": [{"Id": e["Id"]} for e in Entries]}


def _zip(count: int) -> bytes:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        for i in range(count):
            zf.writestr(f"{i}.jpg", b"image %d" % i)
    return archive.getvalue()


def test_jobs_past_their_own_backlog_get_503_with_retry_after():
    """Issue 26, finding 11: MAX_BACKLOG guarded uploads only; jobs queued without a bound."""
    queue = DeepQueue(visible=51)
    client = _client(
        _store(JobS3(), 0, queue, Backlog(queue, "jobs", limit=50, ttl_s=0, what="job images"))
    )
    zip_body = {"body": _zip(3), "headers": {"Content-Type": "application/zip"}}
    refused = client.simulate_post("/jobs", **zip_body)
    assert refused.status_code == 503 and refused.headers["Retry-After"], refused.text
    assert "51 job images are waiting (limit 50)" in refused.text
    queue.visible = 49
    assert client.simulate_post("/jobs", **zip_body).status_code == 202
    assert len(queue.sent) == 1


def test_jobs_are_rate_limited_per_api_key():
    """Issue 26, finding 11: 20 requests of 21 bytes queued 100 job messages."""
    queue = DeepQueue(visible=0)
    client = _client(_store(JobS3(), 0, queue), job_rate_per_min=2, api_key="k")
    zip_body = {"body": _zip(1), "headers": {"Content-Type": "application/zip", "X-Api-Key": "k"}}
    answers = [client.simulate_post("/jobs", **zip_body) for _ in range(3)]
    assert [a.status_code for a in answers] == [202, 202, 429]
    assert int(answers[2].headers["Retry-After"]) >= 1
    assert "more than 2 jobs a minute" in answers[2].text
    assert len(queue.sent) == 2  # the refused job queued nothing


def test_a_refused_job_does_not_count_against_the_rate():
    client = _client(_store(JobS3(), 0, DeepQueue(visible=0)), job_rate_per_min=1)
    bad = {"body": b"not an archive", "headers": {"Content-Type": "application/zip"}}
    assert [client.simulate_post("/jobs", **bad).status_code for _ in range(3)] == [400] * 3
    good = {"body": _zip(1), "headers": {"Content-Type": "application/zip"}}
    assert [client.simulate_post("/jobs", **good).status_code for _ in range(2)] == [202, 429]


def test_a_queued_job_wakes_the_scaler_once_and_a_failed_one_never():
    """Issue 25 item 3: the web tells the scaler beside it of each accepted job (runtime.wake)."""
    for good, wakes in ((100, 1), (0, 0)):
        told = []
        s3 = JobS3()
        client = _client(_store(s3, 0, FailingSQS(good=good), accepted=lambda: told.append(1)))  # noqa: B023
        archive = io.BytesIO()
        with zipfile.ZipFile(archive, "w") as zf:
            for i in range(3):
                zf.writestr(f"{i}.jpg", b"image %d" % i)
        response = client.simulate_post(
            "/jobs", body=archive.getvalue(), headers={"Content-Type": "application/zip"}
        )
        assert response.status_code == (202 if good else 503), response.text
        assert len(told) == wakes
