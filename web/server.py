"""The web tier's HTTP server: Waitress, made safe against clients that open and hold sockets.

Three things keep one client from taking the process down or locking others out:

- Waitress polls with poll(), not select(): select() cannot watch a descriptor numbered 1,024 or
  more and raises `ValueError` out of the server loop, which killed the process (issue 27).
- At WEB_CONNECTION_LIMIT open connections the longest-idle ones (no request in the app) close
  first; only when none is idle does Waitress stop accepting (the kernel's backlog queues the
  rest). Waitress alone stops accepting at the limit, so idle keep-alive sockets held by one
  client would lock every other client out until WEB_IDLE_TIMEOUT_S.
- Past WEB_CONNECTIONS_PER_CLIENT connections from one client address, that client's own
  longest-idle ones close first (swept twice a second), so one client's idle sockets never count
  against the others.

A connection with a request in the app (an upload waiting for its worker) is never closed here.

Body limits per route (`BodyLimits`, `RoutedParser`), decided by Waitress's parser from the
headers. Waitress reads (and spools to disk) a whole body before the app sees the request, under one
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

import logging
import resource
import time
import weakref
from collections import defaultdict
from dataclasses import dataclass, field

from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import MultiSocketServer, TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher
from waitress.utilities import Error, RequestEntityTooLarge

from runtime.budget import ByteBudget
from runtime.settings import Settings
from web.guards import MULTIPART_OVERHEAD, key_matches

log = logging.getLogger(__name__)

# Descriptors the process needs besides client connections: two boto3 pools of WEB_THREADS
# sockets (uploads' S3 and SQS), background clients, logs, the trigger pipe, the listener.
SPARE_DESCRIPTORS = 128
# At the limit, shed idle connections down to this fraction of it, so that a client that keeps
# opening sockets costs one sweep per eighth of the limit rather than one per connection.
SHED_TO = 7 / 8
# A connection is idle between requests, and only after this long: a client that has just
# connected (its request not read yet) or just had its answer is not idle yet.
IDLE_AFTER_S = 0.5
# How often each client's idle connections past its bound are closed: one pass over the open
# connections twice a second, not one per accept.
SWEEP_EVERY_S = 0.5


class DescriptorError(RuntimeError):
    """The process may not open as many descriptors as its connection limit needs."""


def descriptors_needed(settings: Settings) -> int:
    return settings.web_connection_limit + 2 * settings.web_threads + SPARE_DESCRIPTORS


def raise_descriptor_limit(needed: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE to `needed` (never lower it); return the limit.
    Raises DescriptorError when the hard limit is below `needed`."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed or soft == resource.RLIM_INFINITY:
        return soft
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise DescriptorError(
            f"the open-files limit is {hard} and WEB_CONNECTION_LIMIT needs {needed}:"
            " lower WEB_CONNECTION_LIMIT or WEB_THREADS, or raise `ulimit -Hn`"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    return needed


def idle(channel: HTTPChannel, now: float) -> bool:
    """Between requests for IDLE_AFTER_S: none in the app, none being read, not closing."""
    busy = channel.requests or channel.request is not None
    closing = channel.will_close or channel.close_when_flushed
    return not (busy or closing) and now - channel.last_activity >= IDLE_AFTER_S


def shed(channels, count: int, now: float) -> int:
    """Close the `count` longest-idle of `channels`; return how many were marked."""
    idle_ones = (c for c in channels if idle(c, now))
    victims = sorted(idle_ones, key=lambda c: c.last_activity)[:count]
    for channel in victims:
        channel.will_close = True  # Waitress closes it in this loop pass (writable -> close)
    return len(victims)


def peer(channel: HTTPChannel) -> str:
    return channel.addr[0] if isinstance(channel.addr, tuple) else str(channel.addr)


class SheddingServer(TcpWSGIServer):
    """Waitress's TCP server with idle connections shed at the limits (module docstring)."""

    per_client = 0  # set by create_server
    _next_sweep = 0.0

    def readable(self):
        now = time.time()
        if now >= self._next_sweep:
            self._next_sweep = now + SWEEP_EVERY_S
            self._sweep_clients(now)
        # _map also holds this listener and the trigger: the same count Waitress checks.
        if self.accepting and len(self._map) >= self.adj.connection_limit:
            target = int(self.adj.connection_limit * SHED_TO)
            if closed := shed(self.active_channels.values(), len(self._map) - target, now):
                log.warning(
                    "%d open connections, the limit: closed the longest-idle %d",
                    len(self._map),
                    closed,
                )
        return super().readable()

    def _sweep_clients(self, now: float) -> None:
        # Only idle ones give way: a client whose connections all carry uploads (loadgen at a
        # high concurrency, many users behind one NAT or proxy) is bounded by the whole limit,
        # the threads and the upload guards, never turned away here.
        by_client = defaultdict(list)
        for channel in self.active_channels.values():
            by_client[peer(channel)].append(channel)
        for channels in by_client.values():
            if len(channels) > self.per_client:
                shed(channels, len(channels) - self.per_client, now)


# Body limits per route ----------------------------------------------------------------------

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


def create_server(app, settings: Settings):
    """The Waitress server for `app` on settings.host:settings.port (not yet running)."""
    limits = BodyLimits.from_settings(settings)  # per route, from the headers (above)
    raise_descriptor_limit(descriptors_needed(settings))
    adj = Adjustments(
        host=settings.host,
        port=settings.port,
        threads=settings.web_threads,
        connection_limit=settings.web_connection_limit,
        backlog=2048,
        max_request_body_size=limits.largest + 1,
        # Closes only connections with no request in the app, so a stalled body (slowloris)
        # is dropped while an upload that waits for its worker is kept.
        channel_timeout=settings.web_idle_timeout_s,
        cleanup_interval=max(1, settings.web_idle_timeout_s // 2),
        asyncore_use_poll=True,
        ident="classifier",
    )
    dispatcher = ThreadedTaskDispatcher()
    dispatcher.set_thread_count(adj.threads)
    socket_map: dict = {}
    servers = []
    for sockinfo in adj.listen:
        server = SheddingServer(app, socket_map, dispatcher=dispatcher, adj=adj, sockinfo=sockinfo)
        server.channel_class = channel_class(limits)
        # Above the whole limit the bound means nothing: the limit's own shedding applies.
        server.per_client = min(settings.web_connections_per_client, adj.connection_limit)
        servers.append(server)
    if len(servers) == 1:
        return servers[0]
    listening = [(s.effective_host, s.effective_port) for s in servers]
    return MultiSocketServer(socket_map, adj, listening, dispatcher)
