"""What the web tier measures: Prometheus metrics for GET /metrics, recent uploads for /status.

One Falcon middleware sees every answer: it counts it, times it, and for an upload logs
`request <id> answered <status> in <ms>` and keeps it in a short window from which /status
reports throughput and p50/p95 latency. Queue and fleet gauges are read from the status source
at scrape time, so /metrics and /status always agree.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

import falcon
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder

from runtime.logs import current_request_id
from runtime.requests import RequestCollector, RequestCounter
from runtime.stats import percentile

log = logging.getLogger(__name__)

UPLOAD_ROUTES = ("/upload", "/")
# Labels come from a fixed set: a client choosing the method or path must not create series.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})
OUTCOMES = ("ok", "error", "timeout")
# Uploads wait for a worker: seconds to a minute, and a cold fleet's first answer takes longer.
LATENCY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120)
_QUEUE_GAUGES = (
    ("visible", "classifier_queue_visible_messages", "requests waiting in the request queue"),
    ("in_flight", "classifier_queue_in_flight_messages", "requests received by a worker"),
    ("dlq", "classifier_queue_dead_letter_messages", "requests in the dead-letter queue"),
)


class RecentRequests:
    """Answered uploads of the last `window_s` seconds: throughput and latency percentiles."""

    def __init__(self, window_s: float = 30.0, clock: Callable[[], float] = time.monotonic):
        self._window_s, self._clock = window_s, clock
        self._started = clock()
        self._lock = threading.Lock()
        self._answers: deque[tuple[float, float]] = deque(maxlen=100_000)  # (answered at, s)

    def record(self, latency_s: float) -> None:
        with self._lock:
            self._answers.append((self._clock(), latency_s))

    def summary(self) -> dict:
        now = self._clock()
        with self._lock:
            while self._answers and self._answers[0][0] < now - self._window_s:
                self._answers.popleft()
            latencies = sorted(latency for _, latency in self._answers)
        # A process younger than the window has been counting for less than the window.
        span_s = max(1.0, min(self._window_s, now - self._started))
        return {
            "throughput_rps": round(len(latencies) / span_s, 3),
            "latency_ms": {
                "p50": _percentile_ms(latencies, 50),
                "p95": _percentile_ms(latencies, 95),
            },
            "window_s": self._window_s,
        }


def _percentile_ms(ordered: list[float], p: float) -> float | None:
    """Of sorted seconds, in ms; None (null in JSON) when nothing was answered."""
    seconds = percentile(ordered, p)
    return None if seconds is None else round(seconds * 1e3, 1)


class StatusCollector:
    """Queue depth and fleet by state, read from the status source when Prometheus scrapes."""

    def __init__(self, snapshot: Callable[[], dict]):
        self._snapshot = snapshot

    def describe(self):
        return []  # collected lazily: registering must not call AWS

    def collect(self):
        status = self._snapshot()
        queue = status.get("queue", {})
        for key, name, help_text in _QUEUE_GAUGES:
            value = queue.get(key)
            if isinstance(value, int) and value >= 0:  # -1: AWS did not answer; leave a gap
                yield GaugeMetricFamily(name, help_text, value=value)
        fleet = GaugeMetricFamily(
            "classifier_fleet_instances", "fleet instances by state", labels=["state"]
        )
        counts = dict(status.get("fleet", {}))
        # "starting" is a part of "running", not a state of its own: a sum over states must not
        # count those instances twice, so it is a gauge of its own.
        starting = counts.pop("starting", None)
        for state, count in sorted(counts.items()):
            fleet.add_metric([state], count)
        yield fleet
        if isinstance(starting, int):
            yield GaugeMetricFamily(
                "classifier_fleet_starting_instances",
                "running instances whose worker is still loading its model",
                value=starting,
            )
        yield GaugeMetricFamily(
            "classifier_scaler_up",
            "1 if the scaler's status answered",
            value=1 if status.get("scaler") == "ok" else 0,
        )
        yield from _cost_gauges(status.get("cost") or {})


def _cost_gauges(cost: dict):
    """The cost so far by part, and per 1,000 images answered (runtime.costs)."""
    parts = GaugeMetricFamily(
        "classifier_cost_dollars",
        "what the service has cost so far (US dollars): compute, requests, fixed hosts",
        labels=["part"],
    )
    for part in ("compute", "requests", "fixed"):
        if isinstance(cost.get(part), int | float):
            parts.add_metric([part], cost[part])
    yield parts
    if isinstance(cost.get("per_1000_images"), int | float):  # null until an image is answered
        yield GaugeMetricFamily(
            "classifier_cost_per_1000_images_dollars",
            "compute and requests per 1,000 images answered (US dollars; fixed hosts apart)",
            value=cost["per_1000_images"],
        )


class WebMetrics:
    """The web tier's registry and the Falcon middleware that feeds it."""

    def __init__(
        self,
        status: Callable[[], dict],
        recent: RecentRequests | None = None,
        requests: RequestCounter | None = None,
    ):
        self._status = status
        self.recent = recent or RecentRequests()
        # A registry per app: two apps in one process (tests) keep their own counts.
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "classifier_http_requests",
            "HTTP requests answered",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "classifier_http_request_duration_seconds",
            "time from request to answer",
            ["method", "route"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.results = Counter(
            "classifier_results",
            "accepted uploads by outcome: ok, error (any failure answer), timeout (504)",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in OUTCOMES:
            self.results.labels(outcome)  # present at 0 before the first upload
        self.registry.register(StatusCollector(status))
        if requests is not None:
            self.registry.register(RequestCollector(requests))

    def status(self) -> dict:
        """The status source's snapshot plus this process's recent throughput and latency."""
        return {**self._status(), **self.recent.summary()}

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The registry in the format the scraper asks for (Prometheus text or OpenMetrics)."""
        encode, content_type = choose_encoder(accept or "")
        return encode(self.registry), content_type

    # Falcon middleware.
    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.started = time.perf_counter()
        current_request_id.set(None)  # Waitress reuses threads: forget the last request's id

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource, succeeded):
        elapsed_s = time.perf_counter() - req.context.get("started", time.perf_counter())
        route = req.uri_template or ("/static" if req.path.startswith("/static/") else "other")
        status = resp.status_code
        method = req.method if req.method in METHODS else "other"
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(elapsed_s)
        if req.method != "POST" or route not in UPLOAD_ROUTES:
            return
        request_id = current_request_id.get() or req.get_header("X-Request-Id") or "-"
        log.info("request %s answered %d in %.0f ms", request_id[:64], status, elapsed_s * 1e3)
        if "upload" in req.context:  # it passed validation, so it is a classification result
            self.results.labels(_outcome(status)).inc()
            self.recent.record(elapsed_s)


def _outcome(status: int) -> str:
    if status == 200:
        return "ok"
    return "timeout" if status == 504 else "error"


class MetricsResource:
    def __init__(self, metrics: WebMetrics):
        self._metrics = metrics

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.data, resp.content_type = self._metrics.exposition(req.get_header("Accept"))
