"""worker.pipeline and worker.stages at unit level: the production `run()` loop over in-memory
lanes and S3 (tests/support), with a stand-in classifier. SQS itself: test_worker_sqs.py."""

from __future__ import annotations

import hashlib
import json
import threading
import time

import pytest

from runtime import keys
from runtime.keys import result_key
from runtime.messages import Request, Result
from runtime.settings import Settings
from tests.support.stub_lanes import ACCOUNT_URL, StubLanes, drain
from tests.support.stub_s3 import StubS3
from worker.pipeline import Pipeline
from worker.stages import Stages
from worker.stats import STAGES

INPUT, OUTPUT, PREFIX = "stub-in", "stub-out", "stub-reply-"
REPLY = f"{ACCOUNT_URL}/{PREFIX}1"
NOW = 1_800_000_000.0  # the pipeline's clock: deadlines and "ready since" are read from it
BURN_S = 0.03  # CPU seconds the stand-in decoder spends on each image


class StubClassifier:
    name = "stub"
    version = "1"

    def __init__(self, name: str = "stub"):
        self.name = name
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


def burning_decode(data: bytes) -> str:
    """Spends BURN_S of this thread's CPU: the stage that runs it must be the one charged."""
    started = time.thread_time()
    while time.thread_time() - started < BURN_S:
        hashlib.sha256(data).digest()
    return stub_decode(data)


class World:
    """The pipeline's surroundings: lanes, S3, a classifier."""

    def __init__(self, max_receive_count: int | None = None):
        self.lanes = StubLanes(max_receive_count=max_receive_count)
        self.s3 = StubS3()
        self.classifier = StubClassifier()

    def pipeline(self, **overrides) -> Pipeline:
        options = {
            "lanes": self.lanes,
            "s3": self.s3,
            "classifier": self.classifier,
            "decode": stub_decode,
            "input_bucket": INPUT,
            "output_bucket": OUTPUT,
            "reply_prefix": PREFIX,
            "clock": lambda: NOW,
            **overrides,
        }
        return Pipeline(**options)

    def drain(self, **overrides) -> Pipeline:
        pipeline = self.pipeline(**overrides)
        drain(pipeline, self.lanes)
        assert self.lanes.unknown_receipts == []
        return pipeline

    def send(
        self, index: int, data: bytes, deadline: float = NOW + 60, model: str = "", **options
    ) -> Request:
        request = Request.create(f"{index:032x}", f"f{index}.jpg", REPLY, deadline, model=model)
        self.s3.objects[INPUT, request.key] = data
        self.lanes.send(request.encode(), **options)
        return request

    def replies(self) -> dict[str, Result]:
        return {r.id: r for r in map(Result.decode, self.lanes.replies[REPLY])}

    def stored(self, request: Request) -> dict:
        return json.loads(self.s3.objects[OUTPUT, result_key(request.id)])


@pytest.fixture
def world() -> World:
    return World(max_receive_count=2)


def test_requests_for_different_models_never_share_a_forward_pass(world):
    from worker.served import Served

    other = StubClassifier("catdog")
    models = ["", "catdog", "stub", "catdog", "", "nosuch"]
    requests = [world.send(i, f"img{i}".encode(), model=m) for i, m in enumerate(models)]
    world.drain(others={"catdog": Served(other, lambda data: f"cd-{data.decode()}")})
    # One pass per model; "" and the default's own name are the default model.
    assert world.classifier.batches == [3] and other.batches == [2]
    replies = world.replies()
    for request, model in zip(requests[:5], models, strict=False):
        reply = replies[request.id]
        assert reply.model == (model or "stub") and reply.version == "1"
        assert reply.label.startswith("label-cd-") == (model == "catdog")
    unknown = replies[requests[5].id]
    assert unknown.error == "model 'nosuch' is not served here (this worker serves stub, catdog)"
    assert world.lanes.visible() == [] and world.lanes.in_flight() == []


def test_batch_is_classified_in_one_pass_stored_replied_and_deleted(world):
    requests = [world.send(i, f"img{i}".encode()) for i in range(5)]
    world.drain()
    assert world.classifier.batches == [5]
    replies = world.replies()
    assert sorted(r.label for r in replies.values()) == [f"label-img{i}" for i in range(5)]
    for request in requests:
        assert world.stored(request)["label"] == replies[request.id].label
    assert len(world.lanes.deleted[world.lanes.interactive_url]) == 5
    assert world.lanes.in_flight() == [] and world.lanes.held == set()


