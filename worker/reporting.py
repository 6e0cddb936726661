"""Report this worker's throughput while busy, so the scaler knows what one instance can do."""

from __future__ import annotations

import logging
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
        images, busy_s = self._stats.images, self._stats.busy_s
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
    """Every `interval_s` and at the end, tag the instance with what this run has used (images
    answered, AWS requests sent by class) when it changed: the scaler's cost figures read it."""

    def __init__(
        self,
        stats,
        requests: RequestCounter,
        publish: Callable[[Usage], object],
        run: str,
        interval_s: float = 15.0,
    ):
        self._stats, self._requests, self._publish, self._run = stats, requests, publish, run
        self._last: Usage | None = None
        self._every = Every(interval_s, self.report, "usage")

    def start(self) -> UsageReporter:
        self._every.start()
        return self

    def stop(self) -> None:
        self._every.stop()
        self.report()  # the last batches' figures, before the instance stops

    def report(self) -> Usage | None:
        usage = Usage(self._run, self._stats.images, self._requests.by_class())
        if usage == self._last:
            return None
        self._publish(usage)  # runtime.usage.publish_usage: a failure is a warning, retried next
        self._last = usage
        return usage
