"""Submit an upload and wait for its own result: the domain behind the upload responder."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from runtime.messages import Result
from web.arrivals import ArrivalCounter
from web.dispatcher import ReplyDispatcher, RequestIdInUse
from web.guards import Backlog
from web.store import UploadStore
from web.uploads import Upload


class ResultTimeout(Exception):
    def __init__(self, request_id: str, timeout_s: float):
        super().__init__(f"no result within {timeout_s:g} s; GET /results/{request_id} later")
        self.request_id = request_id


class ClassificationFailed(Exception):
    """The worker answered with an error (undecodable image, ...): the client's input is bad."""

    def __init__(self, result: Result):
        super().__init__(result.error)
        self.result = result


class Gateway:
    def __init__(
        self,
        store: UploadStore,
        dispatcher: ReplyDispatcher,
        timeout_s: float,
        backlog: Backlog | None = None,
        arrivals: ArrivalCounter | None = None,
    ):
        self._store, self._dispatcher, self._timeout_s = store, dispatcher, timeout_s
        self._backlog = backlog
        self._arrivals = arrivals
        # Cache writes happen after the answer, off the client's path and off the workers.
        self._background = ThreadPoolExecutor(max_workers=4, thread_name_prefix="cache")

    def classify(self, upload: Upload, request_id: str | None = None) -> tuple[Result, dict]:
        """Classify one upload. A client-chosen id makes a retry idempotent: if that id's
        result is already stored (the first attempt's web process died), it is the answer.
        While that id is still in progress it is refused (RequestIdInUse), never taken over."""
        started = time.perf_counter()
        if request_id and (stored := self._store.result(request_id)) is not None:
            if stored.ok and stored.sha256 != upload.sha256:
                raise RequestIdInUse(request_id)  # that id answered for other bytes
            return self._checked(stored), {"total": (time.perf_counter() - started) * 1e3}
        request = self._store.new_request(upload.filename, request_id)
        if (hit := self._store.cached(upload.sha256, request)) is not None:
            self._background.submit(self._store.record, hit)
            return hit, {"total": (time.perf_counter() - started) * 1e3, "cache_hit": 1}
        if self._backlog is not None:
            self._backlog.check()
        future = self._dispatcher.expect(request.id, request.token)
        try:
            self._store.submit(request, upload.data)
            if self._arrivals is not None:
                self._arrivals.add()  # the scaler's arrival rate: what reached the queue
            queued = time.perf_counter()
            result = future.result(timeout=self._timeout_s)
        except FutureTimeout:
            raise ResultTimeout(request.id, self._timeout_s) from None
        finally:
            self._dispatcher.forget(request.id, future)
        if result.ok and result.sha256 != upload.sha256:
            # The worker read other bytes than these: never this client's answer, never cached.
            raise RequestIdInUse(request.id)
        done = time.perf_counter()
        timings = {"submit": (queued - started) * 1e3, "total": (done - started) * 1e3}
        self._background.submit(self._store.remember, result)
        return self._checked(result), timings

    def submit(self, upload: Upload, request_id: str | None = None) -> str:
        """Queue one upload without waiting (Prefer: respond-async); its id finds the result."""
        if request_id and self._store.result(request_id) is not None:
            return request_id  # a retried submission whose first attempt already finished
        if self._backlog is not None:
            self._backlog.check()
        request = self._store.new_request(upload.filename, request_id, reply=False)
        self._store.submit(request, upload.data)
        return request.id

    def state(self, request_id: str) -> str | None:
        return self._store.state(request_id)

    @staticmethod
    def _checked(result: Result) -> Result:
        if not result.ok:
            raise ClassificationFailed(result)
        return result

    def result(self, request_id: str) -> Result | None:
        return self._store.result(request_id)
