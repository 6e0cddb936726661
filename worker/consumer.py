"""The consume loop: receive, fetch, classify in one pass, store, reply, then delete.

Delivery is at least once. A message is deleted only after its result is stored, and results are
keyed by request id, so a redelivered request rewrites the same object and the web tier drops the
second reply.

`run()` overlaps the stages: while batch k is in the model, batch k+1 is received, fetched and
decoded (the intake thread) and batch k-1 is stored and replied to (the finisher), so the model
waits on S3 and SQS as little as possible. `process()` runs one batch through every stage in
turn.

Every stage counts the CPU time of the thread that runs it (`Stats.stage_cpu_s`, served on the
worker's /metrics and read by `make bench`): on a CPU the worker's threads share its cores, so
work moved to another thread is not free, and CPU seconds say what each stage really costs.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

from runtime import sqs
from runtime.failures import describe, is_not_found, log_failure
from runtime.keys import started_key
from runtime.messages import MessageError, Request, Result, reply_url_prefix, salvage, stored_key
from runtime.retry import Backoff, Streak
from worker import jobitems
from worker.budget import DecodeBudget
from worker.lanes import Lanes
from worker.visibility import VisibilityKeeper

log = logging.getLogger(__name__)


@dataclass
class Job:
    """One received message on its way through the stages."""

    receipt: str
    request: Request | None = None
    data: bytes = b""
    sha256: str = ""  # of `data`: the web tier caches the result under this hash only
    tensor: object = None
    result: Result | None = None
    sent_at: float = 0.0  # epoch seconds SQS received the request
    retry: bool = False  # a transient failure: leave the message for redelivery
    expired: bool = False  # nothing to do (a job image already classified): delete, no work
    late: bool = False  # its waiter gave up (504): classify and store for GET /results, no reply
    claimed: bool = False  # a job image this worker holds (see worker.jobitems)

    @property
    def runnable(self) -> bool:
        return self.request is not None and not (self.result or self.retry or self.expired)


# The stages whose CPU time is counted, in the order a message meets them.
STAGES = ("receive", "fetch", "decode", "preprocess", "model", "store", "reply", "delete")


@dataclass
class Stats:
    images: int = 0
    errors: int = 0
    batches: int = 0
    busy_s: float = 0.0  # wall time with at least one batch in hand
    model_s: float = 0.0
    batch_sizes: Counter = field(default_factory=Counter)  # batch size -> batches
    stage_cpu_s: Counter = field(default_factory=Counter)  # stage -> CPU seconds of its threads
    _in_hand: int = 0
    _since: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _leave(self) -> None:
        self._in_hand -= 1
        if self._in_hand == 0:
            self.busy_s += time.perf_counter() - self._since

    @property
    def images_per_busy_s(self) -> float:
        return self.images / self.busy_s if self.busy_s else 0.0

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Count the CPU time this thread spends in the block as stage `name`'s."""
        started = time.thread_time()
        try:
            yield
        finally:
            spent = time.thread_time() - started
            with self._lock:
                self.stage_cpu_s[name] += spent

    def begin(self) -> None:
        with self._lock:
            if self._in_hand == 0:
                self._since = time.perf_counter()
            self._in_hand += 1

    def abandon(self) -> None:
        """A batch given back before it finished: it no longer counts as in hand."""
        with self._lock:
            self._leave()

    def end(self, images: int, errors: int, size: int) -> None:
        with self._lock:
            self._leave()
            self.images += images
            self.errors += errors
            self.batches += 1
            self.batch_sizes[size] += 1


@dataclass
class Batch:
    jobs: list[Job]
    queue_url: str = ""  # the lane every message of the batch came from
    started: float = field(default_factory=time.perf_counter)
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def receipts(self) -> list[str]:
        return [job.receipt for job in self.jobs]


_STOP = object()
_RECEIVE_BACKOFF = Backoff(base_s=0.5, max_s=10.0)
# While the model has a batch waiting, how often the interactive lane is looked at (the job lane
# not at all): an upload's extra wait, against a short poll per interval while a job runs.
_GATED_POLL_S = 0.05


