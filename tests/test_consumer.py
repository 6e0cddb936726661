"""The consume loop against moto in this process, with a stand-in classifier (unit level)."""

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
from worker.consumer import STAGES, Consumer
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
def env(in_process_aws, request):
    name = f"c{abs(hash(request.node.nodeid)) % 10**8}"
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
    classifier = StubClassifier()

    def make_consumer(**extra) -> Consumer:
        return Consumer(
            sqs=sqs,
            s3=s3,
            classifier=classifier,
            decode=stub_decode,
            queue_url=urls["request_queue_url"],
            input_bucket=settings.input_bucket,
            output_bucket=settings.output_bucket,
            reply_prefix=settings.reply_queue_prefix,
            wait_s=1,
            **extra,
        )

    consumer = make_consumer()
    return {
        "make_consumer": make_consumer,
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


def test_every_stage_of_a_batch_counts_its_cpu_time(env):
    for i in range(3):
        send(env, i, f"img{i}".encode())
    drain_once(env)
    assert set(env["consumer"].stats.stage_cpu_s) == set(STAGES)
    assert all(seconds >= 0 for seconds in env["consumer"].stats.stage_cpu_s.values())


def test_results_name_the_worker_and_say_when_a_request_waited_for_its_start(env):
    early = send(env, 0, b"img0")  # queued while no worker was ready
    time.sleep(0.05)  # SentTimestamp has millisecond resolution
    consumer = env["make_consumer"](instance="i-0123456789abcdef0")  # model loaded: ready now
    time.sleep(0.05)
    late = send(env, 1, b"img1")
    consumer.process(consumer._receive())
    replies = {r.id: r for r in (Result.decode(m["Body"]) for m in receive(env, env["reply"]))}
    assert {r.instance for r in replies.values()} == {"i-0123456789abcdef0"}
    assert replies[early.id].timings_ms["worker_start"] == 1
    assert "worker_start" not in replies[late.id].timings_ms


def test_undecodable_image_gets_an_error_reply_and_is_not_retried(env):
    send(env, 1, b"BAD bytes")
    drain_once(env)
    (reply,) = [Result.decode(m["Body"]) for m in receive(env, env["reply"])]
    assert not reply.ok and "truncated" in reply.error
    assert depth(env, env["urls"]["request_queue_url"]) == 0


def test_request_past_its_deadline_is_stored_for_results_but_not_replied(env):
    # Its client got a 504 saying "GET /results/<id> later": the result must be there.
    request = send(env, 2, b"img2", deadline=time.time() - 1)
    drain_once(env)
    assert env["classifier"].batches == [1] and receive(env, env["reply"]) == []
    key = result_key(request.id)
    body = env["s3"].get_object(Bucket=env["settings"].output_bucket, Key=key)["Body"].read()
    assert json.loads(body)["label"] == "label-img2"
    assert depth(env, env["urls"]["request_queue_url"]) == 0


def test_unparseable_message_ends_in_the_dlq(env):
    env["sqs"].send_message(QueueUrl=env["urls"]["request_queue_url"], MessageBody="{not json")
    for _ in range(4):  # maxReceiveCount is 2 here
        messages = env["consumer"]._receive()
        if messages:
            env["consumer"].process(messages)
    assert depth(env, env["urls"]["request_queue_url"]) == 0
    assert depth(env, env["urls"]["dead_letter_queue_url"]) == 1


@pytest.mark.parametrize(
    "reply_to",
    [
        "https://sqs.us-east-1.amazonaws.com/999999999999/attacker",
        # Issue 11 finding 9: the right name prefix in another account is not ours (another
        # host is not trusted either: the reply would go to this endpoint; test_messages).
        "{base}/999999999999/{prefix}x",
    ],
)
def test_foreign_reply_queue_is_refused(env, reply_to):
    request_id = "e" * 32
    base = env["urls"]["request_queue_url"].rsplit("/", 2)[0]
    body = Request.create(
        request_id,
        "x.jpg",
        reply_to.format(prefix=env["settings"].reply_queue_prefix, base=base),
        time.time() + 60,
    ).encode()
    bucket = env["settings"].input_bucket
    env["s3"].put_object(Bucket=bucket, Key=f"uploads/{request_id}", Body=b"x")
    env["sqs"].send_message(QueueUrl=env["urls"]["request_queue_url"], MessageBody=body)
    drain_once(env)
    assert env["classifier"].batches == []  # refused before any work, nothing sent anywhere


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


def _crafted_bodies(env) -> list[str]:
    """Issue 11 finding 3: bodies whose parsing raised something other than MessageError."""
    sound = json.loads(send_body(env, 90))
    huge_deadline = json.dumps(sound).replace(
        json.dumps(sound["deadline"]), "1" + "0" * 400
    )  # 10**400: float() overflows
    return [huge_deadline, "[" * 200_000 + "]" * 200_000, '{"v": 1, "deadline": NaN}']


def send_body(env, index: int) -> str:
    request_id = f"{index:032x}"
    return Request(
        id=request_id,
        key=f"uploads/{request_id}",
        filename=f"f{index}.jpg",
        reply_to=env["reply"],
        deadline=time.time() + 60,
    ).encode()


def test_crafted_messages_fail_alone_and_the_batch_is_classified(env):
    queue_url = env["urls"]["request_queue_url"]
    for body in _crafted_bodies(env):
        env["sqs"].send_message(QueueUrl=queue_url, MessageBody=body)
    good = [send(env, i, f"img{i}".encode()) for i in range(4)]
    messages = []
    while len(messages) < 7:
        messages += env["consumer"]._receive()
    env["consumer"].process(messages)  # one batch: 3 crafted + 4 sound
    assert env["classifier"].batches == [4]
    replies = {r.id: r for r in map(Result.decode, (m["Body"] for m in receive(env, env["reply"])))}
    assert all(replies[request.id].ok for request in good)
    # The overflowing deadline still names an id and a reply queue: its client hears why.
    assert "out of range" in replies[f"{90:032x}"].error
    stats = env["consumer"].stats
    assert stats._in_hand == 0 and stats.busy_s > 0  # the busy clock stopped


def test_the_worker_refuses_an_image_over_the_decoded_size_limit(env):
    """Issue 11 finding 6: the worker decoded without the pixel limit; a request put on the
    queue behind the web tier's back must not make it allocate a gigabyte."""
    from tests.big_images import png16
    from worker.budget import DecodeBudget
    from worker.imaging import decode

    consumer = env["consumer"]
    consumer._decode = decode
    consumer._budget = DecodeBudget(2**30, Settings().max_pixels)
    send(env, 5, png16(6300, 6300))
    drain_once(env)
    (reply,) = [Result.decode(m["Body"]) for m in receive(env, env["reply"])]
    assert "more than the 114 MiB allowed" in reply.error
    assert env["classifier"].batches == []


def test_an_upload_carried_inline_is_classified_without_a_get(env):
    """Issue 13: a small upload rides in its message; the worker classifies those bytes and
    reports their hash, and fetches only what is not inline."""
    import hashlib

    carried = Request.create(f"{7:032x}", "f7.jpg", env["reply"], time.time() + 60)
    env["s3"].put_object(Bucket=env["settings"].input_bucket, Key=carried.key, Body=b"stored-copy")
    env["sqs"].send_message(
        QueueUrl=env["urls"]["request_queue_url"],
        MessageBody=carried.with_inline(b"inline-copy", max_bytes=1024).encode(),
    )
    plain = send(env, 8, b"fetched")
    gets = []
    env["s3"].meta.events.register(
        "before-call.s3.GetObject", lambda params, **_: gets.append(params["url_path"])
    )
    messages = []
    while len(messages) < 2:
        messages += env["consumer"]._receive()
    env["consumer"].process(messages)
    replies = {r.id: r for r in map(Result.decode, (m["Body"] for m in receive(env, env["reply"])))}
    # The stand-in decoder returns the bytes as text: the label says which copy was classified.
    assert replies[carried.id].label == "label-inline-copy"
    assert replies[carried.id].sha256 == hashlib.sha256(b"inline-copy").hexdigest()
    assert replies[plain.id].label == "label-fetched"
    assert len(gets) == 1 and gets[0].endswith(plain.key)
