"""Samples the target's `GET /status` (queue depth, fleet size) in the background.

Course servers have no /status; then the probe says so and the report draws latency only.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from dataclasses import dataclass

from loadgen.client import Client, Target

STATUS_PATH = "/status"
# "starting" (running, model still loading) is reported by this project's scaler only.
FLEET_STATES = ("pending", "running", "stopping", "stopped", "starting")


@dataclass(frozen=True)
class FleetSample:
    offset_s: float  # since the run started
    visible: int | None
    in_flight: int | None
    pending: int | None
    running: int | None
    stopping: int | None
    stopped: int | None
    starting: int | None = None  # part of running: workers still loading the model


def read_status(client: Client) -> dict | None:
    """The /status document, or None when the target has none (or answers nonsense)."""
    try:
        reply = client.get(STATUS_PATH)
    except (OSError, http.client.HTTPException):
        return None
    if reply.status != 200:
        return None
    try:
        doc = json.loads(reply.text)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) and isinstance(doc.get("fleet"), dict) else None


def to_sample(doc: dict, offset_s: float) -> FleetSample:
    queue = doc.get("queue") if isinstance(doc.get("queue"), dict) else {}
    fleet = doc["fleet"]
    return FleetSample(
        offset_s,
        _count(queue.get("visible")),
        _count(queue.get("in_flight")),
        *(_count(fleet.get(state)) for state in FLEET_STATES),
    )


def _count(value) -> int | None:
    # A state may be reported as a number or as the list of its instances.
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, list):
        return len(value)
    return None


class StatusPoller:
    """A daemon thread that records a FleetSample every `interval_s` until stopped."""

    def __init__(self, target: Target, t0: float, interval_s: float = 0.5, timeout_s: float = 2.0):
        self._client = Client(target, timeout_s)
        self._t0 = t0
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="status-poller", daemon=True)
        self.samples: list[FleetSample] = []

    def start(self) -> StatusPoller:
        self._thread.start()
        return self

    def fleet_idle(self) -> bool:
        """The latest sample has no running or pending worker."""
        if not self.samples:
            return False
        last = self.samples[-1]
        return last.running == 0 and not last.pending

    def stop(self) -> list[FleetSample]:
        self._stop.set()
        self._thread.join()
        return list(self.samples)

    def _loop(self) -> None:
        while True:
            doc = read_status(self._client)
            if doc is not None:
                self.samples.append(to_sample(doc, round(time.monotonic() - self._t0, 3)))
            if self._stop.wait(self._interval_s):
                break
        self._client.close()


def run_cost(before: dict | None, after: dict | None) -> dict | None:
    """What this run cost, from the `cost` of /status before and after it (this project's
    service only): compute and requests per 1,000 images answered in between, hosts apart."""
    try:
        start, end = before["cost"], after["cost"]
        parts = {k: end[k] - start[k] for k in ("compute", "requests", "fixed", "images")}
        currency, fixed_per_hour = end["currency"], end["fixed_per_hour"]
    except (KeyError, TypeError):
        return None
    images = parts["images"]
    per_1000 = (parts["compute"] + parts["requests"]) * 1000 / images if images > 0 else None
    return {
        **parts,
        "per_1000_images": per_1000,
        "fixed_per_hour": fixed_per_hour,
        "currency": currency,
    }
