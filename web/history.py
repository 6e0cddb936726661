"""About ten minutes of /status, sampled by the web process itself (GET /status/history).

The page draws its charts from this, so a page opened or reloaded mid-burst shows the whole
burst, not the seconds since it loaded. Each web process keeps its own; nothing is stored.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

WINDOW_S = 600.0
INTERVAL_S = 2.0


class StatusHistory:
    def __init__(
        self,
        window_s: float = WINDOW_S,
        interval_s: float = INTERVAL_S,
        clock: Callable[[], float] = time.time,
    ):
        self.window_s, self.interval_s = window_s, interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._samples: deque[dict] = deque(maxlen=int(window_s / interval_s) + 1)
        self._decisions: dict[str, dict | str] = {}  # by identity, in arrival order
        self._limits: dict | None = None  # the scaler's fleet limits, as /status last gave them

    def record(self, status: dict) -> None:
        """Keep one sample of a /status snapshot, and any scaler decisions not seen yet."""
        now = self._clock()
        queue = status.get("queue") or {}
        sample = {
            "t": round(now, 3),
            "visible": queue.get("visible"),
            "in_flight": queue.get("in_flight"),
            "fleet": dict(status.get("fleet") or {}),
        }
        with self._lock:
            self._samples.append(sample)
            if isinstance(status.get("limits"), dict):
                self._limits = status["limits"]
            for decision in status.get("decisions") or []:
                self._decisions.setdefault(_identity(decision), decision)
            self._forget_before(now - self.window_s)

    def document(self) -> dict:
        with self._lock:
            self._forget_before(self._clock() - self.window_s)
            return {
                "window_s": self.window_s,
                "interval_s": self.interval_s,
                "samples": list(self._samples),
                "decisions": list(self._decisions.values()),
                "limits": self._limits,
            }

    def _forget_before(self, cutoff: float) -> None:
        while self._samples and self._samples[0]["t"] < cutoff:
            self._samples.popleft()
        # Decisions age out with the samples, and never outnumber them.
        for key in [k for k, d in self._decisions.items() if _at(d) < cutoff]:
            del self._decisions[key]
        while len(self._decisions) > self._samples.maxlen:
            del self._decisions[next(iter(self._decisions))]


def _identity(decision: dict) -> str:
    return f"{decision.get('at')}|{decision.get('text', '')}"


def _at(decision: dict) -> float:
    at = decision.get("at")
    return at if isinstance(at, int | float) else float("inf")
