"""Metrics: the web's GET /metrics and /status figures, and a worker's own /metrics port.

Unit tests drive the Falcon app in-process and the collectors with real objects; the end-to-end
tests scrape a real web and a real worker over HTTP before and after a real upload.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter

import falcon.testing
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from runtime.messages import Result
from runtime.requests import by_class
from runtime.settings import Settings
from tests.conftest import Service, free_port
from tests.http_client import photos, upload, variants
from tests.support.clock import Clock
from tests.support.fake_gateway import FakeGateway
from tests.support.multipart import form
from tests.support.waiting import wait_until
from web.app import create_app
from web.errors import ClassificationFailed, ResultTimeout
from web.metrics import RecentRequests
from worker.metrics import StatsCollector, serve_metrics
from worker.stats import Stats

STATUS = {
    "queue": {"visible": 7, "in_flight": 3, "dlq": -1},
    "fleet": {"pending": 1, "running": 2, "stopping": 0, "stopped": 1, "starting": 1},
    "policy": "target",
    "decisions": [],
    "scaler": "ok",
}
OK = Result(id="c" * 32, filename="cat.jpg", model="m", label="tabby", top5=[])


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """Every sample of an exposition as {(name, sorted labels): value}."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


# ---- unit: the window behind /status ----------------------------------------------------------


def test_recent_requests_reports_throughput_and_nearest_rank_percentiles():
    clock = Clock()
    recent = RecentRequests(window_s=10, clock=clock)
    assert recent.summary()["latency_ms"] == {"p50": None, "p95": None}
    clock.now += 20  # older than the window: the rate is over the whole window
    for ms in range(1, 21):  # 1..20 ms
        recent.record(ms / 1e3)
    summary = recent.summary()
    assert summary["throughput_rps"] == 2.0  # 20 answers in 10 s
    assert summary["latency_ms"] == {"p50": 10.0, "p95": 19.0}


def test_recent_requests_forgets_answers_older_than_the_window():
    clock = Clock()
    recent = RecentRequests(window_s=10, clock=clock)
    recent.record(5.0)
    clock.now += 11
    recent.record(0.1)
    assert recent.summary()["latency_ms"] == {"p50": 100.0, "p95": 100.0}


def test_a_young_process_divides_by_its_age_not_the_window():
    clock = Clock()
    recent = RecentRequests(window_s=60, clock=clock)
    clock.now += 4
    for _ in range(8):
        recent.record(0.2)
    assert recent.summary()["throughput_rps"] == 2.0


# ---- unit: the app's middleware, /metrics and /status ----------------------------------------


def _client(outcome) -> falcon.testing.TestClient:
    gateway = FakeGateway(outcome)
    app = create_app(Settings(), gateway=gateway, ready=lambda: None, status=lambda: STATUS)
    return falcon.testing.TestClient(app)


def _post(client, path="/upload"):
    name, data, _ = photos()[0]
    body, headers = form({"myfile": (name, data)})
    return client.simulate_post(path, body=body, headers=headers)


@pytest.mark.parametrize(
    ("outcome", "status", "label"),
    [
        (OK, 200, "ok"),
        (ClassificationFailed(Result(id="c" * 32, filename="x", error="bad")), 422, "error"),
        (ResultTimeout("c" * 32, 1.0), 504, "timeout"),
    ],
)
def test_uploads_are_counted_by_status_and_outcome(outcome, status, label):
    client = _client(outcome)
    assert _post(client).status_code == status
    assert _post(client, path="/").status_code == status
    text = client.simulate_get("/metrics").text
    for route in ("/upload", "/"):
        assert (
            value(
                text,
                "classifier_http_requests_total",
                method="POST",
                route=route,
                status=str(status),
            )
            == 1
        )
        count = "classifier_http_request_duration_seconds_count"
        assert value(text, count, method="POST", route=route) == 1
    assert value(text, "classifier_results_total", outcome=label) == 2
    others = [o for o in ("ok", "error", "timeout") if o != label]
    assert all(value(text, "classifier_results_total", outcome=o) == 0 for o in others)


def test_a_rejected_upload_is_a_request_but_not_a_result():
    client = _client(OK)
    response = client.simulate_post("/upload", body=b"x", headers={"Content-Type": "text/plain"})
    assert response.status_code == 400
    text = client.simulate_get("/metrics").text
    labels = {"method": "POST", "route": "/upload", "status": "400"}
    assert value(text, "classifier_http_requests_total", **labels) == 1
    assert sum(value(text, "classifier_results_total", outcome=o) for o in ("ok", "error")) == 0


