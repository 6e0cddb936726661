"""Checks an upload passes before any work: the optional API key, and the backlog limit."""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Callable

import falcon


class Overloaded(Exception):
    """The queue holds more than the configured backlog; the client should come back later."""


def make_api_key_check(api_key: str):
    """A `falcon.before` hook; with no key configured it lets everything through."""
    expected = api_key.encode()

    def check_api_key(req: falcon.Request, resp, resource, params) -> None:
        if not expected:
            return
        given = (req.get_header("X-Api-Key") or "").encode()
        bearer = req.get_header("Authorization") or ""
        if bearer.startswith("Bearer "):
            given = bearer[7:].encode()
        # Constant time, so the key cannot be guessed byte by byte from response times.
        if not hmac.compare_digest(given, expected):
            raise falcon.HTTPUnauthorized(
                description="missing or wrong API key (X-Api-Key header)",
                challenges=["Bearer"],
            )

    return check_api_key


class Backlog:
    """The request queue's depth, read at most once per `ttl_s` however many uploads ask."""

    def __init__(
        self,
        sqs,
        queue_url: str,
        limit: int,
        ttl_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._sqs, self._queue_url, self._limit = sqs, queue_url, limit
        self._ttl_s, self._clock = ttl_s, clock
        self._lock = threading.Lock()
        self._read_at = float("-inf")
        self._depth = 0

    def check(self) -> None:
        if self._limit and self.depth() > self._limit:
            raise Overloaded(f"{self._depth} requests are waiting (limit {self._limit})")

    def depth(self) -> int:
        with self._lock:
            if self._clock() - self._read_at >= self._ttl_s:
                self._read_at = self._clock()
                try:
                    attributes = self._sqs.get_queue_attributes(
                        QueueUrl=self._queue_url, AttributeNames=["ApproximateNumberOfMessages"]
                    )["Attributes"]
                    self._depth = int(attributes["ApproximateNumberOfMessages"])
                except Exception:  # noqa: BLE001, S110 - unknown depth: let the enqueue decide
                    pass
            return self._depth
