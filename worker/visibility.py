"""Keep the messages in hand hidden while they are still being worked on.

A batch that runs past the visibility timeout (a slow model, a cold start) would otherwise be
handed to a second worker and classified twice. Extending by the full timeout every half timeout
means a worker that dies (kill -9) gives its messages back within one timeout.
"""

from __future__ import annotations

import logging
import threading

from runtime.periodic import Every

log = logging.getLogger(__name__)


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
        for start in range(0, len(receipts), 10):
            entries = [
                {"Id": str(i), "ReceiptHandle": r, "VisibilityTimeout": self._timeout_s}
                for i, r in enumerate(receipts[start : start + 10])
            ]
            try:
                self._sqs.change_message_visibility_batch(QueueUrl=self._queue_url, Entries=entries)
            except Exception as error:  # noqa: BLE001 - worst case the batch is redelivered
                log.warning("could not extend visibility (%s)", type(error).__name__)
        if receipts:
            log.info("extended visibility of %d messages", len(receipts))
        return len(receipts)
