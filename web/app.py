"""The Falcon app factory: it only wires routes to resources."""

from __future__ import annotations

import falcon

from runtime.settings import Settings
from web import errors
from web.gateway import Gateway
from web.guards import UploadMemory, make_api_key_check
from web.history import StatusHistory
from web.job_resources import JobResource, JobResultsResource, JobsResource
from web.jobs import JobStore
from web.metrics import MetricsResource, WebMetrics
from web.page import STATIC_DIR, PageResource
from web.resources import HealthResource, ResultResource, StatusResource, UploadResource
from web.uploads import make_validator


def create_app(
    settings: Settings,
    *,
    gateway: Gateway,
    ready,
    status,
    history: StatusHistory | None = None,
    jobs: JobStore | None = None,
) -> falcon.App:
    metrics = WebMetrics(status)
    memory = UploadMemory(settings.web_upload_memory_mb * 2**20, settings.result_timeout_s)
    app = falcon.App(middleware=[metrics, memory])
    validate = make_validator(settings.max_upload_bytes, settings.max_pixels, memory)
    check_api_key = make_api_key_check(settings.api_key)
    upload = UploadResource(gateway, validate, check_api_key)
    app.add_route("/upload", upload)
    app.add_route("/", PageResource(upload))  # GET: the page; POST: an upload, as on /upload
    app.add_route("/results/{request_id}", ResultResource(gateway, check_api_key))
    app.add_route("/jobs", JobsResource(jobs, check_api_key, settings.job_max_bytes))
    app.add_route("/jobs/{job_id}", JobResource(jobs, check_api_key))
    app.add_route("/jobs/{job_id}/results.csv", JobResultsResource(jobs, check_api_key))
    # A folder sent as a form is one part per image (Falcon's default stops at 64).
    multipart = app.req_options.media_handlers[falcon.MEDIA_MULTIPART]
    multipart.parse_options.max_body_part_count = settings.job_max_images + 16
    app.add_route("/healthz", HealthResource(ready))
    # With an API key set, only /healthz, the page and its static files stay open.
    app.add_route("/status", StatusResource(metrics.status, check_api_key))
    app.add_route(
        "/status/history", StatusResource((history or StatusHistory()).document, check_api_key)
    )
    app.add_route("/metrics", MetricsResource(metrics, check_api_key))
    app.add_static_route("/static", STATIC_DIR)
    errors.install(app)
    return app
