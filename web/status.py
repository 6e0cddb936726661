"""The service's state for /status: the queue as SQS counts it, the fleet as the scaler sees it."""

from __future__ import annotations

import json
import logging
import urllib.request

from runtime import sqs
from runtime.failures import log_failure

log = logging.getLogger(__name__)

_EMPTY_FLEET = {"pending": 0, "running": 0, "stopping": 0, "stopped": 0}


class StatusSource:
    def __init__(self, sqs, request_queue_url: str, dlq_url: str, scaler_url: str):
        self._sqs = sqs
        self._request_queue_url, self._dlq_url = request_queue_url, dlq_url
        self._scaler_url = scaler_url

    def snapshot(self) -> dict:
        scaler = self._scaler()
        return {
            "queue": {**self._queue(), "dlq": self._depth(self._dlq_url)},
            "fleet": scaler.get("fleet", dict(_EMPTY_FLEET)),
            "policy": scaler.get("policy", "unknown"),
            "decisions": scaler.get("decisions", []),
            "scaler": "ok" if scaler else "unreachable",
        }

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
