"""Checks an upload passes before any work: the optional API key, and the backlog limit."""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections.abc import Callable

import falcon

from runtime import sqs
from runtime.budget import ByteBudget
from runtime.failures import log_failure
from web.errors import Overloaded

log = logging.getLogger(__name__)


class ApiKeyRequired:
    """Falcon middleware: with an API key set, every route needs it but the few declared open.

    A route added later is closed by default; nothing has to remember to guard it. The key is
    checked after routing and before any responder or hook reads the body.
    """

    # GET (and HEAD) of these stay open: the health check, the page and its static files.
    OPEN_TEMPLATES = frozenset({"/healthz", "/"})
    OPEN_PREFIXES = ("/static/",)
    OPEN_METHODS = frozenset({"GET", "HEAD"})

    def __init__(self, api_key: str):
        self._expected = api_key.encode()

    def is_open(self, req: falcon.Request) -> bool:
        if req.method not in self.OPEN_METHODS:
            return False
        return req.uri_template in self.OPEN_TEMPLATES or req.path.startswith(self.OPEN_PREFIXES)

    def process_resource(self, req: falcon.Request, resp, resource, params) -> None:
        if not self._expected or self.is_open(req):
            return
        if not key_matches(
            self._expected, req.get_header("X-Api-Key"), req.get_header("Authorization")
        ):
            raise falcon.HTTPUnauthorized(
                description="missing or wrong API key (X-Api-Key header)",
                challenges=["Bearer"],
            )


def key_matches(expected: bytes, api_key_header: str | None, authorization: str | None) -> bool:
    """Whether the request presents `expected` in X-Api-Key or as a Bearer token."""
    given = (api_key_header or "").encode()
    bearer = authorization or ""
    if bearer.startswith("Bearer "):  # how Prometheus sends it
        given = bearer[7:].encode()
    # Constant time, so the key cannot be guessed byte by byte from response times.
    return hmac.compare_digest(given, expected)


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
                    self._depth = sqs.read_visible(self._sqs, self._queue_url)
                except Exception as error:  # noqa: BLE001 - unknown depth: let the enqueue decide
                    log_failure(log, "read the backlog", error, "keeping the last depth")
            return self._depth


class UploadMemory:
    """Bytes of upload bodies the app holds at once, at most `limit_bytes`.

    Waitress spools bodies to disk; the app reads each into memory to check and store it and
    keeps it while the client waits for its label. Without a bound 200 uploads of 10 MB took
    the process to 1.6 GB. An upload reserves its Content-Length before its body is read and
    gives it back when answered (this is also Falcon middleware); one that cannot get it
    within `wait_s` is told the service is too busy. One upload larger than the whole limit
    proceeds alone.
    """

    def __init__(self, limit_bytes: int, wait_s: float):
        self.limit_bytes, self._wait_s = limit_bytes, wait_s
        self._bytes = ByteBudget(limit_bytes)

    def take(self, req: falcon.Request, size: int) -> None:
        if not self._bytes.acquire(size, self._wait_s):
            raise Overloaded(f"{self._bytes.held // 2**20} MiB of uploads in hand")
        req.context.held_bytes = size

    def process_response(self, req, resp, resource, req_succeeded) -> None:
        size = req.context.get("held_bytes", 0)
        if size:
            req.context.held_bytes = 0
            self._bytes.release(size)
