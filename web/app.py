"""The Falcon app factory: it only wires routes to resources."""

from __future__ import annotations

import falcon

from cloud.settings import Settings
from web import errors
from web.gateway import Gateway
from web.resources import HealthResource, ResultResource, StatusResource, UploadResource
from web.uploads import make_validator


def create_app(settings: Settings, *, gateway: Gateway, ready, status) -> falcon.App:
    app = falcon.App()
    validate = make_validator(settings.max_upload_bytes, settings.max_pixels)
    upload = UploadResource(gateway, validate)
    app.add_route("/upload", upload)
    app.add_route("/", upload)
    app.add_route("/results/{request_id}", ResultResource(gateway))
    app.add_route("/healthz", HealthResource(ready))
    app.add_route("/status", StatusResource(status))
    errors.install(app)
    return app
