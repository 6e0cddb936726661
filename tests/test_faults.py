"""Faults with the real processes: nothing accepted is lost, nobody gets someone else's answer."""

from __future__ import annotations

import json
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import boto3
import requests

from runtime import keys
from tests.faults import OutageProxy, wait_in_flight
from tests.http_client import upload, variants
from tests.support.waiting import wait_until


def _clients(service):
    kwargs = {"endpoint_url": service.env["AWS_ENDPOINT_URL"], "region_name": "us-east-1"}
    return boto3.client("s3", **kwargs), boto3.client("sqs", **kwargs)


def _stored(s3, bucket: str) -> dict[str, dict]:
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=keys.RESULTS):
        for item in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            out[item["Key"][8:-5]] = json.loads(body)
    return out


def _check_answers(images, answers, s3, service):
    """Every answer is 200, for its own image, and agrees with the one stored result. A worker
    replies while it stores (worker.stages.finish): one killed between the two leaves that result
    to the message's redelivery, a visibility timeout later, so the store is waited for."""
    bodies = []
    for (name, _), response in zip(images, answers, strict=True):
        assert response.status_code == 200, response.text
        bodies.append(response.json())
        assert bodies[-1]["filename"] == name
    answered = {body["id"] for body in bodies}

    def all_stored():
        stored = _stored(s3, service.settings.output_bucket)
        return stored if answered <= stored.keys() else None

    stored = wait_until(all_stored, "a stored result for every answer", timeout_s=90)
    for body in bodies:
        assert stored[body["id"]]["label"] == body["label"]


def _queued(sqs, queue_url: str) -> int:
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"])


def _warm(url):
    name, data = variants(1)[0]
    assert upload(url, data, name).status_code == 200


def test_worker_killed_mid_batch_loses_nothing(service_factory):
    service = service_factory(VISIBILITY_TIMEOUT_S="4", BATCH_MAX="8")
    urls = service.provision()
    s3, sqs = _clients(service)
    url = service.start_web()
    victim = service.start_worker()
    _warm(url)
    images = variants(24)
    with ThreadPoolExecutor(max_workers=24) as pool:
        futures = [pool.submit(upload, url, d, n, accept="application/json") for n, d in images]
        wait_in_flight(sqs, urls["request_queue_url"])
        victim.send_signal(signal.SIGKILL)
        service.start_worker()
        answers = [future.result() for future in futures]
    _check_answers(images, answers, s3, service)


def test_scale_in_during_load_loses_nothing(service_factory):
    service = service_factory(BATCH_MAX="4")
    urls = service.provision()
    s3, sqs = _clients(service)
    url = service.start_web()
    workers = [service.start_worker() for _ in range(3)]
    _warm(url)
    images = variants(60)
    with ThreadPoolExecutor(max_workers=10) as pool:
        futures = [pool.submit(upload, url, d, n, accept="application/json") for n, d in images]
        wait_in_flight(sqs, urls["request_queue_url"])  # the workers hold requests: scale in
        for worker in workers[:2]:
            worker.send_signal(signal.SIGTERM)
        answers = [future.result() for future in futures]
    assert [worker.wait(timeout=60) for worker in workers[:2]] == [0, 0]
    _check_answers(images, answers, s3, service)


def test_aws_outage_gives_503_then_recovers(service_factory, moto_endpoint):
    proxy = OutageProxy(int(moto_endpoint.rsplit(":", 1)[1]))
    try:
        service = service_factory(AWS_ENDPOINT_URL=proxy.url, RESULT_TIMEOUT_S="40")
        url = service.start_web()
        worker = service.start_worker()
        _warm(url)
        images = variants(40)

        def send(item):
            time.sleep(item[0] * 0.25)  # a steady stream across the outage
            name, data = item[1]
            return upload(url, data, name)

        with ThreadPoolExecutor(max_workers=40) as pool:
            futures = [pool.submit(send, item) for item in enumerate(images)]
            time.sleep(2.0)
            proxy.outage(5.0)
            results = [future.result() for future in futures]
        statuses = [response.status_code for response in results]
        assert set(statuses) <= {200, 503}, statuses
        assert 200 in statuses
        for response in results:
            if response.status_code == 503:
                assert int(response.headers["Retry-After"]) > 0
        # Recovered without a restart: the same processes answer new uploads.
        name, data = variants(1)[0]
        assert upload(url, data, name).status_code == 200
        assert worker.poll() is None and service.stack.dead() == []
    finally:
        proxy.close()


def test_web_restart_results_remain_readable(service_factory):
    service = service_factory(REPLY_QUEUE_MAX_AGE_S="3")
    urls = service.provision()
    _, sqs = _clients(service)
    first = service.start_web()
    images = variants(6)
    ids = [f"{i:02d}" + "c" * 30 for i in range(len(images))]

    def send(item):
        (name, data), request_id = item
        try:
            return upload(first, data, name, timeout=60, request_id=request_id)
        except requests.ConnectionError:
            return None

    with ThreadPoolExecutor(max_workers=6) as pool:
        pending = [pool.submit(send, item) for item in zip(images, ids, strict=True)]
        wait_until(
            lambda: _queued(sqs, urls["request_queue_url"]) == len(ids),
            "every request queued (no worker runs yet)",
        )
        service.stack.processes[0][1].send_signal(signal.SIGKILL)
        for future in pending:
            assert future.result() is None  # the client lost its connection
    orphan = [
        u for u in sqs.list_queues(QueueNamePrefix=service.settings.reply_queue_prefix)["QueueUrls"]
    ]
    assert len(orphan) == 1
    second = service.start_web()
    service.start_worker()
    deadline = time.monotonic() + 120
    found = {}
    while len(found) < len(ids) and time.monotonic() < deadline:
        for request_id in ids:
            response = requests.get(f"{second}/results/{request_id}", timeout=10)
            if response.status_code == 200:
                found[request_id] = response.json()
        time.sleep(0.5)
    assert set(found) == set(ids)
    for (name, _), request_id in zip(images, ids, strict=True):
        assert found[request_id]["filename"] == name and found[request_id]["label"]
    while time.monotonic() < deadline:
        left = sqs.list_queues(QueueNamePrefix=service.settings.reply_queue_prefix)["QueueUrls"]
        if orphan[0] not in left:
            break
        time.sleep(0.5)
    assert orphan[0] not in left and len(left) == 1


def test_backlog_limit_turns_uploads_away(service_factory):
    service = service_factory(MAX_BACKLOG="3", RESULT_TIMEOUT_S="5")
    url = service.start_web()  # no worker: the queue only grows
    images = variants(12)
    with ThreadPoolExecutor(max_workers=4) as pool:
        responses = list(pool.map(lambda item: upload(url, item[1], item[0]), images))
    statuses = [r.status_code for r in responses]
    assert 503 in statuses and set(statuses) <= {503, 504}
    busy = next(r for r in responses if r.status_code == 503)
    assert busy.headers["Retry-After"] and "too busy" in busy.text


def test_logs_hold_no_image_bytes_or_credentials(service_factory):
    secret = "Zx9" + "q" * 37
    service = service_factory(AWS_SECRET_ACCESS_KEY=secret, AWS_ACCESS_KEY_ID="AKIATESTKEYID123")
    url = service.start_web()
    service.start_worker()
    name, data = variants(1)[0]
    assert upload(url, data, name).status_code == 200
    service.stop()
    for log in service.stack.log_dir.glob("*.log"):
        text = log.read_text(errors="replace")
        assert secret not in text and "AKIATESTKEYID123" not in text
        assert data[200:232].hex() not in text and repr(data[200:232])[2:-1] not in text
