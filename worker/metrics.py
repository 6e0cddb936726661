"""A worker's own Prometheus /metrics: images, batches, busy and model time, read at scrape time.

The collector reads the pipeline's `Stats` (worker.stats) when Prometheus asks, so the pipeline
does no metrics work of its own. Off unless WORKER_METRICS_PORT is set; a port already taken
(several local workers sharing one setting) costs the metrics, never the worker.
"""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from runtime.requests import RequestCollector, RequestCounter
from runtime.sqs import BATCH_MAX

log = logging.getLogger(__name__)

BATCH_SIZE_BUCKETS = tuple(range(1, BATCH_MAX + 1))  # one per size an SQS receive can return


class StatsCollector:
    """Counters and the batch-size histogram of one pipeline's `Stats`."""

    def __init__(self, stats):
        self._stats = stats

    def describe(self):
        return []  # collected lazily

    def collect(self):
        stats = self._stats
        yield CounterMetricFamily(
            "classifier_worker_images", "images classified", value=stats.images
        )
        yield CounterMetricFamily(
            "classifier_worker_errors", "requests answered with an error", value=stats.errors
        )
        yield CounterMetricFamily(
            "classifier_worker_batches", "batches received and processed", value=stats.batches
        )
        yield CounterMetricFamily(
            "classifier_worker_busy_seconds",
            "seconds spent on batches (fetch, model, store, reply), the one in hand included",
            value=stats.busy_so_far_s,
        )
        yield CounterMetricFamily(
            "classifier_worker_model_seconds",
            "seconds spent in forward passes",
            value=stats.model_s,
        )
        yield GaugeMetricFamily(
            "classifier_worker_images_per_busy_second",
            "images per second while busy (what the scaler sizes the fleet by)",
            value=stats.images_per_busy_s,
        )
        yield _batch_sizes(dict(stats.batch_sizes))  # a copy: the consume loop counts on
        stages = CounterMetricFamily(
            "classifier_worker_stage_cpu_seconds",
            "CPU seconds of the threads running each stage (receive, fetch, decode, ...)",
            labels=["stage"],
        )
        for stage, seconds in sorted(dict(stats.stage_cpu_s).items()):
            stages.add_metric([stage], seconds)
        yield stages


def _batch_sizes(counts: dict[int, int]) -> HistogramMetricFamily:
    """From {batch size: batches} to cumulative buckets."""
    buckets = [
        (str(le), sum(n for size, n in counts.items() if size <= le)) for le in BATCH_SIZE_BUCKETS
    ]
    buckets.append(("+Inf", sum(counts.values())))
    return HistogramMetricFamily(
        "classifier_worker_batch_size",
        "messages per received batch",
        buckets=buckets,
        sum_value=sum(size * n for size, n in counts.items()),
    )


def serve_metrics(
    stats,
    port: int,
    addr: str = "0.0.0.0",  # noqa: S104
    requests: RequestCounter | None = None,
) -> int | None:
    """Serve /metrics for these stats (and the AWS requests sent) on a daemon thread; the bound
    port, or None if taken."""
    registry = CollectorRegistry()
    registry.register(StatsCollector(stats))
    if requests is not None:
        registry.register(RequestCollector(requests))
    try:
        server, _thread = start_http_server(port, addr, registry)
    except OSError as error:
        log.warning("worker metrics not served: port %d: %s", port, error.strerror or error)
        return None
    bound = server.server_port
    log.info("worker metrics on http://%s:%d/metrics", addr, bound)
    return bound
