"""Keep a batch's messages hidden while it is still being worked on.

A batch that runs past the visibility timeout (a slow model, a cold start) would otherwise be
handed to a second worker and classified twice. Extending by the full timeout every half timeout
means a worker that dies (kill -9) gives its messages back within one timeout.
"""

from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)


class VisibilityKeeper:
    def __init__(self, sqs, queue_url: str, receipts: list[str], timeout_s: int):
        self._sqs, self._queue_url = sqs, queue_url
        self._receipts, self._timeout_s = receipts, timeout_s
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="visibility", daemon=True)

    def __enter__(self) -> VisibilityKeeper:
        if self._receipts:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._done.wait(self._timeout_s / 2):
            entries = [
                {"Id": str(i), "ReceiptHandle": r, "VisibilityTimeout": self._timeout_s}
                for i, r in enumerate(self._receipts[:10])
            ]
            try:
                self._sqs.change_message_visibility_batch(QueueUrl=self._queue_url, Entries=entries)
                log.info("extended visibility of %d messages", len(entries))
            except Exception as error:  # noqa: BLE001 - worst case the batch is redelivered
                log.warning("could not extend visibility (%s)", type(error).__name__)
