"""The consume loop against a real moto server, with a stand-in classifier (fast, unit level)."""

from __future__ import annotations

import json
import threading
import time

import pytest

from embedded.provision import provision
from runtime import keys
from runtime.keys import result_key
from runtime.messages import Request, Result
from runtime.settings import Settings
from worker.consumer import Consumer
from worker.visibility import VisibilityKeeper


class StubClassifier:
    name = "stub"

    def __init__(self):
        self.batches = []

    def prepare(self, image):
        return image

    def classify(self, tensors):
        self.batches.append(len(tensors))
        return [[(f"label-{t}", 0.9), ("other", 0.1)] for t in tensors]


def stub_decode(data: bytes) -> str:
    if data.startswith(b"BAD"):
        raise ValueError("truncated")
    return data.decode()


@pytest.fixture
def env(aws_client, request):
    name = f"c{abs(hash(request.node.nodeid)) % 10**8}"
    settings = Settings(
        input_bucket=f"{name}-in",
        output_bucket=f"{name}-out",
        request_queue=f"{name}-req",
        reply_queue_prefix=f"{name}-reply-",
        max_receive_count=2,
    )
    s3, sqs = aws_client("s3"), aws_client("sqs")
    urls = provision(settings, s3, sqs)
    reply_url = sqs.create_queue(QueueName=f"{name}-reply-1")["QueueUrl"]
    classifier = StubClassifier()
    consumer = Consumer(
        sqs=sqs,
        s3=s3,
        classifier=classifier,
        decode=stub_decode,
        queue_url=urls["request_queue_url"],
        input_bucket=settings.input_bucket,
        output_bucket=settings.output_bucket,
        reply_prefix=settings.reply_queue_prefix,
        wait_s=1,
    )
    return {
        "settings": settings,
        "s3": s3,
        "sqs": sqs,
        "urls": urls,
        "reply": reply_url,
        "consumer": consumer,
        "classifier": classifier,
    }


def send(env, index: int, data: bytes, deadline: float | None = None) -> Request:
    request_id = f"{index:032x}"
    request = Request.create(
        request_id,
        f"f{index}.jpg",
        env["reply"],
        deadline if deadline is not None else time.time() + 60,
    )
    env["s3"].put_object(Bucket=env["settings"].input_bucket, Key=request.key, Body=data)
    env["sqs"].send_message(QueueUrl=env["urls"]["request_queue_url"], MessageBody=request.encode())
    return request


def receive(env, queue_url: str) -> list[dict]:
    return (
        env["sqs"]
        .receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        .get("Messages", [])
    )


def depth(env, queue_url: str) -> int:
    attrs = env["sqs"].get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(
        attrs["ApproximateNumberOfMessagesNotVisible"]
    )


def drain_once(env) -> None:
    messages = env["consumer"]._receive()
    assert messages
    env["consumer"].process(messages)


def test_batch_is_classified_in_one_pass_stored_replied_and_deleted(env):
    for i in range(5):
        send(env, i, f"img{i}".encode())
    drain_once(env)
    assert env["classifier"].batches == [5]
    replies = [Result.decode(m["Body"]) for m in receive(env, env["reply"])]
    assert sorted(r.label for r in replies) == [f"label-img{i}" for i in range(5)]
    for reply in replies:
        key = result_key(reply.id)
        stored = json.loads(
            env["s3"].get_object(Bucket=env["settings"].output_bucket, Key=key)["Body"].read()
        )
        assert stored["label"] == reply.label
    assert depth(env, env["urls"]["request_queue_url"]) == 0


def test_undecodable_image_gets_an_error_reply_and_is_not_retried(env):
    send(env, 1, b"BAD bytes")
    drain_once(env)
    (reply,) = [Result.decode(m["Body"]) for m in receive(env, env["reply"])]
    assert not reply.ok and "truncated" in reply.error
    assert depth(env, env["urls"]["request_queue_url"]) == 0


def test_expired_request_is_skipped_without_work(env):
    send(env, 2, b"img", deadline=time.time() - 1)
    drain_once(env)
    assert env["classifier"].batches == [] and receive(env, env["reply"]) == []
    assert depth(env, env["urls"]["request_queue_url"]) == 0


