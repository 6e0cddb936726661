"""The web app in-process with falcon's TestClient and a fake gateway (unit level)."""

from __future__ import annotations

import io
import re
from types import SimpleNamespace

import falcon.testing
import pytest
from falcon.inspect import inspect_routes
from PIL import Image

from runtime.messages import Result
from runtime.settings import Settings
from tests.job_client import zip_of
from tests.support.fake_gateway import FakeGateway
from tests.support.multipart import form
from web import errors
from web.app import create_app
from web.errors import ClassificationFailed, Overloaded, ResultTimeout, Unavailable
from web.guards import Backlog, UploadMemory, clean_filename
from web.jobs.resources import JobsResource
from web.jobs.store import JobLimits


def _jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), "red").save(buffer, format="JPEG")
    return buffer.getvalue()


def _client(outcome, **settings) -> tuple[falcon.testing.TestClient, FakeGateway]:
    gateway = FakeGateway(outcome)
    app = create_app(
        Settings(**settings), gateway=gateway, ready=lambda: None, status=lambda: {"queue": {}}
    )
    return falcon.testing.TestClient(app), gateway


def _post(
    client,
    data: bytes,
    filename: str = "cat.jpg",
    field: str = "myfile",
    model: str | None = None,
    path: str = "/upload",
    **headers,
):
    fields = {"model": model} if model is not None else {}
    body, form_headers = form({field: (filename, data)}, fields)
    return client.simulate_post(path, body=body, headers={**form_headers, **headers})


OK = Result(
    id="c" * 32,
    filename="cat.jpg",
    model="m",
    label="tabby",
    top5=[{"label": "tabby", "score": 1.0}],
)


def test_plain_text_answer_uses_the_stem():
    client, gateway = _client(OK)
    response = _post(client, _jpeg(), filename="dir/test_0.jpg")
    assert response.status_code == 200 and response.text == "test_0:tabby"
    assert gateway.seen[0].format == "JPEG" and gateway.seen[0].filename == "test_0.jpg"


@pytest.mark.parametrize(
    ("field", "path", "model"),
    [
        (None, "/upload", "efficientnet_lite0"),
        ("catdog", "/upload", "catdog"),
        (None, "/upload?model=catdog", "catdog"),
        ("", "/upload", "efficientnet_lite0"),
    ],
)
def test_an_upload_names_its_model_in_a_field_or_the_query(field, path, model):
    client, gateway = _client(OK, models="catdog=/models/catdog")
    response = _post(client, _jpeg(), model=field, path=path)
    assert response.status_code == 200, response.text
    assert gateway.seen[-1].model == model


@pytest.mark.parametrize(("field", "path"), [("dogcat", "/upload"), (None, "/upload?model=x")])
def test_an_unknown_model_is_a_400_that_lists_the_known_ones(field, path):
    client, gateway = _client(OK, models="catdog=/models/catdog")
    response = _post(client, _jpeg(), model=field, path=path)
    assert response.status_code == 400
    assert "unknown model" in response.text
    assert "this deployment serves efficientnet_lite0, catdog" in response.text
    assert gateway.seen == []


def test_content_type_from_client_is_ignored():
    client, gateway = _client(OK)
    response = _post(client, b"GIF89a" + b"\x00" * 10, filename="x.jpg")
    assert response.status_code == 415 and not gateway.seen


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (ResultTimeout("d" * 32, 60), 504),
        (ClassificationFailed(Result(id="d" * 32, filename="f", error="cannot decode")), 422),
        (Unavailable("could not queue the request"), 503),
    ],
)
def test_domain_errors_map_to_http(error, status):
    client, _ = _client(error)
    response = _post(client, _jpeg())
    assert response.status_code == status
    assert "\n" not in response.text.strip() and "Traceback" not in response.text
    if status == 504:
        assert "d" * 32 in response.text
    if status == 503:
        assert response.headers["retry-after"]


def test_size_limit_is_checked_before_reading():
    client, gateway = _client(OK, max_upload_bytes=1000)
    response = _post(client, _jpeg() + b"\x00" * 5000)
    assert response.status_code == 413 and not gateway.seen


def test_pixel_limit():
    client, gateway = _client(OK, max_pixels=500)
    assert _post(client, _jpeg()).status_code == 413 and not gateway.seen


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\cat.png", "cat.png"),
        ("a\x00b\nc.jpg", "abc.jpg"),
        ("", "upload"),
        (None, "upload"),
        ("..", "upload"),
        ("x" * 2000, "x" * 255),  # MAX_FILENAME, as an archive member's name
        ("фото.jpg", "фото.jpg"),
    ],
)
def test_clean_filename(raw, clean):
    assert clean_filename(raw) == clean


def test_overload_is_503_with_retry_after():
    client, _ = _client(Overloaded("9 requests are waiting (limit 5)"))
    response = _post(client, _jpeg())
    assert response.status_code == 503 and response.headers["retry-after"] == "5"
    assert "limit 5" in response.text


def test_api_key_is_required_when_set():
    client, gateway = _client(OK, api_key="s3cret-key")
    assert _post(client, _jpeg()).status_code == 401
    assert _post(client, _jpeg(), **{"X-Api-Key": "s3cret-kez"}).status_code == 401
    assert client.simulate_get("/results/" + "a" * 32).status_code == 401
    assert _post(client, _jpeg(), **{"X-Api-Key": "s3cret-key"}).status_code == 200
    assert _post(client, _jpeg(), Authorization="Bearer s3cret-key").status_code == 200
    assert len(gateway.seen) == 2
    assert client.simulate_get("/healthz").status_code == 200


