"""What happens to each message, one method per stage, named as `worker.stats.STAGES` names them.

receive  poll a lane and parse each message into a Delivery (bad ones answered or left for the DLQ)
fetch    the upload's bytes: carried in the message, or a GET from the input bucket
decode   bytes to pixels, within the decode budget
preprocess  pixels to the model's input tensor
model    one forward pass for the batch, each delivery's Result
store    each result to the output bucket
reply    each result to its waiter's reply queue
delete   the messages whose work is done (stored, or nothing to do)

Each stage method is charged, by its name, the CPU time of the thread that runs it, so what
`/metrics` and `make bench` report per stage is that method's work and nothing else's. Which
thread runs which stage, and when, is worker.pipeline's business; `intake` and `finish` group the
stages on either side of the model. What the stages carry (`Delivery`, `Batch`) and the claims
that classify a job image once are at the end.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

from runtime.failures import describe, is_not_found, log_failure
from runtime.keys import job_item_key, job_manifest_key, started_key
from runtime.messages import MessageError, Request, Result, reply_url_prefix, salvage, stored_key
from worker.imaging import DecodeBudget
from worker.lanes import Lanes
from worker.served import Served, ServedModels
from worker.stats import STAGES, Stats

log = logging.getLogger(__name__)


def _stage(method):
    """Charge the CPU time of the method's thread to the stage the method is named after."""
    name = method.__name__
    if name not in STAGES:
        raise ValueError(f"{name} is not one of the stages {STAGES}")

    @functools.wraps(method)
    def charged(self, *args, **kwargs):
        with self.stats.stage(name):
            return method(self, *args, **kwargs)

    return charged


