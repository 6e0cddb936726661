"""Thin responders: each hands off to the gateway or the status source in a few lines."""

from __future__ import annotations

import re

import falcon

from web.gateway import Gateway
from web.uploads import Upload

_REQUEST_ID = re.compile(r"^[0-9a-f]{32}$")


def prefers_json(req: falcon.Request) -> bool:
    return req.client_prefers(["text/plain", "application/json"]) == "application/json"


def _validate_upload(req, resp, resource, params) -> None:
    resource.validate(req, resp, resource, params)


class UploadResource:
    def __init__(self, gateway: Gateway, validate):
        self._gateway = gateway
        self.validate = validate  # the hook is built from settings (size and pixel limits)

    @falcon.before(_validate_upload)
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        upload: Upload = req.context.upload
        result, timings = self._gateway.classify(upload)
        if prefers_json(req):
            resp.media = {
                "id": result.id,
                "filename": upload.filename,
                "label": result.label,
                "top5": result.top5,
                "model": result.model,
                "timings_ms": {**result.timings_ms, **timings},
            }
        else:
            resp.content_type = falcon.MEDIA_TEXT
            resp.text = f"{upload.stem}:{result.label}"


class ResultResource:
    def __init__(self, gateway: Gateway):
        self._gateway = gateway

    def on_get(self, req: falcon.Request, resp: falcon.Response, request_id: str) -> None:
        result = self._gateway.result(request_id) if _REQUEST_ID.match(request_id) else None
        if result is None:
            raise falcon.HTTPNotFound(description=f"no result for {request_id[:64]!r}")
        resp.media = result.__dict__


class HealthResource:
    def __init__(self, check):
        self._check = check

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        try:
            self._check()
        except Exception as error:  # noqa: BLE001 - any failure means "not ready"
            raise falcon.HTTPServiceUnavailable(
                description=f"not ready: {type(error).__name__}"
            ) from None
        resp.content_type = falcon.MEDIA_TEXT
        resp.text = "ok"


class StatusResource:
    def __init__(self, snapshot):
        self._snapshot = snapshot

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = self._snapshot()
