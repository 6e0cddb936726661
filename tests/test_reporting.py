"""The worker's throughput report: images per busy second, never a 0 from an idle worker; and
its usage tag, told at once on the first images and then at growing gaps."""

from __future__ import annotations

import time

from runtime.usage import Usage
from worker.reporting import ThroughputReporter, UsageReporter
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


def test_busy_time_counts_the_batch_still_in_hand():
    stats = Stats()
    stats.begin()  # a worker that always has a batch in hand never closes its busy period
    time.sleep(0.01)
    assert stats.busy_s == 0.0 and stats.busy_so_far_s > 0.0
    stats.end(10, 0, 10)
    assert stats.busy_so_far_s == stats.busy_s > 0.0


def test_a_worker_never_without_a_batch_in_hand_still_reports_its_rate():
    stats, published = Stats(), []
    stats.begin()  # the next batch fetched while this one runs: the busy period never closes
    stats.begin()
    time.sleep(0.01)
    stats.end(10, 0, 10)
    assert stats.busy_s == 0.0
    rate = ThroughputReporter(stats, published.append).report()
    assert rate is not None and rate > 0 and published == [rate]


class FakeStats:
    def __init__(self):
        self.images, self.busy_so_far_s = 0, 0.0


class Requests:
    """What runtime.requests.RequestCounter tells the reporter: requests sent, by price class."""

    def __init__(self):
        self.sent = 0

    def by_class(self) -> dict[str, int]:
        return {"sqs": self.sent} if self.sent else {}


def test_usage_is_told_at_once_on_the_first_images_then_at_doubling_gaps_up_to_the_interval():
    stats, requests, written, clock = FakeStats(), Requests(), [], [0.0]
    reporter = UsageReporter(
        stats, requests, written.append, run="7.0", interval_s=15.0, clock=lambda: clock[0]
    )

    def at(t: float, images: int, busy_s: float, sent: int) -> bool:
        clock[0], stats.images, stats.busy_so_far_s, requests.sent = t, images, busy_s, sent
        return reporter.report() is not None

    # Idle: the receives change the figures, told only every interval.
    assert [at(t, 0, 0.0, int(t)) for t in (1, 2, 14)] == [False, False, False]
    assert at(15, 0, 0.0, 15)
    # The first batch is told on the next look; then 1, 2, 4, 8, 15, 15 s apart.
    assert at(16, 10, 0.5, 16)
    times = [t for t in range(17, 70) if at(t, 10 * t, t / 2, t)]
    assert times == [17, 19, 23, 31, 46, 61]
    assert written[1] == Usage("7.0", 10, {"sqs": 16}, 0.5)
    # Nothing new: nothing written, whenever it looks; the last figures at the end.
    assert not at(100, 10 * 61, 61 / 2, 61)
    clock[0], stats.images = 101.0, 700
    reporter.stop()
    assert written[-1].images == 700
