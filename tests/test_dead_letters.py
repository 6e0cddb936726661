"""Every item ends where its client looks (issue 26, finding 6): a job image or an asynchronous
upload whose every delivery died, or that a worker refuses, becomes a failed row of its job or
an error result at its id. Real moto over HTTP, real web and worker processes; the workers that
die hang in S3 (tests.faults.Stall) while they hold their message, then get SIGKILL."""

from __future__ import annotations

import signal

import requests

from tests.faults import Stall, wait_in_flight
from tests.http_client import variants
from tests.job_client import clients, post_archive, queue_depth, results, wait_done, zip_of
from tests.support.waiting import wait_until

ASYNC = {"Prefer": "respond-async"}


def _async_upload(url: str, name: str, data: bytes) -> str:
    response = requests.post(
        f"{url}/upload", files={"myfile": (name, data)}, headers=ASYNC, timeout=30
    )
    assert response.status_code == 202, response.text
    return response.json()["id"]


def _answered(url: str, request_id: str) -> dict | None:
    response = requests.get(f"{url}/results/{request_id}", timeout=10)
    return response.json() if response.status_code == 200 else None


def test_items_whose_every_delivery_is_killed_end_as_errors(service_factory):
    service = service_factory(MAX_RECEIVE_COUNT="1", VISIBILITY_TIMEOUT_S="3")
    url = service.start_web()  # no worker yet: both messages wait on their queues
    s3, sqs = clients(service)
    job = post_archive(url, zip_of(variants(2)[:1])).json()
    name, data = variants(2)[1]
    request_id = _async_upload(url, name, data)

    stall = Stall()
    try:
        # The upload's lane is read first, then the job's: one hung worker holds each, and
        # each is killed while it does (its only delivery: MAX_RECEIVE_COUNT is 1).
        for queue in (service.settings.request_queue, service.settings.job_queue):
            worker = service.start_worker(AWS_ENDPOINT_URL_S3=stall.url)
            wait_in_flight(sqs, sqs.get_queue_url(QueueName=queue)["QueueUrl"], limit_s=180)
            worker.send_signal(signal.SIGKILL)
            worker.wait(timeout=30)
    finally:
        stall.close()
    # A sound worker's receive finds both spent: SQS moves them to the DLQ, the web settles them.
    service.start_worker()

    answer = wait_until(lambda: _answered(url, request_id), "the async id's error", 180)
    assert "dead-lettered" in answer["error"] and not answer["label"], answer
    assert answer["filename"] == name
    progress = wait_done(url, job["id"], limit_s=180)
    assert (progress["total"], progress["done"], progress["failed"]) == (1, 0, 1)
    (row,) = results(url, job["id"])
    assert "dead-lettered" in row["error"] and not row["label"], row
    wait_until(lambda: queue_depth(sqs, service.settings.dead_letter_queue) == 0, "drain", 60)
    assert "dead letter" in service.log("web-0")


def test_job_images_a_worker_refuses_end_as_failed_rows(service_factory):
    """The web allows a prefix the worker does not (JOB_PREFIXES set on one host only): the
    worker refuses each image, and the job still finishes, every image a failed row."""
    service = service_factory()
    url = service.start_web(JOB_PREFIXES="albums")
    s3, _ = clients(service)
    for name, data in variants(3):
        s3.put_object(Bucket=service.settings.input_bucket, Key=f"albums/{name}", Body=data)
    accepted = requests.post(f"{url}/jobs", json={"prefix": "albums/"}, timeout=60)
    assert accepted.status_code == 202, accepted.text
    service.start_worker()  # JOB_PREFIXES unset here
    progress = wait_done(url, accepted.json()["id"], limit_s=240)
    assert (progress["done"], progress["failed"]) == (0, 3)
    rows = results(url, accepted.json()["id"])
    assert [r["filename"] for r in rows] == sorted(name for name, _ in variants(3))
    assert all("bad request" in r["error"] and "allowed prefix" in r["error"] for r in rows), rows
