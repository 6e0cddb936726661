"""The Falcon app factory: it only wires routes to resources."""

from __future__ import annotations

import falcon

from runtime.requests import RequestCounter
from runtime.settings import Settings
from web import errors
from web.guards import ApiKeyRequired, JobRate, UploadMemory, make_validator
from web.history import StatusHistory
from web.jobs.resources import JobResource, JobResultsResource, JobsResource
from web.jobs.store import JobStore
from web.metrics import MetricsResource, WebMetrics
from web.page import STATIC_DIR, PageResource
from web.resources import Gateway, HealthResource, ResultResource, StatusResource, UploadResource


def create_app(
    settings: Settings,
    *,
    gateway: Gateway,
    ready,
    status,
    history: StatusHistory | None = None,
    jobs: JobStore | None = None,
    requests: RequestCounter | None = None,
) -> falcon.App:
    metrics = WebMetrics(status, requests=requests)
    memory = UploadMemory(settings.web_upload_memory_mb * 2**20, settings.result_timeout_s)
    # The key before anything reads a body; metrics count the refusals too.
    app = falcon.App(middleware=[metrics, ApiKeyRequired(settings.api_key), memory])
    validate = make_validator(
        settings.max_upload_bytes, settings.max_pixels, memory, settings.model_names
    )
    upload = UploadResource(gateway, validate)
    app.add_route("/upload", upload)
    app.add_route("/", PageResource(upload))  # GET: the page; POST: an upload, as on /upload
    app.add_route("/results/{request_id}", ResultResource(gateway))
    app.add_route(
        "/jobs",
        JobsResource(
            jobs,
            settings.job_max_bytes,
            memory,
            settings.model_names,
            rate=JobRate(settings.job_rate_per_min),
        ),
    )
    app.add_route("/jobs/{job_id}", JobResource(jobs))
    app.add_route("/jobs/{job_id}/results.csv", JobResultsResource(jobs))
    # A folder sent as a form is one part per image (Falcon's default stops at 64).
    multipart = app.req_options.media_handlers[falcon.MEDIA_MULTIPART]
    multipart.parse_options.max_body_part_count = settings.job_max_images + 16
    app.add_route("/healthz", HealthResource(ready))
    # With an API key set, only /healthz, the page and its static files stay open (ApiKeyRequired).
    app.add_route("/status", StatusResource(metrics.status))
    app.add_route("/status/history", StatusResource((history or StatusHistory()).document))
    app.add_route("/metrics", MetricsResource(metrics))
    app.add_static_route("/static", STATIC_DIR)
    errors.install(app)
    return app