def test_client_request_id_is_validated_and_passed_on():
    client, gateway = _client(OK)
    assert _post(client, _jpeg(), **{"X-Request-Id": "../../x"}).status_code == 400
    assert _post(client, _jpeg(), **{"X-Request-Id": "ab" * 16}).status_code == 200
    assert gateway.request_id == "ab" * 16


class CountingSqs:
    def __init__(self, depth):
        self.depth, self.calls = depth, 0

    def get_queue_attributes(self, **kwargs):
        self.calls += 1
        return {"Attributes": {"ApproximateNumberOfMessages": str(self.depth)}}


def test_backlog_reads_the_queue_at_most_once_per_ttl():
    now = [0.0]
    sqs = CountingSqs(depth=3)
    backlog = Backlog(sqs, "url", limit=5, ttl_s=1.0, clock=lambda: now[0])
    for _ in range(50):
        backlog.check()
    assert sqs.calls == 1
    sqs.depth = 9
    backlog.check()  # still the cached 3
    now[0] = 1.5
    with pytest.raises(Overloaded, match="limit 5"):
        backlog.check()
    assert sqs.calls == 2


def test_backlog_limit_zero_is_off():
    sqs = CountingSqs(depth=10**6)
    Backlog(sqs, "url", limit=0).check()
    assert sqs.calls == 0


# ---- issue 11 finding 9 -----------------------------------------------------------------------


class RecordingGateway(FakeGateway):
    def result(self, request_id):
        self.seen.append(request_id)
        return None


def test_a_result_id_with_a_trailing_newline_is_not_looked_up():
    gateway = RecordingGateway(None)
    app = create_app(Settings(), gateway=gateway, ready=lambda: None, status=lambda: {})
    client = falcon.testing.TestClient(app)
    assert client.simulate_get("/results/" + "a" * 32 + "%0A").status_code == 404
    assert gateway.seen == []  # `^...$` let "<hex>\n" through to an S3 key


@pytest.mark.parametrize("path", ["/status", "/metrics"])
def test_status_and_metrics_need_the_key_when_one_is_set(path):
    client, _ = _client(None, api_key="s3cret")
    assert client.simulate_get(path).status_code == 401
    assert client.simulate_get(path, headers={"X-Api-Key": "wrong"}).status_code == 401
    assert client.simulate_get(path, headers={"X-Api-Key": "s3cret"}).status_code == 200
    bearer = {"Authorization": "Bearer s3cret"}  # how Prometheus sends it
    assert client.simulate_get(path, headers=bearer).status_code == 200
    assert client.simulate_get("/healthz").status_code == 200  # load balancers stay keyless


class _LaterResource:
    def on_get(self, req, resp):
        resp.text = "secret"

    def on_post(self, req, resp):
        resp.text = "secret"


def test_every_route_needs_the_key_but_the_declared_open_ones():
    """The key is one middleware, not a hook each responder must remember: every route of the
    app, and one added after create_app, answers 401 without it."""
    app = create_app(
        Settings(api_key="s3cret"), gateway=FakeGateway(OK), ready=lambda: None, status=dict
    )
    app.add_route("/added-later", _LaterResource())
    client = falcon.testing.TestClient(app)
    open_ = {("GET", "/"), ("GET", "/healthz")}
    checked = 0
    for route in inspect_routes(app):
        path = re.sub(r"{[^}]+}", "a" * 32, route.path)
        for method in (m.method for m in route.methods if m.internal is False):
            if (method, route.path) in open_ or method == "OPTIONS":
                continue
            response = client.simulate_request(method, path)
            assert response.status_code == 401, (method, route.path, response.status_code)
            checked += 1
    assert checked >= 10  # /upload, POST /, /results, /jobs (3), /status (2), /metrics, later
    assert client.simulate_get("/added-later", headers={"X-Api-Key": "s3cret"}).text == "secret"
    assert client.simulate_get("/static/app.js").status_code == 200
    assert client.simulate_get("/").status_code == 200


class RecordingJobs:
    """Stands in for web.jobs.store.JobStore: records every id it is asked about."""

    def __init__(self):
        self.seen = []

    def progress(self, job_id):
        self.seen.append(job_id)
        return None

    rows = progress


@pytest.mark.parametrize("path", ["/jobs/{}%0A", "/jobs/{}%0A/results.csv"])
def test_a_job_id_with_a_trailing_newline_is_not_looked_up(path):
    jobs = RecordingJobs()
    app = create_app(
        Settings(), gateway=FakeGateway(None), ready=lambda: None, status=dict, jobs=jobs
    )
    response = falcon.testing.TestClient(app).simulate_get(path.format("a" * 32))
    assert response.status_code == 404 and "no job" in response.text
    assert jobs.seen == []  # `^...$` with .match let "<hex>\n" through to an S3 key


class FakeJobs:
    limits = JobLimits(max_images=10, max_image_bytes=1000)

    def admit(self):
        pass

    def from_entries(self, entries, source, model=""):
        return {"id": "j" * 32, "total": len(list(entries))}


def test_a_job_counts_against_the_upload_memory():
    """A job's images in memory take from the uploads' budget: with it all held, 503."""
    memory = UploadMemory(limit_bytes=10_000, wait_s=0)
    app = falcon.App(middleware=[memory])
    app.add_route("/jobs", JobsResource(FakeJobs(), 10**6, memory))
    errors.install(app)
    client = falcon.testing.TestClient(app)
    archive = zip_of([("cat.jpg", b"x")])
    assert client.simulate_post("/jobs", body=archive).status_code == 202
    memory.take(SimpleNamespace(context=falcon.Context()), 10_000)  # an upload holds it all
    busy = client.simulate_post("/jobs", body=archive)
    assert busy.status_code == 503 and "MiB of uploads in hand" in busy.text