class Stages:
    def __init__(
        self,
        *,
        lanes: Lanes,
        s3,
        classifier,
        decode: Callable[[bytes], object],
        input_bucket: str,
        output_bucket: str,
        reply_prefix: str,
        batch_max: int,
        job_batch_max: int,
        budget: DecodeBudget,
        pool: Executor,
        job_prefixes: tuple[str, ...] = (),
        stats: Stats,
        ready_at: float,
        clock: Callable[[], float],
        instance: str = "",
        others: dict[str, Served] | None = None,
    ):
        """classifier and decode: the default model's; others: the rest this worker holds."""
        self._lanes, self._s3 = lanes, s3
        self.models = ServedModels(Served(classifier, decode), others)
        self._input, self._output = input_bucket, output_bucket
        self._reply_prefix = reply_url_prefix(lanes.interactive_url, reply_prefix)
        self._batch_max, self._job_batch_max = batch_max, job_batch_max
        self._job_prefixes = job_prefixes  # where a job image may lie besides its staged input
        self._budget, self._pool, self.stats = budget, pool, stats
        self._ready_at, self._clock, self._instance = ready_at, clock, instance
        self._claims = Claims()

    # Before the model --------------------------------------------------------------------

    @_stage
    def receive(self, jobs_ok: bool) -> Batch | None:
        """The next batch from the lanes, parsed; None when they had nothing.

        jobs_ok False: the job lane is not read (a batch already waits for the model)."""
        lane, messages = self._lanes.receive(self._batch_max, self._job_batch_max, jobs_ok)
        if not messages:
            return None
        try:
            return Batch([self._parse(message, lane) for message in messages], lane)
        except BaseException:
            self._lanes.release(lane, [m["ReceiptHandle"] for m in messages])
            raise

    def intake(self, batch: Batch) -> None:
        """Everything before the model: fetch, decode and preprocess, the I/O in parallel."""
        self._lanes.hold(batch.lane, batch.receipts)
        # A job image delivered twice is classified once: skip what is already stored.
        skip_done(self._s3, self._output, batch.deliveries, self._pool, self._claims)
        list(self._pool.map(self._fetch_decode_preprocess, batch.runnable))
        batch.timings_ms["intake"] = batch.age_ms()

    def give_back(self, batch: Batch) -> None:
        """An unfinished batch, visible to other workers at once; its job images unclaimed."""
        self._claims.release(batch.deliveries)  # a redelivery must not be skipped
        self._lanes.let_go(batch.lane, batch.receipts)
        self._lanes.release(batch.lane, batch.receipts)

    def _fetch_decode_preprocess(self, delivery: Delivery) -> None:
        if delivery.request.is_async:
            self._mark_started(delivery.request)
        delivery.served = self.models.get(delivery.request.model)
        if delivery.served is None:
            # The web tier checks names against MODELS: a worker configured otherwise says so.
            delivery.result = self._error(
                delivery,
                f"model {delivery.request.model!r} is not served here"
                f" (this worker serves {', '.join(self.models.names)})",
            )
            return
        if not self.fetch(delivery):
            return
        try:
            with self._budget.reserve(delivery.data):  # refuses what is over the pixel limit
                self.preprocess(delivery, self.decode(delivery))
        except (ValueError, RuntimeError, OSError) as error:  # ImageError is a ValueError
            delivery.result = self._error(delivery, f"cannot decode the image: {error}")

    @_stage
    def fetch(self, delivery: Delivery) -> bool:
        """The upload's bytes into the delivery; False when there are none to decode."""
        try:
            # A small upload rides in its message (Request.inline); the rest is fetched.
            data = delivery.request.inline_bytes()
            if data is None:
                response = self._s3.get_object(Bucket=self._input, Key=delivery.request.key)
                data = response["Body"].read()
        except Exception as error:  # noqa: BLE001 - anything but "gone" is redelivered later
            if is_not_found(error) and self._job_discarded(delivery.request):
                log.info(
                    "job %s was discarded (not queued whole): image dropped", delivery.request.job
                )
                delivery.nothing_to_do = True
            elif is_not_found(error):
                delivery.result = self._error(delivery, "the uploaded image is gone")
            else:
                log_failure(log, f"fetch {delivery.request.key}", error, "left for redelivery")
                delivery.retry = True
            return False
        delivery.data = data
        delivery.sha256 = hashlib.sha256(data).hexdigest()
        return True

    @_stage
    def decode(self, delivery: Delivery) -> object:
        return delivery.served.decode(delivery.data)

    @_stage
    def preprocess(self, delivery: Delivery, image: object) -> None:
        delivery.tensor = delivery.served.classifier.prepare(image)

    # The model ---------------------------------------------------------------------------

    @_stage
    def model(self, batch: Batch) -> None:
        """One forward pass per model for the runnable deliveries that asked for it (requests
        for different models never share a pass); a model fault leaves that model's
        deliveries for redelivery (the DLQ ends any loop)."""
        by_model: dict[int, list[Delivery]] = {}
        for delivery in batch.runnable:
            by_model.setdefault(id(delivery.served), []).append(delivery)
        for deliveries in by_model.values():
            self._classify(batch, deliveries[0].served.classifier, deliveries)

    def _classify(self, batch: Batch, classifier, deliveries: list[Delivery]) -> None:
        started = time.perf_counter()
        try:
            predictions = classifier.classify([d.tensor for d in deliveries])
        except Exception:  # noqa: BLE001 - redeliver, and the DLQ ends any loop
            log.exception(
                "model %s failed on a batch of %d; leaving it for redelivery",
                classifier.name,
                len(deliveries),
            )
            for delivery in deliveries:
                delivery.retry = True
            return
        model_s = time.perf_counter() - started
        self.stats.model_s += model_s
        timings = {**batch.timings_ms, "model": round(model_s * 1e3, 2), "batch": len(deliveries)}
        for delivery, top5 in zip(deliveries, predictions, strict=True):
            waited = {"worker_start": 1} if 0 < delivery.sent_at < self._ready_at else {}
            delivery.result = Result(
                id=delivery.request.id,
                filename=delivery.request.filename,
                model=classifier.name,
                version=getattr(classifier, "version", ""),
                label=top5[0][0],
                top5=[{"label": label, "score": round(score, 6)} for label, score in top5],
                token=delivery.request.token,
                sha256=delivery.sha256,
                timings_ms={**timings, **waited},
                instance=self._instance,
            )

    # After the model ---------------------------------------------------------------------

    def finish(self, batch: Batch) -> tuple[int, int]:
        """Store, reply, delete; only what is stored is deleted. (images, errors) answered."""
        done = [d for d in batch.deliveries if d.result and d.request]
        # Replies go out while the results are stored: the client's answer does not wait for
        # S3. A result that fails to store keeps its message, and a second reply after the
        # redelivery is dropped by the web tier as a duplicate.
        stored = [self._pool.submit(self.store, delivery) for delivery in done]
        self.reply(done)
        for future in stored:
            future.result()
        self.delete(batch)
        self._lanes.let_go(batch.lane, batch.receipts)
        self._claims.release(batch.deliveries)  # after the store: a later copy finds the result
        images = sum(1 for delivery in done if delivery.result.ok)
        log.info(
            "batch of %d: %d classified, intake %.0f ms, total %.0f ms",
            len(batch.deliveries),
            images,
            batch.timings_ms.get("intake", 0.0),
            batch.age_ms(),
        )
        return images, len(done) - images

    @_stage
    def store(self, delivery: Delivery) -> None:
        try:
            self._s3.put_object(
                Bucket=self._output,
                Key=stored_key(delivery.request, delivery.result.ok),
                Body=delivery.result.encode().encode(),
                ContentType="application/json",
            )
        except Exception as error:  # noqa: BLE001 - not stored: keep the message for a retry
            log.warning("could not store %s (%s)", delivery.request.id, describe(error))
            delivery.retry = True

    @_stage
    def reply(self, deliveries: list[Delivery]) -> None:
        by_queue: dict[str, list[Delivery]] = defaultdict(list)
        for delivery in deliveries:
            # Asynchronous uploads and job images have no reply queue; a late one has no waiter.
            if delivery.request.reply_to and not delivery.late:
                by_queue[delivery.request.reply_to].append(delivery)
        for reply_to, group in by_queue.items():
            self._lanes.reply(reply_to, [delivery.result.encode() for delivery in group])

    @_stage
    def delete(self, batch: Batch) -> None:
        """The messages whose work is done: stored, answered with an error, or nothing to do."""
        finished = [d.receipt for d in batch.deliveries if d.request and not d.retry]
        self._lanes.delete(batch.lane, finished)

    # One delivery ------------------------------------------------------------------------

    def _parse(self, message: dict, lane: str) -> Delivery:
        delivery = Delivery(receipt=message["ReceiptHandle"])
        sent_ms = message.get("Attributes", {}).get("SentTimestamp", "")
        delivery.sent_at = int(sent_ms) / 1000 if sent_ms.isdigit() else 0.0
        try:
            delivery.request = Request.decode(
                message["Body"], reply_prefix=self._reply_prefix, job_prefixes=self._job_prefixes
            )
        except MessageError as error:
            salvaged = salvage(message["Body"], self._reply_prefix)
            if salvaged is None:
                # Nobody to tell: let it fall to the DLQ after maxReceiveCount deliveries.
                log.warning("unparseable message left for the DLQ: %s", error)
                self._lanes.release(lane, [delivery.receipt])
                delivery.retry = True
                return delivery
            delivery.request = salvaged
            delivery.result = self._error(delivery, f"bad request: {error}")
            return delivery
        if delivery.request.deadline < self._clock():
            # The client got a 504 that told it to GET /results/<id> later: keep that promise.
            log.info(
                "request %s past its deadline: stored for /results, no reply", delivery.request.id
            )
            delivery.late = True
        return delivery

    def _error(self, delivery: Delivery, reason: str) -> Result:
        log.info("request %s failed: %s", delivery.request.id, reason)
        return Result(
            id=delivery.request.id,
            filename=delivery.request.filename,
            error=reason,
            token=delivery.request.token,
            sha256=delivery.sha256,
        )

    def _job_discarded(self, request: Request) -> bool:
        """A job image whose job has no manifest: the web tier could not queue the job whole
        and took it back (web.jobs.store), so nobody will ever ask for this row."""
        if not request.job:
            return False
        try:
            self._s3.head_object(Bucket=self._output, Key=job_manifest_key(request.job))
        except Exception as error:  # noqa: BLE001 - unknown: store the row, as before
            return is_not_found(error)
        return False

    def _mark_started(self, request: Request) -> None:
        """An asynchronous upload's state becomes `in progress` (GET /results/<id> says so)."""
        try:
            self._s3.put_object(Bucket=self._output, Key=started_key(request.id), Body=b"{}")
        except Exception as error:  # noqa: BLE001 - only the reported state is less precise
            log_failure(log, f"mark {request.id} started", error, "it reads `queued` until done")