class Consumer:
    def __init__(
        self,
        *,
        sqs,
        s3,
        classifier,
        decode: Callable[[bytes], object],
        queue_url: str,
        input_bucket: str,
        output_bucket: str,
        reply_prefix: str,
        batch_max: int = 10,
        wait_s: int = 10,
        fetch_concurrency: int = 10,
        visibility_timeout_s: int = 30,
        job_queue_url: str | None = None,
        job_batch_max: int | None = None,
        job_prefixes: tuple[str, ...] = (),
        budget: DecodeBudget | None = None,
        instance: str = "",
        clock: Callable[[], float] = time.time,
    ):
        self._sqs, self._s3 = sqs, s3
        self._instance = instance
        self._ready_at = clock()  # built once the model is loaded: the worker is ready
        self._classifier, self._decode = classifier, decode
        self._queue_url = queue_url
        self._input, self._output = input_bucket, output_bucket
        self._reply_prefix = reply_url_prefix(queue_url, reply_prefix)
        self._batch_max, self._wait_s = batch_max, wait_s
        self._job_batch_max = job_batch_max or batch_max
        self._job_prefixes = job_prefixes  # where a job image may lie besides its staged input
        self._clock = clock
        # Unbounded only in unit tests with stand-in decoders; main() always passes one.
        self._budget = budget or DecodeBudget(2**62, 2**60)
        self._pool = ThreadPoolExecutor(max_workers=fetch_concurrency, thread_name_prefix="io")
        self._lanes = Lanes(sqs, queue_url, job_queue_url, wait_s=wait_s)
        self._keepers = {
            url: VisibilityKeeper(sqs, url, visibility_timeout_s)
            for url in filter(None, (queue_url, job_queue_url))
        }
        self._claims = jobitems.Claims()
        self._stopping = threading.Event()
        self.stats = Stats()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def request_stop(self) -> None:
        """Warm stop: no new receives; the batches in hand are finished."""
        self._stopping.set()

    # The pipeline ------------------------------------------------------------------------

    def run(self) -> None:
        # One batch waits decoded while another is in the model: enough to hide the intake.
        ready: queue.Queue = queue.Queue(maxsize=1)
        finisher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="finish")
        finishing = threading.BoundedSemaphore(2)
        intake = threading.Thread(target=self._intake, args=(ready,), name="intake", daemon=True)
        for keeper in self._keepers.values():
            keeper.start()
        intake.start()
        while (batch := ready.get()) is not _STOP:
            self._compute(batch)
            finishing.acquire()
            finisher.submit(self._finish, batch).add_done_callback(lambda _: finishing.release())
        intake.join()
        finisher.shutdown(wait=True)
        self._pool.shutdown(wait=True)
        for keeper in self._keepers.values():
            keeper.stop()

    def _intake(self, ready: queue.Queue) -> None:
        streak = Streak(_RECEIVE_BACKOFF)
        while not self._stopping.is_set():
            try:
                with self.stats.stage("receive"):
                    # A job batch is taken only when none waits for the model (see worker.lanes).
                    jobs_ok = ready.empty()
                    queue_url, messages = self._lanes.receive(
                        self._batch_max, self._job_batch_max, jobs_ok
                    )
                streak.succeeded()
            except Exception as error:  # noqa: BLE001 - AWS may be briefly away; keep trying
                delay_s = streak.failed()
                log_failure(log, "receive", error, f"retry in {delay_s:.1f} s")
                self._stopping.wait(delay_s)
                continue
            if self._stopping.is_set():
                self._release(messages, queue_url)  # unstarted: visible to others at once
                break
            if not messages and not jobs_ok:
                self._stopping.wait(_GATED_POLL_S)  # the model is busy: look again shortly
            if messages:
                try:
                    ready.put(self._take(messages, queue_url))
                except Exception:  # noqa: BLE001 - never leave the model loop waiting forever
                    log.exception("intake failed; giving %d messages back", len(messages))
                    self._release(messages, queue_url)
        ready.put(_STOP)

    def process(self, messages: list[dict], queue_url: str | None = None) -> None:
        """One batch through every stage, in this thread."""
        batch = self._take(messages, queue_url or self._queue_url)
        self._compute(batch)
        self._finish(batch)

    # The stages --------------------------------------------------------------------------

    def _receive(self) -> list[dict]:
        """One long poll of the interactive lane alone."""
        return self._lanes.poll(self._queue_url, self._wait_s, self._batch_max)

    def _take(self, messages: list[dict], queue_url: str) -> Batch:
        """Parse, fetch and decode: everything before the model, the I/O in parallel."""
        self.stats.begin()
        batch = None
        try:
            with self.stats.stage("receive"):
                batch = Batch(jobs=[self._parse(message, queue_url) for message in messages])
            batch.queue_url = queue_url
            self._keepers[queue_url].track(batch.receipts)
            # A job image delivered twice is classified once: skip what is already stored.
            jobitems.skip_done(self._s3, self._output, batch.jobs, self._pool, self._claims)
            list(self._pool.map(self._load, [job for job in batch.jobs if job.runnable]))
        except BaseException:
            self.stats.abandon()  # else the busy clock never stops and throughput goes unreported
            if batch is not None:
                self._claims.release(batch.jobs)  # given back: a redelivery must not be skipped
            raise
        batch.timings_ms["intake"] = (time.perf_counter() - batch.started) * 1e3
        return batch

    def _compute(self, batch: Batch) -> None:
        jobs = [job for job in batch.jobs if job.runnable]
        if not jobs:
            return
        started = time.perf_counter()
        try:
            with self.stats.stage("model"):
                predictions = self._classifier.classify([job.tensor for job in jobs])
        except Exception:  # noqa: BLE001 - a model fault: redeliver, and the DLQ ends any loop
            log.exception("the model failed on a batch of %d; leaving it for redelivery", len(jobs))
            for job in jobs:
                job.retry = True
            return
        model_s = time.perf_counter() - started
        self.stats.model_s += model_s
        timings = {**batch.timings_ms, "model": round(model_s * 1e3, 2), "batch": len(jobs)}
        for job, top5 in zip(jobs, predictions, strict=True):
            waited = {"worker_start": 1} if 0 < job.sent_at < self._ready_at else {}
            job.result = Result(
                id=job.request.id,
                filename=job.request.filename,
                model=self._classifier.name,
                label=top5[0][0],
                top5=[{"label": label, "score": round(score, 6)} for label, score in top5],
                token=job.request.token,
                sha256=job.sha256,
                timings_ms={**timings, **waited},
                instance=self._instance,
            )

    def _finish(self, batch: Batch) -> None:
        """Store, reply, delete; only what is stored is deleted."""
        done = [job for job in batch.jobs if job.result and job.request]
        # Replies go out while the results are stored: the client's answer does not wait for
        # S3. A result that fails to store keeps its message, and a second reply after the
        # redelivery is dropped by the web tier as a duplicate.
        stored = [self._pool.submit(self._store, job) for job in done]
        with self.stats.stage("reply"):
            self._reply(done)
        for future in stored:
            future.result()
        with self.stats.stage("delete"):
            self._delete(
                [job for job in batch.jobs if job.request and not job.retry], batch.queue_url
            )
        self._keepers[batch.queue_url].untrack(batch.receipts)
        self._claims.release(batch.jobs)  # after the store: a later copy finds the result
        images = sum(1 for job in done if job.result.ok)
        self.stats.end(images, len(done) - images, len(batch.jobs))
        log.info(
            "batch of %d: %d classified, intake %.0f ms, total %.0f ms",
            len(batch.jobs),
            images,
            batch.timings_ms.get("intake", 0.0),
            (time.perf_counter() - batch.started) * 1e3,
        )

    # One job -----------------------------------------------------------------------------

    def _parse(self, message: dict, queue_url: str) -> Job:
        job = Job(receipt=message["ReceiptHandle"])
        sent_ms = message.get("Attributes", {}).get("SentTimestamp", "")
        job.sent_at = int(sent_ms) / 1000 if sent_ms.isdigit() else 0.0
        try:
            job.request = Request.decode(
                message["Body"], reply_prefix=self._reply_prefix, job_prefixes=self._job_prefixes
            )
        except MessageError as error:
            salvaged = salvage(message["Body"], self._reply_prefix)
            if salvaged is None:
                # Nobody to tell: let it fall to the DLQ after maxReceiveCount deliveries.
                log.warning("unparseable message left for the DLQ: %s", error)
                self._release([message], queue_url)
                job.retry = True
                return job
            job.request = salvaged
            job.result = self._error(job, f"bad request: {error}")
            return job
        if job.request.deadline < self._clock():
            # The client got a 504 that told it to GET /results/<id> later: keep that promise.
            log.info("request %s past its deadline: stored for /results, no reply", job.request.id)
            job.late = True
        return job

    def _load(self, job: Job) -> None:
        if job.request.is_async:
            self._mark_started(job.request)
        try:
            with self.stats.stage("fetch"):
                # A small upload rides in its message (Request.inline); the rest is fetched.
                data = job.request.inline_bytes()
                if data is None:
                    response = self._s3.get_object(Bucket=self._input, Key=job.request.key)
                    data = response["Body"].read()
                job.data = data
                job.sha256 = hashlib.sha256(job.data).hexdigest()
        except Exception as error:  # noqa: BLE001 - anything but "gone" is redelivered later
            if is_not_found(error):
                job.result = self._error(job, "the uploaded image is gone")
            else:
                log_failure(log, f"fetch {job.request.key}", error, "left for redelivery")
                job.retry = True
            return
        try:
            with self._budget.reserve(job.data):  # refuses what is over the pixel limit
                with self.stats.stage("decode"):
                    image = self._decode(job.data)
                with self.stats.stage("preprocess"):
                    job.tensor = self._classifier.prepare(image)
        except (ValueError, RuntimeError, OSError) as error:  # ImageError is a ValueError
            job.result = self._error(job, f"cannot decode the image: {error}")

    def _error(self, job: Job, reason: str) -> Result:
        log.info("request %s failed: %s", job.request.id, reason)
        return Result(
            id=job.request.id,
            filename=job.request.filename,
            error=reason,
            token=job.request.token,
            sha256=job.sha256,
        )

    def _mark_started(self, request: Request) -> None:
        """An asynchronous upload's state becomes `in progress` (GET /results/<id> says so)."""
        try:
            self._s3.put_object(Bucket=self._output, Key=started_key(request.id), Body=b"{}")
        except Exception as error:  # noqa: BLE001 - only the reported state is less precise
            log_failure(log, f"mark {request.id} started", error, "it reads `queued` until done")

    def _store(self, job: Job) -> None:
        with self.stats.stage("store"):
            self._store_result(job)

    def _store_result(self, job: Job) -> None:
        try:
            self._s3.put_object(
                Bucket=self._output,
                Key=stored_key(job.request, job.result.ok),
                Body=job.result.encode().encode(),
                ContentType="application/json",
            )
        except Exception as error:  # noqa: BLE001 - not stored: keep the message for a retry
            log.warning("could not store %s (%s)", job.request.id, describe(error))
            job.retry = True
            return

    def _reply(self, jobs: list[Job]) -> None:
        by_queue: dict[str, list[Job]] = defaultdict(list)
        for job in jobs:
            # Asynchronous uploads and job images have no reply queue; a late one has no waiter.
            if job.request.reply_to and not job.late:
                by_queue[job.request.reply_to].append(job)
        for queue_url, group in by_queue.items():
            # Not sent: the result is stored, and the client can GET /results/{id}.
            bodies = [job.result.encode() for job in group]
            sqs.send_batch(self._sqs, queue_url, bodies, f"reply to {queue_url}")

    def _delete(self, jobs: list[Job], queue_url: str) -> None:
        # Not deleted: redelivered later, and results are idempotent.
        receipts = [job.receipt for job in jobs]
        sqs.delete_batch(self._sqs, queue_url, receipts, "delete requests")

    def _release(self, messages: list[dict], queue_url: str) -> None:
        # Not released: they come back after the visibility timeout anyway.
        receipts = [m["ReceiptHandle"] for m in messages]
        sqs.change_visibility_batch(self._sqs, queue_url, receipts, 0, "release requests")