def test_every_stage_of_a_batch_is_charged_the_cpu_its_own_work_spent(world):
    for i in range(3):
        world.send(i, f"img{i}".encode())
    stats = world.drain(decode=burning_decode).stats
    assert set(stats.stage_cpu_s) == set(STAGES)
    assert all(seconds > 0 for seconds in stats.stage_cpu_s.values()), stats.stage_cpu_s
    # The decoder's CPU is the decode stage's, and no other stage's.
    assert stats.stage_cpu_s["decode"] >= 3 * BURN_S
    assert all(stats.stage_cpu_s[s] < BURN_S for s in STAGES if s != "decode"), stats.stage_cpu_s


def test_each_stage_is_a_method_named_as_stages_names_it():
    assert all(callable(getattr(Stages, name, None)) for name in STAGES)


def test_results_name_the_worker_and_say_when_a_request_waited_for_its_start(world):
    early = world.send(0, b"img0", sent_at=NOW - 1)  # queued before the worker was ready
    late = world.send(1, b"img1", sent_at=NOW + 1)
    world.drain(instance="i-0123456789abcdef0")  # ready at NOW
    replies = world.replies()
    assert {r.instance for r in replies.values()} == {"i-0123456789abcdef0"}
    assert replies[early.id].timings_ms["worker_start"] == 1
    assert "worker_start" not in replies[late.id].timings_ms


def test_undecodable_image_gets_an_error_reply_and_is_not_retried(world):
    world.send(1, b"BAD bytes")
    world.drain()
    (reply,) = world.replies().values()
    assert not reply.ok and "truncated" in reply.error
    assert world.lanes.in_flight() == [] and world.lanes.visible() == []


def test_a_vanished_upload_is_answered_not_retried(world):
    request = world.send(3, b"img3")
    del world.s3.objects[INPUT, request.key]
    world.drain()
    assert world.replies()[request.id].error == "the uploaded image is gone"
    assert world.lanes.in_flight() == []


def test_request_past_its_deadline_is_stored_for_results_but_not_replied(world):
    # Its client got a 504 saying "GET /results/<id> later": the result must be there.
    request = world.send(2, b"img2", deadline=NOW - 1)
    world.drain()
    assert world.classifier.batches == [1] and world.lanes.replies == {}
    assert world.stored(request)["label"] == "label-img2"
    assert world.lanes.in_flight() == []


def test_unparseable_message_is_released_until_it_ends_in_the_dlq(world):
    world.lanes.send("{not json")
    world.drain()
    assert world.lanes.dead == ["{not json"]  # received twice (maxReceiveCount), then dead
    assert world.lanes.deleted == {} and world.lanes.replies == {}


@pytest.mark.parametrize(
    "reply_to",
    [
        "https://sqs.us-east-1.amazonaws.com/999999999999/attacker",
        # Issue 11 finding 9: the right name prefix in another account is not ours (another
        # host is not trusted either: the reply would go to this endpoint; test_messages).
        f"https://sqs.us-east-1.amazonaws.com/999999999999/{PREFIX}x",
    ],
)
def test_foreign_reply_queue_is_refused(world, reply_to):
    request = Request.create("e" * 32, "x.jpg", reply_to, NOW + 60)
    world.s3.objects[INPUT, request.key] = b"x"
    world.lanes.send(request.encode())
    world.drain()
    # Refused before any work, nothing sent anywhere: left for the DLQ.
    assert world.classifier.batches == [] and world.lanes.replies == {}
    assert world.s3.gets == [] and world.lanes.dead == [request.encode()]


def test_duplicate_delivery_stores_one_result(world):
    request = world.send(3, b"img3")
    world.lanes.send(request.encode())  # SQS delivers it a second time
    world.drain()
    assert world.s3.keys(OUTPUT, keys.RESULTS) == [result_key(request.id)]


def test_run_pipelines_batches_and_stops_warm(world):
    for i in range(12):
        world.send(10 + i, f"img{i}".encode())
    pipeline = world.drain(batch_max=4)
    labels = sorted(r.label for r in world.replies().values())
    assert labels == sorted(f"label-img{i}" for i in range(12))
    assert world.classifier.batches == [4, 4, 4]
    assert pipeline.stats.images == 12 and pipeline.stats.batch_sizes == {4: 3}
    assert world.lanes.in_flight() == [] and world.lanes.visible() == []


class GatedClassifier(StubClassifier):
    """Holds its first batch in the model until the test lets it go."""

    def __init__(self):
        super().__init__()
        self.entered, self.go = threading.Event(), threading.Event()

    def classify(self, tensors):
        self.entered.set()
        assert self.go.wait(30)
        return super().classify(tensors)


def test_a_warm_stop_finishes_the_batch_in_the_model_and_gives_back_what_it_did_not_start():
    world = World()
    world.classifier = GatedClassifier()
    requests = [world.send(i, f"img{i}".encode()) for i in range(2)]
    pipeline = world.pipeline(batch_max=1)
    runner = threading.Thread(target=pipeline.run)
    runner.start()
    assert world.classifier.entered.wait(30)  # the first request is in the model
    pipeline.request_stop()
    world.classifier.go.set()
    runner.join(30)
    assert not runner.is_alive()
    answered = world.replies()
    assert requests[0].id in answered  # the batch in hand was finished
    # The other one was either finished too (decoded before the stop) or given back at once.
    assert (requests[1].id in answered) != (world.lanes.visible() == [requests[1].encode()])
    assert world.lanes.in_flight() == [] and world.lanes.held == set()