# ---- What the stages carry -----------------------------------------------------------------------
# What the stages carry: one received message (`Delivery`) and the batch it arrived in.
#
# A delivery is one SQS delivery of a request message, not the request: SQS may deliver the same
# request twice, and each delivery has its own receipt. (A batch *job* is something else: many
# images under one job id, see runtime.messages.)
#
# Job images are classified once, even when SQS delivers a message twice (`skip_done`). A job
# image's result key is fixed by its job and index, so a stored result means the work is done: a
# second delivery is deleted without work. A copy that arrives while the first is still in this
# worker's hands (the pipeline holds up to three batches) is caught by the worker's `Claims`, which
# are dropped only once the first copy's result is stored.

log = logging.getLogger(__name__)


@dataclass
class Delivery:
    """One received message on its way through the stages."""

    receipt: str
    request: Request | None = None
    data: bytes = b""
    sha256: str = ""  # of `data`: the web tier caches the result under this hash only
    served: object = None  # worker.served.Served: the model the request asked for
    tensor: object = None
    result: Result | None = None
    sent_at: float = 0.0  # epoch seconds SQS received the request
    retry: bool = False  # a transient failure: leave the message for redelivery
    # A job image already classified, or held in another delivery: delete the message, no work.
    nothing_to_do: bool = False
    late: bool = False  # its waiter gave up (504): classify and store for GET /results, no reply
    claimed: bool = False  # a job image this worker holds (Claims, below)

    @property
    def runnable(self) -> bool:
        return self.request is not None and not (self.result or self.retry or self.nothing_to_do)


