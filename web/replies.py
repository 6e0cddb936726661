"""The request/reply conversation of one web process, in one owner.

This process creates its own reply queue, mints each synchronous request's `reply_to` and secret
token, long-polls the queue in one thread and completes the waiter of each reply, beats a
heartbeat tag on the queue, sweeps reply queues whose owner died (a process killed with -9
cannot delete its own), and deletes its queue at shutdown. No other web module touches a reply
queue.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager

from runtime import sqs
from runtime.failures import log_failure
from runtime.messages import MessageError, Request, Result, new_request_id, new_token
from runtime.periodic import Every
from runtime.resources import QUEUE_ENCRYPTION, REPLY_RETENTION_S
from runtime.retry import Backoff, Streak
from web.errors import RequestIdInUse, ResultTimeout

log = logging.getLogger(__name__)
_RECEIVE_BACKOFF = Backoff(base_s=0.5, max_s=5.0)


def create_reply_queue(sqs, prefix: str, instance: str, clock=time.time) -> str:
    now = str(int(clock()))
    return sqs.create_queue(
        QueueName=f"{prefix}{instance}",
        Attributes={**QUEUE_ENCRYPTION, "MessageRetentionPeriod": str(REPLY_RETENTION_S)},
        tags={"created": now, "heartbeat": now},
    )["QueueUrl"]


class Waiter:
    """One synchronous request's wait for its own reply."""

    def __init__(self, request_id: str, future: Future, timeout_s: float):
        self._request_id, self._future, self._timeout_s = request_id, future, timeout_s

    def result(self) -> Result:
        """The reply, or ResultTimeout once the request's time is up."""
        try:
            return self._future.result(timeout=self._timeout_s)
        except FutureTimeout:
            raise ResultTimeout(self._request_id, self._timeout_s) from None


class Replies:
    """Mint requests that are answered here, and hand each reply to its waiter."""

    def __init__(
        self,
        sqs,
        queue_url: str,
        *,
        receive_sqs,
        janitor: ReplyQueueJanitor | None = None,
        timeout_s: float = 60.0,
        wait_s: int = 10,
        clock: Callable[[], float] = time.time,
    ):
        self._sqs, self.queue_url = sqs, queue_url
        self._timeout_s, self._clock = timeout_s, clock
        self._janitor = janitor
        self._dispatcher = ReplyDispatcher(receive_sqs, queue_url, wait_s=wait_s)

    @classmethod
    def open(
        cls,
        sqs,
        *,
        background_sqs: Callable[[], object],
        prefix: str,
        instance: str,
        max_age_s: float,
        timeout_s: float,
    ) -> Replies:
        """Create this process's reply queue and start its dispatcher and janitor. The
        background threads get clients of their own, so their long polls never wait for a
        connection of the upload threads' pool."""
        queue_url = create_reply_queue(sqs, prefix, instance)
        janitor = ReplyQueueJanitor(background_sqs(), prefix, queue_url, max_age_s)
        return cls(
            sqs, queue_url, receive_sqs=background_sqs(), janitor=janitor, timeout_s=timeout_s
        ).start()

    def start(self) -> Replies:
        if self._janitor is not None:
            self._janitor.start()
        self._dispatcher.start()
        return self

    def request(self, filename: str, request_id: str | None = None, model: str = "") -> Request:
        """A request answered on this queue, under a fresh secret token, due in timeout_s."""
        return Request.create(
            request_id or new_request_id(),
            filename,
            self.queue_url,
            self._clock() + self._timeout_s,
            token=new_token(),
            model=model,
        )

    @contextmanager
    def awaiting(self, request: Request) -> Iterator[Waiter]:
        """Register the waiter before the request is sent (a fast reply cannot arrive
        unclaimed), and forget it however the wait ends."""
        future = self._dispatcher.expect(request.id, request.token)
        try:
            yield Waiter(request.id, future, self._timeout_s)
        finally:
            self._dispatcher.forget(request.id, future)

    @property
    def waiting(self) -> int:
        return self._dispatcher.waiting

    def close(self) -> None:
        """Stop the threads and delete this process's reply queue."""
        if self._janitor is not None:
            self._janitor.stop()
        self._dispatcher.stop()
        try:
            self._sqs.delete_queue(QueueUrl=self.queue_url)
        except Exception as error:  # noqa: BLE001 - the janitor of another process sweeps it
            log_failure(log, f"delete reply queue {self.queue_url}", error)


class ReplyQueueJanitor:
    """Beats this process's heartbeat tag; deletes queues of the prefix whose beat is too old."""

    def __init__(
        self,
        sqs,
        prefix: str,
        own_url: str,
        max_age_s: float,
        clock: Callable[[], float] = time.time,
    ):
        self._sqs, self._prefix, self._own_url = sqs, prefix, own_url
        self._max_age_s, self._clock = max_age_s, clock
        # Beat three times per age, so a live queue never looks orphaned.
        self._every = Every(max_age_s / 3, self._upkeep, "reply-janitor")

    def start(self) -> ReplyQueueJanitor:
        self._every.start()
        return self

    def stop(self) -> None:
        self._every.stop()

    def beat(self) -> None:
        self._sqs.tag_queue(QueueUrl=self._own_url, Tags={"heartbeat": str(int(self._clock()))})

    def sweep(self) -> list[str]:
        """Delete orphaned reply queues of this prefix; return their URLs."""
        deleted = []
        urls = self._sqs.list_queues(QueueNamePrefix=self._prefix).get("QueueUrls", [])
        for url in urls:
            if url == self._own_url:
                continue
            tags = self._sqs.list_queue_tags(QueueUrl=url).get("Tags", {})
            try:
                heartbeat = float(tags.get("heartbeat", tags.get("created", "0")))
            except ValueError:
                heartbeat = 0.0
            if self._clock() - heartbeat > self._max_age_s:
                self._sqs.delete_queue(QueueUrl=url)
                log.info("deleted orphan reply queue %s", url)
                deleted.append(url)
        return deleted

    def _upkeep(self) -> None:
        self.beat()
        self.sweep()


class ReplyDispatcher:
    """The one thread that reads the reply queue and completes each reply's waiter."""

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
        """A waiter is never replaced: a second submission under the same id would otherwise
        receive the first one's answer (and the web tier would cache it under its own bytes)."""
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
