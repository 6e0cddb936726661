"""The dead-letter queue's reader: every dead letter ends as an error its client can see.

Why the web tier: it always runs (the fleet scales to nothing, and SQS moves a message to the
DLQ only when a worker's receive finds it spent, so a worker may be gone a moment later), it
already writes results and job rows (cache hits, refused images), and the scaler holds no S3
rights at all. Every web process sweeps; a message one of them has taken is hidden from the
others, and a second write of the same error changes nothing (runtime.deadletters.record).

The bound a client waits (docs/reliability.md): MAX_RECEIVE_COUNT deliveries of at most
VISIBILITY_TIMEOUT_S each, then the next receive moves the message, then one SWEEP_EVERY_S.
"""

from __future__ import annotations

import logging

from runtime import deadletters
from runtime.failures import log_failure
from runtime.periodic import Every
from runtime.sqs import BATCH_MAX, delete_batch

log = logging.getLogger(__name__)

SWEEP_EVERY_S = 5.0


class DeadLetters:
    def __init__(self, sqs, s3, *, queue_url: str, output_bucket: str, reply_prefix: str, why: str):
        self._sqs, self._s3 = sqs, s3
        self._url, self._bucket = queue_url, output_bucket
        self._reply_prefix, self._why = reply_prefix, why
        self._every = Every(SWEEP_EVERY_S, self.sweep, "dead-letters")

    def start(self) -> DeadLetters:
        self._every.start()
        return self

    def stop(self) -> None:
        self._every.stop()

    def sweep(self) -> int:
        """Drain what the queue holds now; how many dead letters were settled."""
        settled = 0
        while messages := self._sqs.receive_message(
            QueueUrl=self._url, MaxNumberOfMessages=BATCH_MAX, WaitTimeSeconds=0
        ).get("Messages", []):
            done = [m["ReceiptHandle"] for m in messages if self._settle(m["Body"])]
            delete_batch(self._sqs, self._url, done, "delete dead letters")
            settled += len(done)
            if len(done) < len(messages):
                break  # AWS failed a write: the rest waits for the next sweep
        return settled

    def _settle(self, body: str) -> bool:
        """True once the message needs nothing more (its error stored, or nobody to tell)."""
        request = deadletters.identify(body, self._reply_prefix)
        if request is None:
            log.warning("a dead letter that names no request or job image: dropped")
            return True
        try:
            deadletters.record(self._s3, self._bucket, request, self._why)
        except Exception as error:  # noqa: BLE001 - kept on the queue for the next sweep
            log_failure(log, f"record dead letter {request.id}", error, "kept for the next sweep")
            return False
        where = f"job {request.job} image {request.index}" if request.job else request.id
        log.warning("dead letter %s: stored as failed", where)
        return True
