"""Request body limits per route, decided by Waitress's parser from the headers.

Waitress reads (and spools to disk) a whole body before the app sees the request, under one
server-wide `max_request_body_size`. Raising that for batch jobs raised it for every path, and
the API key was checked only after the body was on disk. So the parser here decides from the
request line and headers, before a body byte is read:

- only `POST /jobs` takes a body up to JOB_MAX_BYTES, `POST /upload` (and `POST /`) one upload;
  every other request at most SMALL_BODY_BYTES;
- with API_KEY set, a body past SMALL_BODY_BYTES is read only from a request that presents the
  key (401 otherwise);
- a declared Content-Length past the route's limit is refused at once; a chunked body is
  counted as it streams and refused at the limit;
- the job bodies in hand (being received, or spooled while their job is made) hold their size of
  JOB_SPOOL_MAX_BYTES, the disk they may take at once: a job past it is 503 with Retry-After.
  The hold ends when Waitress closes the request, or when a connection dropped mid-body lets its
  parser go (weakref.finalize): a client that walks away cannot keep the disk.

Each refusal is one line of plain text; Waitress closes the connection after it.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.utilities import Error, RequestEntityTooLarge

from runtime.budget import ByteBudget
from runtime.settings import Settings
from web.guards import key_matches
from web.uploads import MULTIPART_OVERHEAD

SMALL_BODY_BYTES = 64 * 1024  # any request but an upload or a job


@dataclass(frozen=True)
class BodyLimits:
    upload_bytes: int
    job_bytes: int
    api_key: str = ""
    job_spool: ByteBudget = field(default_factory=lambda: ByteBudget(8 * 1024**3))

    @classmethod
    def from_settings(cls, settings: Settings) -> BodyLimits:
        upload = settings.max_upload_bytes + MULTIPART_OVERHEAD
        spool = ByteBudget(settings.job_spool_max_bytes)
        return cls(upload, settings.job_max_bytes, settings.api_key, spool)

    @property
    def largest(self) -> int:
        return max(self.upload_bytes, self.job_bytes, SMALL_BODY_BYTES)

    @staticmethod
    def is_job(method: str, path: str) -> bool:
        return method == "POST" and path == "/jobs"

    def limit(self, method: str, path: str) -> int:
        if self.is_job(method, path):
            return self.job_bytes
        if method == "POST" and path in ("/upload", "/"):
            return self.upload_bytes
        return SMALL_BODY_BYTES


class Refused(Error):
    """A one-line refusal (Waitress's own errors are several lines, signed)."""

    def __init__(self, code: int, reason: str, body: str, headers=()):
        super().__init__(body)
        self.code, self.reason, self._headers = code, reason, list(headers)

    def to_response(self, ident=None):
        headers = [("Content-Type", "text/plain; charset=utf-8"), *self._headers]
        return f"{self.code} {self.reason}", headers, f"{self.reason}: {self.body}\n".encode()


class _Capped:
    """The server's Adjustments with one request's body limit."""

    def __init__(self, adj, max_body: int):
        self._adj, self.max_request_body_size = adj, max_body

    def __getattr__(self, name: str):
        return getattr(self._adj, name)


class RoutedParser(HTTPRequestParser):
    limits: BodyLimits  # set by channel_class
    _limit = 0
    _spooled = None  # the job body's hold on the spool budget, released once

    def received(self, data) -> int:
        routed = self.headers_finished
        consumed = super().received(data)
        if self.headers_finished and not routed:
            self._route()
        if isinstance(self.error, RequestEntityTooLarge):  # past the limit, declared or streamed
            self.error = self._too_large()
        return consumed

    def _route(self) -> None:
        if self.body_rcv is None or not (self.error is None or self._over_server_limit()):
            return
        self._limit = self.limits.limit(self.command, self.path)
        large = self.chunked or self.content_length > SMALL_BODY_BYTES
        expected = self.limits.api_key.encode()
        if large and expected and not self._key_presented(expected):
            self.error = Refused(
                401,
                "Unauthorized",
                "missing or wrong API key (X-Api-Key header): a large body needs it",
                [("WWW-Authenticate", "Bearer")],
            )
            self.completed = True
        elif self.content_length > self._limit:
            self.error, self.completed = self._too_large(), True
        elif self.limits.is_job(self.command, self.path) and not self._hold_spool():
            held = self.limits.job_spool.held // 2**20
            self.error = Refused(
                503,
                "Service Unavailable",
                f"{held} MiB of batch-job bodies are in hand: try again shortly",
                [("Retry-After", "5")],
            )
            self.completed = True
        else:  # Waitress refuses at >= max_request_body_size: a body of the limit passes
            self.adj = _Capped(self.adj, self._limit + 1)

    def _hold_spool(self) -> bool:
        size = self._limit if self.chunked else self.content_length
        spool = self.limits.job_spool
        if not spool.acquire(size, timeout_s=0):
            return False
        self._spooled = weakref.finalize(self, spool.release, size)
        return True

    def close(self) -> None:
        super().close()
        if self._spooled is not None:
            self._spooled()  # a finalizer runs once: a later collection releases nothing

    def _over_server_limit(self) -> bool:
        return isinstance(self.error, RequestEntityTooLarge)

    def _key_presented(self, expected: bytes) -> bool:
        headers = self.headers
        return key_matches(expected, headers.get("X_API_KEY"), headers.get("AUTHORIZATION"))

    def _too_large(self) -> Refused:
        limit = self._limit or self.limits.limit(self.command, self.path)
        return Refused(
            413,
            "Content Too Large",
            f"{self.command} {self.path[:64]} takes a body of at most {limit} bytes",
        )


def channel_class(limits: BodyLimits) -> type[HTTPChannel]:
    """Waitress's channel, its requests parsed with `limits`."""
    parser = type("LimitedParser", (RoutedParser,), {"limits": limits})
    return type("LimitedChannel", (HTTPChannel,), {"parser_class": parser})
