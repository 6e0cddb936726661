"""The consume loop: receive a batch, fetch, classify in one pass, store, reply, then delete.

Delivery is at least once. A message is deleted only after its result is stored, and results are
keyed by request id, so a redelivered request rewrites the same object and the web tier drops the
second reply.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from botocore.exceptions import ClientError

from cloud.messages import MessageError, Request, Result
from worker.visibility import VisibilityKeeper

log = logging.getLogger(__name__)


@dataclass
class Job:
    """One received message on its way through the batch."""

    receipt: str
    request: Request | None = None
    data: bytes = b""
    tensor: object = None
    result: Result | None = None
    retry: bool = False  # a transient failure: leave the message for redelivery
    expired: bool = False  # nobody waits any more: delete without work or reply


@dataclass
class Stats:
    images: int = 0
    errors: int = 0
    batches: int = 0
    busy_s: float = 0.0
    batch_sizes: list[int] = field(default_factory=list)

    @property
    def images_per_busy_s(self) -> float:
        return self.images / self.busy_s if self.busy_s else 0.0


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
        clock: Callable[[], float] = time.time,
    ):
        self._sqs, self._s3 = sqs, s3
        self._classifier, self._decode = classifier, decode
        self._queue_url = queue_url
        self._input, self._output = input_bucket, output_bucket
        self._reply_prefix = reply_prefix
        self._batch_max, self._wait_s = batch_max, wait_s
        self._pool = ThreadPoolExecutor(max_workers=fetch_concurrency, thread_name_prefix="io")
        self._clock = clock
        self._visibility_timeout_s = visibility_timeout_s
        self._stopping = threading.Event()
        self.stats = Stats()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def request_stop(self) -> None:
        """Warm stop: no new receives; the batch in hand is finished."""
        self._stopping.set()

    def run(self) -> None:
        backoff_s = 0.5
        while not self._stopping.is_set():
            try:
                messages = self._receive()
                backoff_s = 0.5
            except Exception as error:  # noqa: BLE001 - AWS may be briefly away; keep trying
                log.warning("receive failed (%s); retry in %.1f s", type(error).__name__, backoff_s)
                self._stopping.wait(backoff_s)
                backoff_s = min(backoff_s * 2, 10.0)
                continue
            if self._stopping.is_set():
                self._release(messages)  # unstarted: make them visible to other workers now
                break
            if messages:
                self.process(messages)
        self._pool.shutdown(wait=True)

    def _receive(self) -> list[dict]:
        response = self._sqs.receive_message(
            QueueUrl=self._queue_url,
            MaxNumberOfMessages=self._batch_max,
            WaitTimeSeconds=self._wait_s,
            AttributeNames=["ApproximateReceiveCount"],
        )
        return response.get("Messages", [])

    def process(self, messages: list[dict]) -> None:
        receipts = [message["ReceiptHandle"] for message in messages]
        with VisibilityKeeper(self._sqs, self._queue_url, receipts, self._visibility_timeout_s):
            self._process(messages)

    def _process(self, messages: list[dict]) -> None:
        started = time.perf_counter()
        jobs = [self._parse(message) for message in messages]
        live = [job for job in jobs if job.request and not (job.result or job.retry or job.expired)]
        list(self._pool.map(self._fetch, live))
        fetched = time.perf_counter()
        ready = [job for job in live if not job.result and not job.retry]
        for job in ready:
            self._prepare(job)
        ready = [job for job in ready if not job.result]
        self._classify(ready)
        model_done = time.perf_counter()
        done = [job for job in jobs if job.result and job.request]
        list(self._pool.map(self._store, done))
        self._reply(done)
        self._delete([job for job in jobs if job.request and not job.retry])
        self.stats.batches += 1
        self.stats.images += len(ready)
        self.stats.errors += sum(1 for job in done if not job.result.ok)
        self.stats.busy_s += time.perf_counter() - started
        self.stats.batch_sizes.append(len(messages))
        log.info(
            "batch of %d: %d classified, fetch %.0f ms, model %.0f ms",
            len(messages),
            len(ready),
            (fetched - started) * 1e3,
            (model_done - fetched) * 1e3,
        )

    def _parse(self, message: dict) -> Job:
        job = Job(receipt=message["ReceiptHandle"])
        try:
            job.request = Request.decode(message["Body"], reply_prefix=self._reply_prefix)
        except MessageError as error:
            salvaged = _salvage(message["Body"], self._reply_prefix)
            if salvaged is None:
                # Nobody to tell: let it fall to the DLQ after maxReceiveCount deliveries.
                log.warning("unparseable message left for the DLQ: %s", error)
                self._release([message])
                job.retry = True
                return job
            job.request = salvaged
            job.result = Result(
                id=salvaged.id, filename=salvaged.filename, error=f"bad request: {error}"
            )
            return job
        if job.request.deadline < self._clock():
            log.info("skipped %s: its deadline passed", job.request.id)
            job.expired = True
        return job

    def _fetch(self, job: Job) -> None:
        try:
            body = self._s3.get_object(Bucket=self._input, Key=job.request.key)["Body"]
            job.data = body.read()
        except ClientError as error:
            if error.response["Error"]["Code"] in ("NoSuchKey", "404"):
                job.result = self._error(job, "the uploaded image is gone")
            else:
                job.retry = True
        except Exception:  # noqa: BLE001 - transient (network): redeliver later
            job.retry = True

    def _prepare(self, job: Job) -> None:
        try:
            job.tensor = self._classifier.prepare(self._decode(job.data))
        except (ValueError, RuntimeError, OSError) as error:  # ImageError is a ValueError
            job.result = self._error(job, f"cannot decode the image: {error}")

    def _classify(self, jobs: list[Job]) -> None:
        if not jobs:
            return
        started = time.perf_counter()
        predictions = self._classifier.classify([job.tensor for job in jobs])
        model_ms = (time.perf_counter() - started) * 1e3
        for job, top5 in zip(jobs, predictions, strict=True):
            job.result = Result(
                id=job.request.id,
                filename=job.request.filename,
                model=self._classifier.name,
                label=top5[0][0],
                top5=[{"label": label, "score": round(score, 6)} for label, score in top5],
                timings_ms={"model": round(model_ms, 2), "batch": len(jobs)},
            )

    def _error(self, job: Job, reason: str) -> Result:
        return Result(id=job.request.id, filename=job.request.filename, error=reason)

    def _store(self, job: Job) -> None:
        try:
            self._s3.put_object(
                Bucket=self._output,
                Key=f"results/{job.request.id}.json",
                Body=job.result.encode().encode(),
                ContentType="application/json",
            )
        except Exception as error:  # noqa: BLE001 - not stored: keep the message for a retry
            log.warning("could not store %s (%s)", job.request.id, type(error).__name__)
            job.retry = True

    def _reply(self, jobs: list[Job]) -> None:
        by_queue: dict[str, list[Job]] = defaultdict(list)
        for job in jobs:
            if not job.retry:
                by_queue[job.request.reply_to].append(job)
        for queue_url, group in by_queue.items():
            for start in range(0, len(group), 10):
                entries = [
                    {"Id": str(i), "MessageBody": job.result.encode()}
                    for i, job in enumerate(group[start : start + 10])
                ]
                try:
                    self._sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
                except Exception as error:  # noqa: BLE001 - the result is stored; GET /results
                    log.warning("reply to %s failed (%s)", queue_url, type(error).__name__)

    def _delete(self, jobs: list[Job]) -> None:
        for start in range(0, len(jobs), 10):
            entries = [
                {"Id": str(i), "ReceiptHandle": job.receipt}
                for i, job in enumerate(jobs[start : start + 10])
            ]
            if entries:
                self._sqs.delete_message_batch(QueueUrl=self._queue_url, Entries=entries)

    def _release(self, messages: list[dict]) -> None:
        if not messages:
            return
        entries = [
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
            for i, m in enumerate(messages)
        ]
        try:
            self._sqs.change_message_visibility_batch(QueueUrl=self._queue_url, Entries=entries)
        except Exception as error:  # noqa: BLE001 - they come back after the timeout anyway
            log.warning("could not release messages (%s)", type(error).__name__)


def _salvage(body: str, reply_prefix: str) -> Request | None:
    """From a message that fails validation, the id and an own reply queue, if both are sound."""
    try:
        obj = json.loads(body)
        probe = {
            "v": 1,
            "id": obj["id"],
            "key": f"uploads/{obj['id']}",
            "filename": str(obj.get("filename", ""))[:255],
            "reply_to": obj["reply_to"],
            "deadline": 0,
        }
        return Request.decode(json.dumps(probe), reply_prefix=reply_prefix)
    except (ValueError, KeyError, TypeError):
        return None