@dataclass
class Batch:
    deliveries: list[Delivery]
    lane: str  # the queue URL every message of the batch came from
    started: float = field(default_factory=time.perf_counter)
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def receipts(self) -> list[str]:
        return [delivery.receipt for delivery in self.deliveries]

    def age_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1e3

    @property
    def runnable(self) -> list[Delivery]:
        return [delivery for delivery in self.deliveries if delivery.runnable]


# Job images classified once ------------------------------------------------------------


class Claims:
    """The job images this worker holds, by (job, index)."""

    def __init__(self):
        self._held: set[tuple[str, int]] = set()
        self._lock = threading.Lock()

    def take(self, place: tuple[str, int]) -> bool:
        with self._lock:
            if place in self._held:
                return False
            self._held.add(place)
            return True

    def release(self, deliveries: list[Delivery]) -> None:
        with self._lock:
            for delivery in deliveries:
                if delivery.claimed:
                    self._held.discard(_place(delivery))


def skip_done(
    s3, output_bucket: str, deliveries: list[Delivery], pool: Executor, claims: Claims
) -> None:
    """Mark the job images of a batch already classified (or in hand) as nothing to do."""
    candidates = []
    for delivery in deliveries:
        if not (delivery.runnable and delivery.request.job):
            continue
        if not claims.take(_place(delivery)):
            delivery.nothing_to_do = True
            log.info("job %s image %d: a second copy while the first is in hand", *_place(delivery))
            continue
        delivery.claimed = True
        candidates.append(delivery)
    stored = pool.map(lambda d: _stored(s3, output_bucket, d), candidates)
    for delivery, done in zip(candidates, stored, strict=True):
        if done:
            delivery.nothing_to_do = True
            log.info("job %s image %d: already classified", *_place(delivery))


def _place(delivery: Delivery) -> tuple[str, int]:
    return delivery.request.job, delivery.request.index


def _stored(s3, bucket: str, delivery: Delivery) -> bool:
    for ok in (True, False):
        try:
            s3.head_object(Bucket=bucket, Key=job_item_key(*_place(delivery), ok))
            return True
        except Exception as error:  # noqa: BLE001 - unknown: classify; the result is the same
            if not is_not_found(error):
                return False
    return False
