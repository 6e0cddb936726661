"""This web process's reply queue, and the one thread that hands each reply to its waiter."""

from __future__ import annotations

import hmac
import logging
import threading
from concurrent.futures import Future

from runtime import sqs
from runtime.failures import log_failure
from runtime.messages import MessageError, Result
from runtime.retry import Backoff, Streak

log = logging.getLogger(__name__)
_RECEIVE_BACKOFF = Backoff(base_s=0.5, max_s=5.0)


class RequestIdInUse(Exception):
    """A client-chosen request id that another submission holds: never taken over."""

    def __init__(self, request_id: str):
        super().__init__(f"request id {request_id} is already in use; GET /results/{request_id}")
        self.request_id = request_id


class ReplyDispatcher:
    def __init__(self, sqs, queue_url: str, *, wait_s: int = 10):
        self._sqs = sqs
        self.queue_url = queue_url
        self._wait_s = wait_s
        self._waiting: dict[str, tuple[str, Future]] = {}  # id -> (token, future)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reply-dispatcher", daemon=True)

    def start(self) -> ReplyDispatcher:
        self._thread.start()
        return self

    def expect(self, request_id: str, token: str) -> Future:
        """Register before the request is sent, so a fast reply cannot arrive unclaimed.

        A waiter is never replaced: a second submission under the same id would otherwise
        receive the first one's answer (and the web tier would cache it under its own bytes).
        """
        future: Future = Future()
        with self._lock:
            if request_id in self._waiting:
                raise RequestIdInUse(request_id)
            self._waiting[request_id] = (token, future)
        return future

    def forget(self, request_id: str, future: Future) -> None:
        with self._lock:
            if self._waiting.get(request_id, (None, None))[1] is future:
                del self._waiting[request_id]

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def stop(self) -> None:
        self._stopping.set()
        # The long poll may run on; the thread is a daemon and the queue is deleted next.
        self._thread.join(timeout=1.0)

    def _run(self) -> None:
        streak = Streak(_RECEIVE_BACKOFF)
        while not self._stopping.is_set():
            try:
                self._receive_once()
                streak.succeeded()
            except Exception as error:  # noqa: BLE001 - keep serving; AWS may come back
                if self._stopping.is_set():
                    return
                delay_s = streak.failed()
                log_failure(log, "reply queue receive", error, f"retry in {delay_s:.1f} s")
                self._stopping.wait(delay_s)

    def _receive_once(self) -> None:
        response = self._sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=sqs.BATCH_MAX,
            WaitTimeSeconds=self._wait_s,
        )
        messages = response.get("Messages", [])
        for message in messages:
            try:
                self._complete(message.get("Body"))
            except Exception:  # noqa: BLE001 - one bad reply must not cost the others
                log.exception("dropped a reply that could not be handled")
        # Not deleted: a redelivered reply is dropped as a duplicate.
        sqs.delete_batch(
            self._sqs, self.queue_url, [m["ReceiptHandle"] for m in messages], "delete replies"
        )

    def _complete(self, body: str) -> None:
        try:
            result = Result.decode(body)
        except MessageError as error:
            log.warning("dropped a malformed reply: %s", error)
            return
        with self._lock:
            token, future = self._waiting.get(result.id, ("", None))
            # Only the reply to this very submission: same id and the secret token it sent.
            if future is None or not token or not hmac.compare_digest(token, result.token):
                future = None
            else:
                del self._waiting[result.id]
        # A reply nobody waits for (timed out, a duplicate delivery, another submission's) is
        # dropped: the result is in the output bucket, and the client has its one answer.
        if future is not None and not future.done():
            future.set_result(result)
