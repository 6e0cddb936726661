"""The arrival rate the drain policy projects with, from the web tier's per-second upload counts.

Two rates, each the lesser of two back-to-back windows' rates: a burst fills one window and not
the other, so it reads as no rate at all (the warm pool handles it), while a sustained stream
fills both. `rate` uses short windows (ARRIVAL_WINDOW_S) to see a step up within a tick or two;
`steady` uses 30 s windows to tell a trickle that is still flowing from one that has stopped.
`last_at` is when the latest counted upload came, at the latest: the idle clock restarts there,
since a worker that takes a trickle's requests as they come leaves none for a tick to see.
The simulator computes the same from its exact arrival times.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone

from botocore.exceptions import BotoCoreError, ClientError

from runtime.cloudwatch import read_arrivals

log = logging.getLogger(__name__)

STEADY_WINDOW_S = 30.0
PUBLISH_LAG_S = 1.25  # one second to complete, a quarter for web.arrivals to publish it


@dataclass(frozen=True)
class Arrivals:
    rate_img_s: float
    steady_img_s: float
    measured: bool  # False: the counts could not be read, the last known rates are used
    # Epoch seconds: the end of the latest complete second with uploads; None if none was read.
    last_at: float | None = None


def lesser_window_rate(counts: Iterable[tuple[float, float]], end: float, window_s: float) -> float:
    """min(arrivals in (end - w, end], arrivals in (end - 2w, end - w]) / w."""
    recent = prior = 0.0
    for at, n in counts:
        if end - window_s < at <= end:
            recent += n
        elif end - 2 * window_s < at <= end - window_s:
            prior += n
    return min(recent, prior) / window_s


def last_arrival_at(counts: Iterable[tuple[float, float]], end: float) -> float | None:
    """The end of the latest second up to `end` that counted any upload (its latest moment)."""
    seconds = [at for at, n in counts if n > 0 and at <= end]
    return max(seconds) + 1.0 if seconds else None


class ArrivalGauge:
    """Reads the per-second counts once a tick (one GetMetricStatistics call)."""

    def __init__(
        self,
        cloudwatch,
        fleet_name: str,
        window_s: float,
        *,
        steady_window_s: float = STEADY_WINDOW_S,
        clock: Callable[[], float] = time.time,
    ):
        self._cloudwatch, self._fleet = cloudwatch, fleet_name
        self._window_s, self._steady_s = window_s, steady_window_s
        self._clock = clock
        self._last = Arrivals(0.0, 0.0, measured=False)

    def read(self) -> Arrivals:
        now = self._clock()
        try:
            counts = read_arrivals(
                self._cloudwatch,
                self._fleet,
                2 * max(self._window_s, self._steady_s) + 2,
                datetime.fromtimestamp(now, timezone.utc),
            )
        except (ClientError, BotoCoreError) as error:
            log.warning("arrival counts unreadable (%s); using the last rates", error)
            last = self._last
            self._last = Arrivals(last.rate_img_s, last.steady_img_s, False, last.last_at)
            return self._last
        # Each count is stamped with the start of its second, and the web tier publishes a
        # second within a quarter second of its end: the windows end at the last such second.
        end = float(math.floor(now - PUBLISH_LAG_S))
        self._last = Arrivals(
            lesser_window_rate(counts, end, self._window_s),
            lesser_window_rate(counts, end, self._steady_s),
            measured=True,
            last_at=last_arrival_at(counts, end),
        )
        return self._last