def test_unparseable_message_ends_in_the_dlq(env):
    env["sqs"].send_message(QueueUrl=env["urls"]["request_queue_url"], MessageBody="{not json")
    for _ in range(4):  # maxReceiveCount is 2 here
        messages = env["consumer"]._receive()
        if messages:
            env["consumer"].process(messages)
    assert depth(env, env["urls"]["request_queue_url"]) == 0
    assert depth(env, env["urls"]["dead_letter_queue_url"]) == 1


def test_foreign_reply_queue_is_refused(env):
    request_id = "e" * 32
    body = Request.create(
        request_id,
        "x.jpg",
        "https://sqs.us-east-1.amazonaws.com/999999999999/attacker",
        time.time() + 60,
    ).encode()
    env["sqs"].send_message(QueueUrl=env["urls"]["request_queue_url"], MessageBody=body)
    drain_once(env)
    assert env["classifier"].batches == []


def test_duplicate_delivery_stores_one_result(env):
    request = send(env, 3, b"img3")
    env["sqs"].send_message(QueueUrl=env["urls"]["request_queue_url"], MessageBody=request.encode())
    for _ in range(2):
        messages = env["consumer"]._receive()
        if messages:
            env["consumer"].process(messages)
    listing = env["s3"].list_objects_v2(Bucket=env["settings"].output_bucket, Prefix=keys.RESULTS)
    assert [o["Key"] for o in listing["Contents"]] == [result_key(request.id)]


class SlowClassifier(StubClassifier):
    def classify(self, tensors):
        time.sleep(3.5)
        return super().classify(tensors)


def test_long_batch_keeps_its_messages_hidden(env):
    consumer = env["consumer"]
    consumer._classifier = SlowClassifier()
    queue_url = env["urls"]["request_queue_url"]
    consumer._keepers[queue_url] = VisibilityKeeper(env["sqs"], queue_url, timeout_s=2).start()
    env["sqs"].set_queue_attributes(QueueUrl=queue_url, Attributes={"VisibilityTimeout": "2"})
    send(env, 7, b"img7")
    messages = consumer._receive()
    stolen = []
    thief = threading.Thread(
        target=lambda: stolen.extend(
            env["sqs"].receive_message(QueueUrl=queue_url, WaitTimeSeconds=3).get("Messages", [])
        )
    )
    time.sleep(0.1)
    thief.start()
    consumer.process(messages)  # 3.5 s: past the 2 s timeout, so only extensions keep it hidden
    thief.join()
    assert stolen == []
    assert [Result.decode(m["Body"]).label for m in receive(env, env["reply"])] == ["label-img7"]


def test_run_pipelines_batches_and_stops_warm(env):
    for i in range(12):
        send(env, 10 + i, f"img{i}".encode())
    consumer = env["consumer"]
    consumer._batch_max = 4
    runner = threading.Thread(target=consumer.run)
    runner.start()
    deadline = time.monotonic() + 30
    while consumer.stats.images < 12 and time.monotonic() < deadline:
        time.sleep(0.05)
    consumer.request_stop()
    runner.join(timeout=30)
    assert not runner.is_alive()
    replies = []
    while batch := receive(env, env["reply"]):
        replies += [Result.decode(m["Body"]).label for m in batch]
    assert sorted(replies) == sorted(f"label-img{i}" for i in range(12))
    assert consumer.stats.images == 12 and sum(consumer.stats.batch_sizes.values()) >= 3
    assert depth(env, env["urls"]["request_queue_url"]) == 0


class BrokenClassifier(StubClassifier):
    def classify(self, tensors):
        raise RuntimeError("out of memory")


def test_model_fault_leaves_the_batch_for_redelivery(env):
    consumer = env["consumer"]
    consumer._classifier = BrokenClassifier()
    send(env, 40, b"img40")
    drain_once(env)
    assert receive(env, env["reply"]) == []
    assert depth(env, env["urls"]["request_queue_url"]) == 1  # not deleted
