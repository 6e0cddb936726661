"""Checks a request passes before any work: the optional API key, the backlog limits, the job
rate, the upload memory budget."""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import threading
import time
from collections.abc import Callable

import falcon

from runtime import sqs
from runtime.budget import ByteBudget
from runtime.failures import log_failure
from web.errors import Overloaded, TooManyJobs

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
        what: str = "requests",
    ):
        self._sqs, self._queue_url, self._limit = sqs, queue_url, limit
        self._what = what  # what the queue holds, for the refusal
        self._ttl_s, self._clock = ttl_s, clock
        self._lock = threading.Lock()
        self._read_at = float("-inf")
        self._depth = 0

    def check(self) -> None:
        if self._limit and self.depth() > self._limit:
            raise Overloaded(f"{self._depth} {self._what} are waiting (limit {self._limit})")

    def depth(self) -> int:
        with self._lock:
            if self._clock() - self._read_at >= self._ttl_s:
                self._read_at = self._clock()
                try:
                    self._depth = sqs.read_visible(self._sqs, self._queue_url)
                except Exception as error:  # noqa: BLE001 - unknown depth: let the enqueue decide
                    log_failure(log, "read the backlog", error, "keeping the last depth")
            return self._depth


class JobRate:
    """At most `per_min` POST /jobs a minute per client (JOB_RATE_PER_MIN), a token bucket each:
    one client cannot queue job after job and hold the fleet. A client is the API key it
    presents (hashed: no key is kept), or its address when it presents none."""

    _MAX_CLIENTS = 10_000  # past this many buckets, those already full again are forgotten

    def __init__(self, per_min: int, clock: Callable[[], float] = time.monotonic):
        self._per_min, self._clock = per_min, clock
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, req: falcon.Request) -> None:
        if not self._per_min:
            return
        client, now, rate_s = _client(req), self._clock(), self._per_min / 60.0
        with self._lock:
            tokens, at = self._buckets.get(client, (float(self._per_min), now))
            tokens = min(float(self._per_min), tokens + (now - at) * rate_s)
            if tokens < 1:
                raise TooManyJobs(self._per_min, math.ceil((1 - tokens) / rate_s))
            self._buckets[client] = (tokens - 1, now)
            if len(self._buckets) > self._MAX_CLIENTS:
                self._forget_full(now, rate_s)

    def give_back(self, req: falcon.Request) -> None:
        """A request that created no job (refused, or AWS failed) does not count: only jobs
        queue work."""
        if not self._per_min:
            return
        client = _client(req)
        with self._lock:
            if client in self._buckets:
                tokens, at = self._buckets[client]
                self._buckets[client] = (min(float(self._per_min), tokens + 1), at)

    def _forget_full(self, now: float, rate_s: float) -> None:
        self._buckets = {
            client: (tokens, at)
            for client, (tokens, at) in self._buckets.items()
            if tokens + (now - at) * rate_s < self._per_min
        }


def _client(req: falcon.Request) -> str:
    key = req.get_header("X-Api-Key") or req.get_header("Authorization") or ""
    if key:
        return "key:" + hashlib.sha256(key.encode()).hexdigest()[:32]
    return f"addr:{req.remote_addr}"


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
