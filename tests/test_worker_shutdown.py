"""SIGTERM mid-batch: the worker finishes what it holds, gives back the rest, and exits 0."""

from __future__ import annotations

import signal
from concurrent.futures import ThreadPoolExecutor

import boto3

from tests.faults import wait_in_flight
from tests.http_client import stem, stem_and_label, upload, variants
from tests.support.waiting import wait_until


def test_sigterm_mid_batch_loses_nothing(service_factory):
    service = service_factory(BATCH_MAX="4")
    urls = service.provision()
    sqs = boto3.client("sqs", endpoint_url=service.env["AWS_ENDPOINT_URL"], region_name="us-east-1")
    url = service.start_web()
    first = service.start_worker()
    # The first worker must be ready (model loaded) before the burst, so it is mid-batch.
    name, data = variants(1)[0]
    assert upload(url, data, name).status_code == 200
    images = variants(30)
    with ThreadPoolExecutor(max_workers=30) as pool:
        futures = [pool.submit(upload, url, data, name) for name, data in images]
        wait_in_flight(sqs, urls["request_queue_url"])
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=60) == 0
        service.start_worker()  # the rest is answered by a successor
        answers = [future.result() for future in futures]
    for (name, _), response in zip(images, answers, strict=True):
        assert response.status_code == 200, response.text
        assert stem_and_label(response.text)[0] == stem(name)
    assert "finishing the batch in hand" in service.log("worker-0")


def test_sigterm_while_loading_the_model_exits_cleanly(service_factory):
    service = service_factory()
    worker = service.start_worker()
    wait_until(lambda: "loading model" in service.log("worker-0"), "the model loading", 60, 0.02)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=120) == 0
    assert "stopped before it started" in service.log("worker-0")  # the signal came mid-load