def test_metrics_carry_queue_and_fleet_from_the_status_source_and_skip_unknowns():
    response = _client(OK).simulate_get("/metrics")
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    openmetrics = _client(OK).simulate_get(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    assert openmetrics.text.rstrip().endswith("# EOF")
    text = response.text
    assert value(text, "classifier_queue_visible_messages") == 7
    assert value(text, "classifier_queue_in_flight_messages") == 3
    assert "classifier_queue_dead_letter_messages" not in text  # -1: AWS did not answer
    assert value(text, "classifier_fleet_instances", state="running") == 2
    assert value(text, "classifier_fleet_instances", state="stopped") == 1
    assert 'state="starting"' not in text  # a part of running, not a state to add up
    assert value(text, "classifier_fleet_starting_instances") == 1
    assert value(text, "classifier_scaler_up") == 1


def test_two_apps_in_one_process_keep_their_own_counts():
    first, second = _client(OK), _client(OK)
    _post(first)
    labels = {"method": "POST", "route": "/upload", "status": "200"}
    assert value(first.simulate_get("/metrics").text, "classifier_http_requests_total", **labels)
    assert not value(
        second.simulate_get("/metrics").text, "classifier_http_requests_total", **labels
    )


def test_status_adds_this_process_throughput_and_latency():
    client = _client(OK)
    _post(client)
    status = client.simulate_get("/status").json
    assert status["queue"] == STATUS["queue"] and status["fleet"] == STATUS["fleet"]
    assert status["throughput_rps"] > 0
    assert status["latency_ms"]["p50"] > 0 and status["latency_ms"]["p95"] > 0


# ---- unit: the worker's collector -------------------------------------------------------------


def test_stats_collector_reads_stats_at_scrape_time():
    stats = Stats(
        images=12, errors=1, batches=3, busy_s=4.0, model_s=2.5, batch_sizes=Counter([1, 5, 10])
    )
    families = {f.name: f for f in StatsCollector(stats).collect()}
    assert families["classifier_worker_images"].samples[0].value == 12
    assert families["classifier_worker_errors"].samples[0].value == 1
    assert families["classifier_worker_batches"].samples[0].value == 3
    assert families["classifier_worker_busy_seconds"].samples[0].value == 4.0
    assert families["classifier_worker_model_seconds"].samples[0].value == 2.5
    assert families["classifier_worker_images_per_busy_second"].samples[0].value == 3.0
    buckets = {
        s.labels["le"]: s.value
        for s in families["classifier_worker_batch_size"].samples
        if s.name.endswith("_bucket")
    }
    assert (buckets["1"], buckets["4"], buckets["5"], buckets["10"], buckets["+Inf"]) == (
        1,
        1,
        2,
        3,
        3,
    )
    stats.images += 1  # the consume loop moves on; the next scrape sees it
    families = {f.name: f for f in StatsCollector(stats).collect()}
    assert families["classifier_worker_images"].samples[0].value == 13


def test_busy_seconds_served_count_the_batch_still_in_hand():
    # A worker that always has a batch in hand (one fetching while another runs the model)
    # never closes its busy period: /metrics must not read 0 busy seconds from it.
    stats = Stats(images=5)
    stats.begin()
    time.sleep(0.05)
    families = {f.name: f for f in StatsCollector(stats).collect()}
    busy = families["classifier_worker_busy_seconds"].samples[0].value
    assert stats.busy_s == 0.0 and busy >= 0.05
    rate = families["classifier_worker_images_per_busy_second"].samples[0].value
    assert 0 < rate <= 5 / 0.05


def test_stage_cpu_seconds_are_served_by_stage():
    stats = Stats(stage_cpu_s=Counter({"decode": 1.5, "model": 4.0}))
    families = {f.name: f for f in StatsCollector(stats).collect()}
    samples = families["classifier_worker_stage_cpu_seconds"].samples
    assert {s.labels["stage"]: s.value for s in samples} == {"decode": 1.5, "model": 4.0}


def test_a_stage_counts_the_cpu_time_of_its_thread_not_its_waits():
    stats = Stats()
    with stats.stage("decode"):
        deadline = time.thread_time() + 0.05
        while time.thread_time() < deadline:  # busy: 50 ms of CPU
            pass
    with stats.stage("fetch"):
        time.sleep(0.2)  # waiting costs no CPU
    assert stats.stage_cpu_s["decode"] >= 0.05
    assert stats.stage_cpu_s["fetch"] < stats.stage_cpu_s["decode"]


def test_a_taken_metrics_port_costs_the_metrics_not_the_worker():
    port = serve_metrics(Stats(), 0, "127.0.0.1")  # 0: the OS picks a free port
    assert port
    assert serve_metrics(Stats(), port, "127.0.0.1") is None


# ---- end to end: a real web and worker over HTTP ----------------------------------------------


@pytest.fixture(scope="module")
def metered(moto_endpoint, tmp_path_factory):
    """One web and one worker with its metrics port; yields the service and that port's URL."""
    name = f"metrics{uuid.uuid4().hex[:8]}"
    service = Service(moto_endpoint, tmp_path_factory.mktemp(name), name)
    service.provision()
    port = free_port()
    service.start_worker(WORKER_METRICS_PORT=str(port))
    service.start_web()
    yield service, f"http://127.0.0.1:{port}/metrics"
    service.stop()


def test_web_metrics_move_after_an_upload(metered):
    url = metered[0].webs[0]
    before = requests.get(f"{url}/metrics", timeout=10).text
    assert "classifier_queue_visible_messages" in before
    assert value(before, "classifier_fleet_instances", state="running") == 0
    name, data, _ = photos()[0]
    assert upload(url, data, name).status_code == 200
    after = requests.get(f"{url}/metrics", timeout=10).text
    labels = {"method": "POST", "route": "/upload", "status": "200"}
    name = "classifier_http_requests_total"
    assert value(after, name, **labels) == value(before, name, **labels) + 1
    ok = "classifier_results_total"
    assert value(after, ok, outcome="ok") == value(before, ok, outcome="ok") + 1
    count = "classifier_http_request_duration_seconds_count"
    assert value(after, count, method="POST", route="/upload") >= 1


def test_worker_metrics_port_answers_and_counts_images(metered):
    service, worker_metrics = metered
    name, data, _ = photos()[1]
    assert upload(service.webs[0], data, name).status_code == 200
    text = requests.get(worker_metrics, timeout=10).text
    assert value(text, "classifier_worker_images_total") >= 1
    assert value(text, "classifier_worker_batches_total") >= 1
    assert value(text, "classifier_worker_batch_size_count") >= 1
    assert value(text, "classifier_worker_busy_seconds_total") > 0


@pytest.mark.filterwarnings("ignore::wsgiref.validate.WSGIWarning")
def test_random_methods_and_paths_share_one_label():
    """Issue 11 finding 5: each random method made a new series; /metrics grew without bound."""
    client = _client(OK)
    for _ in range(300):
        method = uuid.uuid4().hex[:12].upper()
        client.simulate_request(method, f"/{uuid.uuid4().hex}")
        client.simulate_request(method, "/upload")
    text = client.simulate_get("/metrics").text
    methods = {
        labels["method"]
        for (name, items) in samples(text)
        for labels in [dict(items)]
        if name == "classifier_http_requests_total"
    }
    assert methods == {"other"}  # the scrape itself is counted after it answers
    other = {"method": "other", "route": "other", "status": "404"}
    assert value(text, "classifier_http_requests_total", **other) == 300
    assert len(text) < 20_000


def _scrape(url: str) -> str | None:
    try:
        return requests.get(url, timeout=10).text
    except requests.ConnectionError:
        return None  # not serving yet: the worker serves /metrics once its model is loaded


def test_the_web_and_worker_count_the_s3_puts_they_send(moto_endpoint, tmp_path):
    # No result cache: the web's one S3 PUT per fresh upload is the upload itself.
    service = Service(moto_endpoint, tmp_path, f"count{uuid.uuid4().hex[:8]}", RESULT_CACHE="0")
    service.provision()
    port = free_port()
    service.start_worker(WORKER_METRICS_PORT=str(port))
    url = service.start_web()
    try:
        put = {"service": "s3", "operation": "PutObject"}
        before = requests.get(f"{url}/metrics", timeout=10).text
        worker_before = wait_until(
            lambda: _scrape(f"http://127.0.0.1:{port}/metrics"), "the worker's /metrics", 120
        )
        images = variants(5)
        for name, data in images:
            assert upload(url, data, name).status_code == 200
        after = requests.get(f"{url}/metrics", timeout=10).text
        counted = "classifier_aws_requests_total"
        assert value(after, counted, **put) - value(before, counted, **put) == len(images)
        # The worker stores one result per image (its reply goes by SQS).
        worker = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        assert value(worker, counted, **put) - value(worker_before, counted, **put) == len(images)
        # /status prices the web's own requests (no scaler here: nothing else to add). Its
        # snapshot is kept for a couple of seconds: wait for one taken after the uploads.
        sent = samples(requests.get(f"{url}/metrics", timeout=10).text)
        web_counts = by_class(
            ((dict(labels)["service"], dict(labels)["operation"]), int(n))
            for (name, labels), n in sent.items()
            if name == counted
        )
        assert web_counts["s3-put"] >= len(images)

        def priced():
            cost = requests.get(f"{url}/status", timeout=10).json()["cost"]
            return cost["request_counts"].get("s3-put", 0) >= web_counts["s3-put"] and cost

        cost = wait_until(priced, "the uploads' PUTs in /status", 30)
        assert cost["currency"] == "USD" and cost["requests"] > 0
    finally:
        service.stop()
