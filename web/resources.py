"""Thin responders, each handing off to the gateway or the status source in a few lines, and the
gateway behind the upload responder: submit an upload and wait for its own result (`Gateway`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import falcon

from runtime.failures import log_failure
from runtime.messages import Request, Result, is_request_id, new_request_id
from web.arrivals import ArrivalCounter
from web.errors import ClassificationFailed, RequestIdInUse
from web.guards import Backlog, Upload
from web.replies import Replies
from web.store import UploadStore

log = logging.getLogger(__name__)


def prefers_json(req: falcon.Request) -> bool:
    return req.client_prefers(["text/plain", "application/json"]) == "application/json"


def _validate_upload(req, resp, resource, params) -> None:
    resource.validate(req, resp, resource, params)


def wants_async(req: falcon.Request) -> bool:
    """RFC 7240: `Prefer: respond-async` asks for 202 now and the result later."""
    prefer = req.get_header("Prefer") or ""
    tokens = (part.split(";")[0].split("=")[0].strip().lower() for part in prefer.split(","))
    return "respond-async" in tokens


def client_request_id(req: falcon.Request) -> str | None:
    """An optional X-Request-Id lets a client find its result again if the answer is lost."""
    value = req.get_header("X-Request-Id")
    if value is None:
        return None
    if not is_request_id(value):
        raise falcon.HTTPBadRequest(description="X-Request-Id must be 32 lowercase hex digits")
    return value


class UploadResource:
    def __init__(self, gateway: Gateway, validate):
        self._gateway = gateway
        self.validate = validate  # a hook built from settings: the size and pixel limits

    @falcon.before(_validate_upload)
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        upload: Upload = req.context.upload
        if wants_async(req):
            self._accept(upload, client_request_id(req), resp)
            return
        result, timings = self._gateway.classify(upload, client_request_id(req))
        cached = bool(timings.get("cache_hit"))
        # Plain-text clients (loadgen) learn the same from a header.
        resp.set_header("X-Cache", "hit" if cached else "miss")
        if prefers_json(req):
            resp.media = {
                "id": result.id,
                "filename": upload.filename,
                "label": result.label,
                "top5": result.top5,
                "model": result.model,
                "version": result.version,
                "cached": cached,
                "instance": result.instance,
                # A cached answer's own time; the original request's stages stay in the result.
                "timings_ms": timings if cached else {**result.timings_ms, **timings},
            }
        else:
            resp.content_type = falcon.MEDIA_TEXT
            resp.text = f"{upload.stem}:{result.label}"

    def _accept(self, upload: Upload, request_id: str | None, resp: falcon.Response) -> None:
        request_id = self._gateway.submit(upload, request_id)
        resp.status = falcon.HTTP_202
        resp.location = f"/results/{request_id}"
        resp.set_header("Preference-Applied", "respond-async")
        resp.media = {"id": request_id, "state": "queued", "location": resp.location}


class ResultResource:
    def __init__(self, gateway: Gateway):
        self._gateway = gateway

    def on_get(self, req: falcon.Request, resp: falcon.Response, request_id: str) -> None:
        known = is_request_id(request_id)
        result = self._gateway.result(request_id) if known else None
        if result is not None:
            resp.media = result.__dict__
            return
        state = self._gateway.state(request_id) if known else None
        if state is None:
            raise falcon.HTTPNotFound(description=f"no result for {request_id[:64]!r}")
        resp.status = falcon.HTTP_202
        resp.set_header("Retry-After", "1")
        resp.media = {"id": request_id, "state": state}


class HealthResource:
    def __init__(self, check):
        self._check = check

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        try:
            self._check()
        except Exception as error:  # noqa: BLE001 - any failure means "not ready"
            # The client hears only the class; the log says what failed.
            log_failure(log, "readiness check", error)
            raise falcon.HTTPServiceUnavailable(
                description=f"not ready: {type(error).__name__}"
            ) from None
        resp.content_type = falcon.MEDIA_TEXT
        resp.text = "ok"


class StatusResource:
    def __init__(self, snapshot):
        self._snapshot = snapshot  # queue depth and fleet size: the operator's (API key)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = self._snapshot()


# ---- The gateway ---------------------------------------------------------------------------------


class Gateway:
    def __init__(
        self,
        store: UploadStore,
        replies: Replies,
        *,
        async_deadline_s: float = 7 * 86400.0,
        backlog: Backlog | None = None,
        arrivals: ArrivalCounter | None = None,
        accepted: Callable[[], None] | None = None,  # an upload was queued (the scaler's wake)
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
        if self._accepted is not None:
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