class BrokenClassifier(StubClassifier):
    def classify(self, tensors):
        raise RuntimeError("out of memory")


def test_model_fault_leaves_the_batch_for_redelivery(world):
    request = world.send(40, b"img40")
    world.drain(classifier=BrokenClassifier())
    assert world.lanes.replies == {} and world.lanes.deleted == {}
    assert world.lanes.in_flight() == [request.encode()]  # not deleted: back after its timeout


def _crafted_bodies() -> list[str]:
    """Issue 11 finding 3: bodies whose parsing raised something other than MessageError."""
    sound = json.loads(
        Request(
            id=f"{90:032x}",
            key=f"uploads/{90:032x}",
            filename="f90.jpg",
            reply_to=REPLY,
            deadline=NOW + 60,
        ).encode()
    )
    huge_deadline = json.dumps(sound).replace(
        json.dumps(sound["deadline"]), "1" + "0" * 400
    )  # 10**400: float() overflows
    return [huge_deadline, "[" * 200_000 + "]" * 200_000, '{"v": 1, "deadline": NaN}']


def test_crafted_messages_fail_alone_and_the_batch_is_classified(world):
    for body in _crafted_bodies():
        world.lanes.send(body)
    good = [world.send(i, f"img{i}".encode()) for i in range(4)]
    stats = world.drain().stats  # one batch: 3 crafted + 4 sound
    assert world.classifier.batches == [4]
    replies = world.replies()
    assert all(replies[request.id].ok for request in good)
    # The overflowing deadline still names an id and a reply queue: its client hears why.
    assert "out of range" in replies[f"{90:032x}"].error
    assert len(world.lanes.dead) == 2  # nobody to tell: left for the DLQ
    assert stats.in_hand == 0 and stats.busy_s > 0  # the busy clock stopped


def test_the_worker_refuses_an_image_over_the_decoded_size_limit(world):
    """Issue 11 finding 6: the worker decoded without the pixel limit; a request put on the
    queue behind the web tier's back must not make it allocate a gigabyte."""
    from tests.big_images import png16
    from worker.imaging import DecodeBudget, decode

    world.send(5, png16(6300, 6300))
    world.drain(decode=decode, budget=DecodeBudget(2**30, Settings().max_pixels))
    (reply,) = world.replies().values()
    assert "more than the 114 MiB allowed" in reply.error
    assert world.classifier.batches == []


def test_an_upload_carried_inline_is_classified_without_a_get(world):
    """Issue 13: a small upload rides in its message; the worker classifies those bytes and
    reports their hash, and fetches only what is not inline."""
    carried = Request.create(f"{7:032x}", "f7.jpg", REPLY, NOW + 60)
    world.s3.objects[INPUT, carried.key] = b"stored-copy"
    world.lanes.send(carried.with_inline(b"inline-copy", max_bytes=1024).encode())
    plain = world.send(8, b"fetched")
    world.drain()
    replies = world.replies()
    # The stand-in decoder returns the bytes as text: the label says which copy was classified.
    assert replies[carried.id].label == "label-inline-copy"
    assert replies[carried.id].sha256 == hashlib.sha256(b"inline-copy").hexdigest()
    assert replies[plain.id].label == "label-fetched"
    assert world.s3.gets == [plain.key]


@pytest.mark.parametrize("manifest", [False, True])
def test_a_job_image_whose_job_was_taken_back_is_dropped(world, manifest):
    """Issue 26, finding 7: the web discards a job it could not queue whole (its staged inputs
    and everything else, the manifest never written); a message already sent must not leave a
    row behind. A job that exists still gets its 'gone' row."""
    job = "e" * 32
    request = Request(
        id="d" * 32,
        key=keys.staged_key(job, 0),
        filename="cat.jpg",
        reply_to="",
        deadline=NOW + 60,
        job=job,
        index=0,
    )
    if manifest:
        world.s3.objects[OUTPUT, keys.job_manifest_key(job)] = b"{}"
    world.lanes.send(request.encode())
    world.drain()
    assert world.lanes.deleted[world.lanes.interactive_url] == [request.encode()]
    rows = [k for k in world.s3.keys(OUTPUT) if k != keys.job_manifest_key(job)]
    if manifest:
        assert rows == [keys.job_item_key(job, 0, False)]
        assert "gone" in json.loads(world.s3.objects[OUTPUT, rows[0]])["error"]
    else:
        assert rows == []
