"""This web process's reply queue, and the one thread that hands each reply to its waiter."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future

from runtime.messages import MessageError, Result

log = logging.getLogger(__name__)


class ReplyDispatcher:
    def __init__(self, sqs, queue_url: str, *, wait_s: int = 10):
        self._sqs = sqs
        self.queue_url = queue_url
        self._wait_s = wait_s
        self._waiting: dict[str, Future] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reply-dispatcher", daemon=True)

    def start(self) -> ReplyDispatcher:
        self._thread.start()
        return self

    def expect(self, request_id: str) -> Future:
        """Register before the request is sent, so a fast reply cannot arrive unclaimed."""
        future: Future = Future()
        with self._lock:
            self._waiting[request_id] = future
        return future

    def forget(self, request_id: str) -> None:
        with self._lock:
            self._waiting.pop(request_id, None)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def stop(self) -> None:
        self._stopping.set()
        # The long poll may run on; the thread is a daemon and the queue is deleted next.
        self._thread.join(timeout=1.0)

    def _run(self) -> None:
        backoff_s = 0.5
        while not self._stopping.is_set():
            try:
                response = self._sqs.receive_message(
                    QueueUrl=self.queue_url,
                    MaxNumberOfMessages=10,
                    WaitTimeSeconds=self._wait_s,
                )
                backoff_s = 0.5
            except Exception as error:  # noqa: BLE001 - keep serving; AWS may come back
                if self._stopping.is_set():
                    return
                log.warning("reply queue receive failed (%s); retrying", type(error).__name__)
                self._stopping.wait(backoff_s)
                backoff_s = min(backoff_s * 2, 5.0)
                continue
            messages = response.get("Messages", [])
            for message in messages:
                self._complete(message["Body"])
            if messages:
                self._delete(messages)

    def _complete(self, body: str) -> None:
        try:
            result = Result.decode(body)
        except MessageError as error:
            log.warning("dropped a malformed reply: %s", error)
            return
        with self._lock:
            future = self._waiting.pop(result.id, None)
        # A reply nobody waits for (timed out, or a duplicate delivery) is dropped: the result
        # is in the output bucket, and the client already has its one answer.
        if future is not None and not future.done():
            future.set_result(result)

    def _delete(self, messages: list[dict]) -> None:
        entries = [
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
        ]
        try:
            self._sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
        except Exception as error:  # noqa: BLE001 - a redelivered reply is dropped as a duplicate
            log.warning("could not delete replies (%s)", type(error).__name__)
