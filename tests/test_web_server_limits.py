"""Issue 11 finding 7, over real sockets against a real web process (Waitress) and moto.

A multipart POST without Content-Length is a clear 411, not a 500; Waitress refuses a body much
larger than the largest any route takes (an upload, or a batch job's archive: here both 1 MiB)
before buffering it; a request that declares a body and never
sends it is dropped after WEB_IDLE_TIMEOUT_S, so a handful of them cannot lock out /healthz.
"""

from __future__ import annotations

import socket
import time

import pytest
import requests

from tests.conftest import Service

LIMIT = 1024 * 1024
IDLE_S = 3


@pytest.fixture(scope="module")
def web(moto_endpoint, tmp_path_factory):
    service = Service(moto_endpoint, tmp_path_factory.mktemp("limits"), "limits11")
    service.provision()
    url = service.start_web(
        WEB_THREADS="4",
        WEB_CONNECTION_LIMIT="8",
        MAX_UPLOAD_BYTES=str(LIMIT),
        JOB_MAX_BYTES=str(LIMIT),  # the server-wide body limit is the larger of the two
        WEB_IDLE_TIMEOUT_S=str(IDLE_S),
    )
    yield url
    service.stop()


def _connect(url: str, timeout_s: float = 30) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=timeout_s)


def _head(content_length: int | None) -> bytes:
    lines = [
        "POST /upload HTTP/1.1",
        "Host: test",
        "Content-Type: multipart/form-data; boundary=xyz",
    ]
    if content_length is not None:
        lines.append(f"Content-Length: {content_length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _status_line(sock: socket.socket) -> str:
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n", 1)[0].decode()


def test_multipart_without_content_length_is_411(web):
    body = b'--xyz\r\nContent-Disposition: form-data; name="myfile"; filename="a.jpg"\r\n\r\n'
    with _connect(web) as sock:
        sock.sendall(_head(None) + body + b"\xff\xd8\xff\r\n--xyz--\r\n")
        assert _status_line(sock).startswith("HTTP/1.1 411"), "expected 411 Length Required"


def test_a_body_far_over_the_limit_is_refused_before_it_is_sent(web):
    with _connect(web) as sock:
        sock.sendall(_head(LIMIT * 3))  # the headers only: the server must not wait for 3 MiB
        assert _status_line(sock).startswith("HTTP/1.1 413")


def test_requests_that_never_send_their_body_are_dropped(web):
    stalled = []
    try:
        for _ in range(12):  # more than WEB_CONNECTION_LIMIT
            sock = _connect(web)
            sock.sendall(_head(1000))  # promises 1000 bytes, sends none
            stalled.append(sock)
        # Waitress closes them after the idle timeout; then /healthz is reachable again.
        healthy = None
        for _ in range(10):
            try:
                healthy = requests.get(f"{web}/healthz", timeout=5)
                break
            except requests.RequestException:
                time.sleep(1)
        assert healthy is not None and healthy.status_code == 200
        closed = 0
        for sock in stalled:
            sock.settimeout(30)
            try:
                closed += sock.recv(1) == b""
            except OSError:
                closed += 1
        assert closed == len(stalled)
    finally:
        for sock in stalled:
            sock.close()
