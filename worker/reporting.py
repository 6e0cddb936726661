"""Report this worker's throughput while busy, so the scaler knows what one instance can do."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from runtime.failures import log_failure
from runtime.periodic import Every
from runtime.requests import RequestCounter
from runtime.usage import Usage

log = logging.getLogger(__name__)


class ThroughputReporter:
    """Every `interval_s`, publish images per busy second since the last report (if any work)."""

    def __init__(self, stats, publish: Callable[[float], None], interval_s: float = 15.0):
        self._stats, self._publish, self._interval_s = stats, publish, interval_s
        self._last = (0, 0.0)
        self._every = Every(interval_s, self.report, "throughput")

    def start(self) -> ThroughputReporter:
        self._every.start()
        return self

    def stop(self) -> None:
        self._every.stop()

    def report(self) -> float | None:
        images, busy_s = self._stats.images, self._stats.busy_so_far_s
        delta_images, delta_busy = images - self._last[0], busy_s - self._last[1]
        self._last = (images, busy_s)
        if delta_images <= 0 or delta_busy <= 0:
            return None  # idle: an idle worker's rate says nothing about its capacity
        rate = delta_images / delta_busy
        try:
            self._publish(rate)
        except Exception as error:  # noqa: BLE001 - the scaler falls back to its default
            log_failure(log, "publish throughput", error)
        return rate


class UsageReporter:
    """Tag the instance with what this run has used (images answered, busy seconds, AWS requests
    sent by class) when it changed: the scaler's cost figures and its throughput read it.

    The first images are told at once and the next writes come 1, 2, 4 ... seconds apart, up to
    every `interval_s`: a burst of a few seconds is measured while it lasts, and a long run
    writes no more often than before (EC2 throttles tag writes per account; it bills none).
    Changes with no images (an idle worker's receives) wait the full interval. Also at the end.
    """

    def __init__(
        self,
        stats,
        requests: RequestCounter,
        publish: Callable[[Usage], object],
        run: str,
        interval_s: float = 15.0,
        *,
        first_gap_s: float = 1.0,  # also how often it looks
        clock: Callable[[], float] = time.monotonic,
    ):
        self._stats, self._requests, self._publish, self._run = stats, requests, publish, run
        self._interval_s, self._first_gap_s, self._clock = interval_s, first_gap_s, clock
        self._last: Usage | None = None
        self._written_at, self._gap_s = clock(), interval_s
        self._every = Every(first_gap_s, self.report, "usage")

    def start(self) -> UsageReporter:
        self._every.start()
        return self

    def stop(self) -> None:
        self._every.stop()
        self.report(final=True)  # the last batches' figures, before the instance stops

    def report(self, final: bool = False) -> Usage | None:
        stats = self._stats
        usage = Usage(self._run, stats.images, self._requests.by_class(), stats.busy_so_far_s)
        if usage == self._last:
            return None
        now = self._clock()
        first_work = usage.images > 0 and (self._last is None or self._last.images == 0)
        if not (final or first_work or now - self._written_at >= self._gap_s):
            return None
        self._publish(usage)  # runtime.usage.publish_usage: a failure is a warning, retried next
        self._last, self._written_at = usage, now
        # Before any work the gap is the interval already, and doubling keeps it there.
        self._gap_s = self._first_gap_s if first_work else min(2 * self._gap_s, self._interval_s)
        return usage
