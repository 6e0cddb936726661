"""Submit an upload and wait for its own result: the domain behind the upload responder."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from runtime.messages import Request, Result, new_request_id
from web.arrivals import ArrivalCounter
from web.errors import ClassificationFailed, RequestIdInUse
from web.guards import Backlog, Upload
from web.replies import Replies
from web.store import UploadStore


class Gateway:
    def __init__(
        self,
        store: UploadStore,
        replies: Replies,
        *,
        async_deadline_s: float = 7 * 86400.0,
        backlog: Backlog | None = None,
        arrivals: ArrivalCounter | None = None,
        accepted: Callable[[], None] = lambda: None,  # an upload was queued (the scaler's wake)
        clock: Callable[[], float] = time.time,
    ):
        self._store, self._replies = store, replies
        self._accepted = accepted
        self._async_deadline_s = async_deadline_s  # until the stored result would expire
        self._backlog, self._arrivals, self._clock = backlog, arrivals, clock
        # Cache writes happen after the answer, off the client's path and off the workers.
        self._background = ThreadPoolExecutor(max_workers=4, thread_name_prefix="cache")

    def classify(self, upload: Upload, request_id: str | None = None) -> tuple[Result, dict]:
        """Classify one upload. A client-chosen id makes a retry idempotent: if that id's
        result is already stored (the first attempt's web process died), it is the answer.
        While that id is still in progress it is refused (RequestIdInUse), never taken over."""
        started = time.perf_counter()
        if request_id and (stored := self._store.result(request_id)) is not None:
            return self._answer_retry(stored, upload), {"total": _ms_since(started)}
        request = self._replies.request(upload.filename, request_id, upload.model)
        if (hit := self._store.cached(upload.sha256, request)) is not None:
            # Before the answer, not after it: a client may GET /results/<id> at once.
            self._store.record(hit)
            return hit, {"total": _ms_since(started), "cache_hit": 1}
        self._admit()
        with self._replies.awaiting(request) as waiter:
            self._enqueue(request, upload)
            queued = time.perf_counter()
            result = waiter.result()
        self._check_bytes(result, upload)
        self._background.submit(self._store.remember, result)
        timings = {"submit": (queued - started) * 1e3, "total": _ms_since(started)}
        return self._checked(result), timings

    def submit(self, upload: Upload, request_id: str | None = None) -> str:
        """Queue one upload without waiting (Prefer: respond-async); its id finds the result."""
        if request_id and self._store.result(request_id) is not None:
            return request_id  # a retried submission whose first attempt already finished
        self._admit()
        # Nobody waits on a reply queue, so neither reply_to nor token.
        deadline = self._clock() + self._async_deadline_s
        request = Request.create(
            request_id or new_request_id(), upload.filename, "", deadline, model=upload.model
        )
        self._enqueue(request, upload)  # counted and told like a waiting upload
        return request.id

    def state(self, request_id: str) -> str | None:
        return self._store.state(request_id)

    def result(self, request_id: str) -> Result | None:
        return self._store.result(request_id)

    def _answer_retry(self, stored: Result, upload: Upload) -> Result:
        if stored.ok and stored.sha256 != upload.sha256:
            raise RequestIdInUse(stored.id)  # that id answered for other bytes
        return self._checked(stored)

    def _admit(self) -> None:
        if self._backlog is not None:
            self._backlog.check()

    def _enqueue(self, request: Request, upload: Upload) -> None:
        self._store.submit(request, upload.data)
        if self._arrivals is not None:
            self._arrivals.add()  # the scaler's arrival rate: what reached the queue
        self._accepted()

    @staticmethod
    def _check_bytes(result: Result, upload: Upload) -> None:
        if result.ok and result.sha256 != upload.sha256:
            # The worker read other bytes than these: never this client's answer, never cached.
            raise RequestIdInUse(result.id)

    @staticmethod
    def _checked(result: Result) -> Result:
        if not result.ok:
            raise ClassificationFailed(result)
        return result


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1e3
