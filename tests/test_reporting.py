"""The worker's throughput report: images per busy second, never a 0 from an idle worker."""

from __future__ import annotations

from worker.reporting import ThroughputReporter
from worker.stats import Stats


def test_reports_rate_of_busy_time_only():
    stats, published = Stats(), []
    reporter = ThroughputReporter(stats, published.append)
    assert reporter.report() is None  # nothing done yet
    stats.images, stats.busy_s = 40, 2.0
    assert reporter.report() == 20.0
    assert reporter.report() is None  # idle since: no report
    stats.images, stats.busy_s = 70, 5.0
    assert reporter.report() == 10.0
    assert published == [20.0, 10.0]


def test_publish_failure_is_not_fatal():
    stats = Stats(images=5, busy_s=1.0)

    def failing(rate):
        raise ConnectionError("cloudwatch down")

    assert ThroughputReporter(stats, failing).report() == 5.0
