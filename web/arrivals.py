"""Counts accepted uploads per second and publishes them for the scaler's arrival rate.

The scaler sizes the fleet by what is still to come, not only by what is queued; SQS does not say
how fast messages arrive (emulated AWS has no SQS metrics), so the web tier, which accepts every
upload, reports it. Counting is a dict update under a lock; publishing happens off the request
path, four times a second, for the seconds that are complete (the scaler reads a second 1.25 s
after it began; PutMetricData is called only when there is something to publish).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable

from runtime.cloudwatch import publish_arrivals
from runtime.failures import log_failure
from runtime.periodic import Every

log = logging.getLogger(__name__)

KEPT_S = 60  # counts that could not be published are retried this long, then dropped


class ArrivalCounter:
    def __init__(self, cloudwatch, fleet_name: str, clock: Callable[[], float] = time.time):
        self._cloudwatch, self._fleet, self._clock = cloudwatch, fleet_name, clock
        self._lock = threading.Lock()
        self._counts: Counter[int] = Counter()
        self._publisher: Every | None = None

    def add(self, n: int = 1) -> None:
        second = int(self._clock())
        with self._lock:
            self._counts[second] += n

    def flush(self, everything: bool = False) -> None:
        """Publish every complete second (all of them when stopping); failures wait a while."""
        current = int(self._clock())
        with self._lock:
            done = {s: n for s, n in self._counts.items() if everything or s < current}
            for second in done:
                del self._counts[second]
        if not done:
            return
        try:
            publish_arrivals(self._cloudwatch, self._fleet, done)
        except Exception:
            with self._lock:
                for second, n in done.items():
                    if second >= current - KEPT_S:
                        self._counts[second] += n
            raise

    def start(self, interval_s: float = 0.25) -> ArrivalCounter:
        self._publisher = Every(interval_s, self.flush, "arrivals").start()
        return self

    def stop(self) -> None:
        if self._publisher is not None:
            self._publisher.stop()
        try:
            self.flush(everything=True)
        except Exception as error:  # noqa: BLE001 - shutting down: say it and go
            log_failure(log, "publish the last arrival counts", error)
