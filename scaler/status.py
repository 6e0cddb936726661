"""A small JSON status endpoint (GET /status) served from background threads, and POST /wake
for the web process beside the scaler (runtime.wake), with the token the scaler wrote.

The standard library's WSGI server, one thread per connection and a read timeout: a reader that
stalls (a half-open socket, a slow client) must not make every web process report the scaler
unreachable, as the single-threaded server did.
"""

from __future__ import annotations

import hmac
import json
import logging
import socketserver
import threading
from collections.abc import Callable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from runtime.wake import TOKEN_HEADER, WAKE_PATH

log = logging.getLogger(__name__)


READ_TIMEOUT_S = 5.0  # a request is a few hundred bytes: longer than this is a stalled socket


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a stalled reader's thread must not hold the scaler's exit


class _QuietHandler(WSGIRequestHandler):
    timeout = READ_TIMEOUT_S

    def log_message(self, format, *args):  # noqa: A002 - the standard library's signature
        log.debug("status: " + format, *args)


def status_app(
    status: Callable[[], dict],
    wake: Callable[[], bool] | None = None,
    token: str = "",
):
    def wake_app(environ, start_response):
        if environ.get("REQUEST_METHOD") != "POST":
            start_response("405 Method Not Allowed", [("Allow", "POST")])
            return [b""]
        given = environ.get("HTTP_" + TOKEN_HEADER.upper().replace("-", "_"), "")
        if not hmac.compare_digest(given.encode(), token.encode()):
            start_response("403 Forbidden", [("Content-Type", "application/json")])
            return [b'{"error": "wake needs the scaler\'s token"}']
        woken = wake()
        start_response("204 No Content" if woken else "202 Accepted", [])
        return [b""]

    def app(environ, start_response):
        if wake is not None and token and environ.get("PATH_INFO") == WAKE_PATH:
            return wake_app(environ, start_response)
        if environ.get("PATH_INFO") != "/status":
            start_response("404 Not Found", [("Content-Type", "application/json")])
            return [b'{"error": "not found"}']
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Allow", "GET, HEAD")])
            return [b""]
        body = json.dumps(status()).encode()
        start_response(
            "200 OK",
            [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
        )
        return [body]

    return app


class StatusServer:
    def __init__(
        self,
        status: Callable[[], dict],
        host: str = "127.0.0.1",
        port: int = 0,
        wake: Callable[[], bool] | None = None,
        token: str = "",
    ):
        self._server: WSGIServer = make_server(
            host,
            port,
            status_app(status, wake, token),
            server_class=_ThreadingWSGIServer,
            handler_class=_QuietHandler,
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="scaler-status", daemon=True
        )

    @property
    def port(self) -> int:
        return self._server.server_port

    def start(self) -> StatusServer:
        self._thread.start()
        log.info("status on http://%s:%d/status", *self._server.server_address[:2])
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
