"""Thin responders: each hands off to the gateway or the status source in a few lines."""

from __future__ import annotations

import logging

import falcon

from runtime.failures import log_failure
from runtime.messages import is_request_id
from web.gateway import Gateway
from web.guards import Upload

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
