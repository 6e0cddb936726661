"""The worker's one way to SQS: two lanes in (interactive uploads always before batch-job
images), and what becomes of each message taken from them (deleted, given back, kept hidden),
plus the replies out.

Messages in hand are kept hidden while they are still being worked on (`VisibilityKeeper`): a
batch that runs past the visibility timeout (a slow model, a cold start) would otherwise be
handed to a second worker and classified twice. Extending by the full timeout every half timeout
means a worker that dies (kill -9) gives its messages back within one timeout.

A person waiting on the page must not queue behind a 10,000-image job, so the job lane is read
only when a short poll finds the interactive lane empty. Each batch comes from one lane, so its
messages are deleted, released and kept hidden on the queue they came from.

Everything the pipeline says to SQS goes through the methods here, so a unit test can hand the
pipeline an in-memory stand-in with the same methods (tests/support/stub_lanes.py), as
dramatiq's tests hand its worker a StubBroker.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from runtime import sqs as sqs_calls
from runtime.periodic import Every

log = logging.getLogger(__name__)


class Lanes:
    def __init__(
        self,
        sqs,
        interactive_url: str,
        job_url: str | None,
        *,
        wait_s: int,
        visibility_timeout_s: int = 30,
    ):
        self._sqs = sqs
        self.interactive_url, self.job_url = interactive_url, job_url
        self._wait_s = wait_s
        # With a job lane, an idle worker long-polls the interactive lane only briefly, so a job
        # image arriving meanwhile waits at most this long.
        self._idle_wait_s = min(wait_s, 2)
        self._keepers = {
            url: VisibilityKeeper(sqs, url, visibility_timeout_s)
            for url in filter(None, (interactive_url, job_url))
        }

    # Receiving ---------------------------------------------------------------------------

    def receive(
        self, batch_max: int, job_batch_max: int | None = None, jobs_ok: bool = True
    ) -> tuple[str, list[dict]]:
        """The next batch and the queue it came from (possibly empty).

        jobs_ok False (the model still has a batch waiting): only the interactive lane is
        polled, once and without waiting, so that a job batch never queues in front of an upload
        that arrives a moment later. Job batches are at most job_batch_max: the smaller, the
        less an upload waits behind the one in the model.
        """
        if self.job_url is None:
            return self.interactive_url, self.poll(self.interactive_url, self._wait_s, batch_max)
        if messages := self.poll(self.interactive_url, 0, batch_max):
            return self.interactive_url, messages
        if not jobs_ok:
            return self.interactive_url, []
        if messages := self.poll(self.job_url, 0, job_batch_max or batch_max):
            return self.job_url, messages
        return self.interactive_url, self.poll(self.interactive_url, self._idle_wait_s, batch_max)

    def poll(self, url: str, wait_s: int, batch_max: int) -> list[dict]:
        response = self._sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=batch_max,
            WaitTimeSeconds=wait_s,
            # ReceiveCount is logged (redeliveries stand out); SentTimestamp tells a request that
            # was queued before this worker was ready, i.e. one that waited for a worker start.
            AttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
        )
        return response.get("Messages", [])

    # Messages in hand --------------------------------------------------------------------

    def start(self) -> None:
        """Start keeping the messages in hand hidden (one thread per lane)."""
        for keeper in self._keepers.values():
            keeper.start()

    def stop(self) -> None:
        for keeper in self._keepers.values():
            keeper.stop()

    def hold(self, url: str, receipts: Sequence[str]) -> None:
        """Keep these messages hidden until let_go(): they are being worked on."""
        self._keepers[url].track(list(receipts))

    def let_go(self, url: str, receipts: Sequence[str]) -> None:
        self._keepers[url].untrack(list(receipts))

    def delete(self, url: str, receipts: Sequence[str]) -> None:
        # Not deleted: redelivered later, and results are idempotent.
        sqs_calls.delete_batch(self._sqs, url, receipts, "delete requests")

    def release(self, url: str, receipts: Sequence[str]) -> None:
        """Visible to other workers at once (unstarted, or left for the DLQ to count)."""
        # Not released: they come back after the visibility timeout anyway.
        sqs_calls.change_visibility_batch(self._sqs, url, receipts, 0, "release requests")

    # Replies -----------------------------------------------------------------------------

    def reply(self, reply_to: str, bodies: Sequence[str]) -> None:
        # Not sent: the result is stored, and the client can GET /results/{id}.
        sqs_calls.send_batch(self._sqs, reply_to, bodies, f"reply to {reply_to}")


class VisibilityKeeper:
    """One thread for the whole worker: extends every receipt between track() and untrack()."""

    def __init__(self, sqs, queue_url: str, timeout_s: int):
        self._sqs, self._queue_url, self._timeout_s = sqs, queue_url, timeout_s
        self._receipts: dict[str, None] = {}
        self._lock = threading.Lock()
        self._every = Every(timeout_s / 2, self.extend, "visibility")

    def start(self) -> VisibilityKeeper:
        self._every.start()
        return self

    def stop(self) -> None:
        self._every.stop()

    def track(self, receipts: list[str]) -> None:
        with self._lock:
            self._receipts.update(dict.fromkeys(receipts))

    def untrack(self, receipts: list[str]) -> None:
        with self._lock:
            for receipt in receipts:
                self._receipts.pop(receipt, None)

    def extend(self) -> int:
        with self._lock:
            receipts = list(self._receipts)
        # Not extended: worst case the batch is redelivered.
        sqs_calls.change_visibility_batch(
            self._sqs, self._queue_url, receipts, self._timeout_s, "extend visibility"
        )
        if receipts:
            log.info("extended visibility of %d messages", len(receipts))
        return len(receipts)
