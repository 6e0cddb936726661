"""Job images are classified once, even when SQS delivers a message twice.

A job image's result key is fixed by its job and index, so a stored result means the work is
done: a second delivery is deleted without work. A copy that arrives while the first is still in
this worker's hands (the pipeline holds up to three batches) is caught by the worker's claims,
which are dropped only once the first copy's result is stored.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Executor

from runtime.failures import is_not_found
from runtime.keys import job_item_key
from worker.delivery import Delivery

log = logging.getLogger(__name__)


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
