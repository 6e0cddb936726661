"""The service's state for /status: the queue as SQS counts it, the fleet as the scaler sees it."""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.request
from collections.abc import Callable

from runtime import sqs
from runtime.costs import with_requests
from runtime.failures import log_failure
from runtime.prices import DEFAULT_PRICES, Prices
from runtime.requests import RequestCounter

log = logging.getLogger(__name__)

_EMPTY_FLEET = {"pending": 0, "running": 0, "stopping": 0, "stopped": 0, "starting": 0}
LABEL_SET = "ImageNet, 1000 classes"  # every model in the worker's registry answers in these


class StatusSource:
    """Each snapshot costs one call to the scaler (and two SQS reads when the scaler does not
    answer): it is kept for `ttl_s`, so any number of dashboards, scrapers and pollers cost that
    once per `ttl_s` per process."""

    def __init__(
        self,
        sqs,
        request_queue_url: str,
        dlq_url: str,
        scaler_url: str,
        model: str = "",
        *,
        models: tuple[str, ...] = (),
        ttl_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        requests: RequestCounter | None = None,
        prices: Prices = DEFAULT_PRICES,
    ):
        self._sqs = sqs
        self._requests, self._prices = requests, prices
        self._model = model
        self._models = models or ((model,) if model else ())  # the default first (MODELS)
        self._request_queue_url, self._dlq_url = request_queue_url, dlq_url
        self._scaler_url = scaler_url
        self._ttl_s, self._clock = ttl_s, clock
        self._lock = threading.Lock()  # callers during a read wait for it, not call AWS too
        self._kept: tuple[float, tuple[dict, dict | None]] | None = None

    def snapshot(self) -> dict:
        with self._lock:
            now = self._clock()
            if self._kept is None or now - self._kept[0] >= self._ttl_s:
                self._kept = (now, self._read())
            doc, fleet_cost = self._kept[1]
        # This process's requests are counted here, not read: always current, so a client
        # comparing two snapshots (loadgen's cost of a run) sees what happened in between.
        return {**doc, "cost": with_requests(fleet_cost, self._request_counts(), self._prices)}

    def _request_counts(self) -> dict:
        return self._requests.by_class() if self._requests is not None else {}

    def _read(self) -> tuple[dict, dict | None]:
        """The kept part of a snapshot, and the fleet's cost as the scaler counts it."""
        scaler = self._scaler()
        return {
            "time": round(time.time(), 3),  # the page's charts use the server's clock
            "model": self._model,
            "models": list(self._models),
            "labels": LABEL_SET,
            "queue": self._queue_of(scaler),
            "fleet": scaler.get("fleet", dict(_EMPTY_FLEET)),
            "workers": scaler.get("workers", []),  # id and model versions of each running one
            "policy": scaler.get("policy", "unknown"),
            "decisions": scaler.get("decisions", []),
            "limits": scaler.get("limits"),  # the fleet minimum and maximum the scaler keeps to
            # Boot times and throughput the scaler plans with, each measured or a default.
            "estimates": scaler.get("estimates"),
            "scaler": "ok" if scaler else "unreachable",
        }, scaler.get("cost")

    def _queue_of(self, scaler: dict) -> dict:
        """The scaler's counts from its latest tick when it answers (SQS bills every read, and
        the scaler reads them anyway); this process's own reads when it does not."""
        queue = scaler.get("queue")
        if isinstance(queue, dict) and all(
            isinstance(queue.get(k), int) for k in ("visible", "in_flight", "dlq")
        ):
            return {k: queue[k] for k in ("visible", "in_flight", "dlq")}
        return {**self._queue(), "dlq": self._depth(self._dlq_url)}

    def _queue(self) -> dict:
        try:
            depth = sqs.read_depth(self._sqs, self._request_queue_url)
        except Exception as error:  # noqa: BLE001 - status must answer even when AWS does not
            log_failure(log, "read the request queue's depth", error)
            return {"visible": -1, "in_flight": -1}
        return {"visible": depth.visible, "in_flight": depth.in_flight}

    def _depth(self, url: str) -> int:
        try:
            return sqs.read_visible(self._sqs, url)
        except Exception as error:  # noqa: BLE001 - -1 says "unknown" on the status page
            log_failure(log, "read the dead-letter queue's depth", error)
            return -1

    def _scaler(self) -> dict:
        try:
            with urllib.request.urlopen(self._scaler_url, timeout=1.0) as response:  # noqa: S310
                return json.loads(response.read())
        except (OSError, ValueError):
            return {}
