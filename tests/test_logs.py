"""Logs: one JSON object a line when LOG_FORMAT=json, and one request id followed across tiers.

Unit tests format real records and trace a real SQS client against moto over HTTP; the
end-to-end test uploads a real photo to a real web and worker and reads both processes' logs.
"""

from __future__ import annotations

import io
import json
import logging
import secrets
import sys
import time
import uuid

import pytest

from runtime.logs import JsonFormatter, current_request_id, setup_logging, trace_sqs
from runtime.messages import Request, Result
from tests.http_client import photos, upload


@pytest.fixture
def root_logger():
    """setup_logging configures the process's root logger: put it back afterwards."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    yield root
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    logging.captureWarnings(False)


def _record(msg: str, *args, exc_info=None, **extra) -> logging.LogRecord:
    record = logging.LogRecord("web", logging.INFO, __file__, 1, msg, args, exc_info)
    record.__dict__.update(extra)
    return record


def test_json_lines_carry_level_tier_logger_message_and_request_id():
    line = JsonFormatter({"tier": "web"}).format(
        _record("request %s queued", "a" * 32, request_id="a" * 32)
    )
    obj = json.loads(line)
    assert obj["level"] == "INFO" and obj["tier"] == "web" and obj["logger"] == "web"
    assert obj["msg"] == f"request {'a' * 32} queued" and obj["request_id"] == "a" * 32
    assert obj["ts"].endswith("Z") and "\n" not in line


def test_a_traceback_stays_inside_its_one_line():
    try:
        raise RuntimeError("boom\nsecond line")
    except RuntimeError:
        line = JsonFormatter({"tier": "worker"}).format(_record("failed", exc_info=sys.exc_info()))
    assert "\n" not in line
    obj = json.loads(line)
    assert "RuntimeError: boom" in obj["exc"] and "request_id" not in obj


def test_setup_logging_json_stamps_the_threads_request_id(root_logger, monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    setup_logging("json", tier="worker", fields={"instance": "i-1"})
    token = current_request_id.set("b" * 32)
    try:
        logging.getLogger("worker.pipeline").warning("while serving %d", 1)
    finally:
        current_request_id.reset(token)
    logging.getLogger("worker").info("idle")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["msg"] == "while serving 1" and first["request_id"] == "b" * 32
    assert first["instance"] == "i-1" and first["tier"] == "worker"
    assert "request_id" not in second


def test_setup_logging_text_keeps_the_readable_format(root_logger, monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    setup_logging("text", tier="web")
    logging.getLogger("web").info("serving")
    assert stream.getvalue().rstrip().endswith("web INFO serving")


def test_setup_logging_rejects_an_unknown_format(root_logger):
    with pytest.raises(ValueError, match="text|json"):
        setup_logging("xml", tier="web")


# ---- trace_sqs against a real SQS (moto over HTTP) --------------------------------------------


@pytest.fixture
def traced(aws_client, caplog):
    """A traced SQS client, a fresh queue, and a function that returns the new trace lines."""
    sqs = aws_client("sqs")
    url = sqs.create_queue(QueueName=f"trace-{uuid.uuid4().hex[:12]}")["QueueUrl"]
    trace_sqs(sqs, logging.getLogger("traced"))
    caplog.set_level(logging.INFO, logger="traced")

    def lines() -> list[tuple[str, str]]:
        out = [(r.getMessage(), r.request_id) for r in caplog.records if r.name == "traced"]
        caplog.clear()
        return out

    return sqs, url, lines


def _request(request_id: str) -> Request:
    return Request.create(
        request_id, "cat.jpg", "http://sqs/000/classifier-reply-x", time.time() + 60
    )


def test_a_sent_request_is_logged_as_queued_and_bound_to_the_thread(traced):
    sqs, url, lines = traced
    request_id = uuid.uuid4().hex
    token = current_request_id.set(None)
    try:
        sqs.send_message(QueueUrl=url, MessageBody=_request(request_id).encode())
        assert current_request_id.get() == request_id  # the web's answer line names it
    finally:
        current_request_id.reset(token)
    assert lines() == [(f"request {request_id} queued", request_id)]


def test_a_received_request_is_logged_with_its_delivery_count(traced):
    sqs, url, lines = traced
    request_id = uuid.uuid4().hex
    sqs.send_message(QueueUrl=url, MessageBody=_request(request_id).encode())
    sqs.send_message(QueueUrl=url, MessageBody="not ours")
    lines()
    sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["ApproximateReceiveCount"]
    )
    assert lines() == [(f"request {request_id} received (delivery 1)", request_id)]


def test_replies_are_logged_one_line_per_request_with_label_or_error(traced):
    sqs, url, lines = traced
    ok, bad = uuid.uuid4().hex, uuid.uuid4().hex
    results = [
        Result(id=ok, filename="a.jpg", label="tabby", top5=[{"label": "tabby", "score": 1.0}]),
        Result(id=bad, filename="b.jpg", error="cannot decode the image"),
    ]
    entries = [{"Id": str(i), "MessageBody": r.encode()} for i, r in enumerate(results)]
    sqs.send_message_batch(QueueUrl=url, Entries=entries)
    assert lines() == [
        (f"request {ok} replied ok: tabby", ok),
        (f"request {bad} replied error: cannot decode the image", bad),
    ]
    sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)
    assert sorted(lines()) == sorted(
        [
            (f"request {ok} reply received: ok: tabby", ok),
            (f"request {bad} reply received: error: cannot decode the image", bad),
        ]
    )


# ---- end to end: one upload followed through the web's and the worker's JSON logs -------------


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _wait_for_line(service, name: str, needle: str, timeout_s: float = 30.0) -> None:
    """The worker logs its reply right after sending it; give the line a moment to land."""
    deadline = time.monotonic() + timeout_s
    while needle not in service.log(name) and time.monotonic() < deadline:
        time.sleep(0.1)


def test_one_request_id_is_followed_from_web_to_worker_and_back(service_factory):
    secret = secrets.token_hex(16)  # moto takes any key; a real one must never reach a log
    service = service_factory(LOG_FORMAT="json", AWS_SECRET_ACCESS_KEY=secret)
    service.start_worker()
    url = service.start_web()
    name, data, accepted = photos()[0]
    response = upload(url, data, name, accept="application/json")
    assert response.status_code == 200, response.text
    request_id = response.json()["id"]
    _wait_for_line(service, "worker-0", f"request {request_id} replied")

    web, worker = _json_lines(service.log("web-0")), _json_lines(service.log("worker-0"))
    assert {line["tier"] for line in web} == {"web"}
    assert {line["tier"] for line in worker} == {"worker"}
    assert all({"ts", "level", "logger", "msg"} <= set(line) for line in web + worker)

    def about(lines: list[dict]) -> list[str]:
        return [line["msg"] for line in lines if line.get("request_id") == request_id]

    web_lines, worker_lines = about(web), about(worker)
    assert web_lines[0] == f"request {request_id} queued"
    assert web_lines[-1].startswith(f"request {request_id} answered 200 in ")
    assert worker_lines[0] == f"request {request_id} received (delivery 1)"
    label = response.json()["label"]
    assert label in accepted
    assert f"request {request_id} replied ok: {label}" in worker_lines
    assert {line["instance"] for line in worker if line.get("request_id") == request_id} == {
        "test-0"
    }

    raw = (service.stack.log_dir / "web-0.log").read_bytes()
    raw += (service.stack.log_dir / "worker-0.log").read_bytes()
    assert secret.encode() not in raw
    middle = len(data) // 2
    assert data[middle : middle + 32] not in raw  # no image bytes, raw or repr'd
    assert repr(data[middle : middle + 32])[2:-1].encode() not in raw
