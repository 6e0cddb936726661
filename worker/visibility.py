"""Keep the messages in hand hidden while they are still being worked on.

A batch that runs past the visibility timeout (a slow model, a cold start) would otherwise be
handed to a second worker and classified twice. Extending by the full timeout every half timeout
means a worker that dies (kill -9) gives its messages back within one timeout.
"""

from __future__ import annotations

import logging
import threading

from runtime import sqs
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
        # Not extended: worst case the batch is redelivered.
        sqs.change_visibility_batch(
            self._sqs, self._queue_url, receipts, self._timeout_s, "extend visibility"
        )
        if receipts:
            log.info("extended visibility of %d messages", len(receipts))
        return len(receipts)
