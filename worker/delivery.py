"""What the stages carry: one received message (`Delivery`) and the batch it arrived in.

A delivery is one SQS delivery of a request message, not the request: SQS may deliver the same
request twice, and each delivery has its own receipt. (A batch *job* is something else: many
images under one job id, see runtime.messages.)

Job images are classified once, even when SQS delivers a message twice (`skip_done`). A job
image's result key is fixed by its job and index, so a stored result means the work is done: a
second delivery is deleted without work. A copy that arrives while the first is still in this
worker's hands (the pipeline holds up to three batches) is caught by the worker's `Claims`, which
are dropped only once the first copy's result is stored.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field

from runtime.failures import is_not_found
from runtime.keys import job_item_key
from runtime.messages import Request, Result

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
