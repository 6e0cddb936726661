"""The worker's pipeline on SQS and S3 (moto in this process): what the in-memory lanes of
test_worker_pipeline.py cannot show, the production Lanes against SQS's own rules (receipts,
visibility timeouts, redrive to the DLQ), driven through the production `run()` loop."""

from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager

import pytest

from embedded.provision import provision
from runtime import sqs as sqs_calls
from runtime.keys import result_key
from runtime.messages import Request, Result
from runtime.settings import Settings
from tests.support.waiting import wait_until
from worker.lanes import Lanes
from worker.pipeline import Pipeline


class StubClassifier:
    name = "stub"

    def __init__(self):
        self.started = threading.Event()

    def prepare(self, image):
        return image

    def classify(self, tensors):
        self.started.set()
        return [[(f"label-{t}", 0.9), ("other", 0.1)] for t in tensors]


@pytest.fixture
def env(in_process_aws, request):
    name = f"w{abs(hash(request.node.nodeid)) % 10**8}"
    settings = Settings(
        input_bucket=f"{name}-in",
        output_bucket=f"{name}-out",
        request_queue=f"{name}-req",
        reply_queue_prefix=f"{name}-reply-",
        max_receive_count=2,
    )
    s3, sqs = in_process_aws("s3"), in_process_aws("sqs")
    urls = provision(settings, s3, sqs)
    reply_url = sqs.create_queue(QueueName=f"{name}-reply-1")["QueueUrl"]
    return {"settings": settings, "s3": s3, "sqs": sqs, "urls": urls, "reply": reply_url}


@contextmanager
def running(env, classifier=None, visibility_timeout_s: int = 30):
    """The production pipeline on the env's queues, stopped warm on leaving the block."""
    lanes = Lanes(
        env["sqs"],
        env["urls"]["request_queue_url"],
        None,
        wait_s=1,
        visibility_timeout_s=visibility_timeout_s,
    )
    pipeline = Pipeline(
        lanes=lanes,
        s3=env["s3"],
        classifier=classifier or StubClassifier(),
        decode=bytes.decode,
        input_bucket=env["settings"].input_bucket,
        output_bucket=env["settings"].output_bucket,
        reply_prefix=env["settings"].reply_queue_prefix,
    )
    runner = threading.Thread(target=pipeline.run, name="pipeline")
    runner.start()
    try:
        yield pipeline
    finally:
        pipeline.request_stop()
        runner.join(timeout=30)
    assert not runner.is_alive()


def send(env, index: int, data: bytes) -> Request:
    request = Request.create(f"{index:032x}", f"f{index}.jpg", env["reply"], time.time() + 60)
    env["s3"].put_object(Bucket=env["settings"].input_bucket, Key=request.key, Body=data)
    env["sqs"].send_message(QueueUrl=env["urls"]["request_queue_url"], MessageBody=request.encode())
    return request


def replies(env) -> list[Result]:
    got = []
    while (
        batch := env["sqs"]
        .receive_message(QueueUrl=env["reply"], MaxNumberOfMessages=10)
        .get("Messages", [])
    ):
        got += [Result.decode(m["Body"]) for m in batch]
    return got


def depth(env, url_name: str) -> int:
    return sqs_calls.read_depth(env["sqs"], env["urls"][url_name]).total


def test_a_batch_is_stored_replied_and_deleted_on_sqs(env):
    requests = [send(env, i, f"img{i}".encode()) for i in range(5)]
    with running(env) as pipeline:
        wait_until(lambda: pipeline.stats.images == 5, "five images classified", 30, 0.05)
        wait_until(lambda: depth(env, "request_queue_url") == 0, "the requests deleted", 30, 0.05)
    assert sorted(r.label for r in replies(env)) == [f"label-img{i}" for i in range(5)]
    for request in requests:
        body = env["s3"].get_object(
            Bucket=env["settings"].output_bucket, Key=result_key(request.id)
        )["Body"]
        assert json.loads(body.read())["label"] == f"label-img{int(request.id, 16)}"


def test_unparseable_message_ends_in_the_dlq(env):
    env["sqs"].send_message(QueueUrl=env["urls"]["request_queue_url"], MessageBody="{not json")
    with running(env):
        # Released at once on each receive: the redrive moves it after maxReceiveCount (2).
        wait_until(lambda: depth(env, "dead_letter_queue_url") == 1, "the DLQ", 30, 0.1)
    assert depth(env, "request_queue_url") == 0


class SlowClassifier(StubClassifier):
    def classify(self, tensors):
        self.started.set()
        time.sleep(3.5)  # the model's work: longer than the 2 s visibility timeout
        return super().classify(tensors)


def test_long_batch_keeps_its_messages_hidden(env):
    queue_url = env["urls"]["request_queue_url"]
    env["sqs"].set_queue_attributes(QueueUrl=queue_url, Attributes={"VisibilityTimeout": "2"})
    send(env, 7, b"img7")
    classifier = SlowClassifier()
    with running(env, classifier, visibility_timeout_s=2) as pipeline:
        assert classifier.started.wait(30)  # received, and in the model
        # 3 s of looking, past the 2 s timeout: only the keeper's extensions keep it hidden.
        stolen = env["sqs"].receive_message(QueueUrl=queue_url, WaitTimeSeconds=3)
        wait_until(lambda: pipeline.stats.images == 1, "the slow batch finished", 30, 0.05)
    assert stolen.get("Messages", []) == []
    assert [r.label for r in replies(env)] == ["label-img7"]
