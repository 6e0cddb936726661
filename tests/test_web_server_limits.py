"""Issue 11 finding 7 and issue 26 finding 4, over real sockets against a real web process
(Waitress) and moto.

A multipart POST without Content-Length is a clear 411, not a 500; a body larger than its route
takes is refused from the headers, before it is sent or spooled: only POST /jobs takes a job's
archive, /upload one upload, every other path 64 KiB; with API_KEY set a large body without the
key is 401 before it is read; a request that declares a body and never
sends it is dropped after WEB_IDLE_TIMEOUT_S, so a handful of them cannot lock out /healthz.
"""

from __future__ import annotations

import os
import socket
import time

import pytest
import requests

from tests.conftest import Service
from tests.job_client import zip_of
from tests.support.waiting import wait_until

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
        JOB_MAX_BYTES=str(LIMIT),
        WEB_IDLE_TIMEOUT_S=str(IDLE_S),
    )
    yield url
    service.stop()


def _connect(url: str, timeout_s: float = 30) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=timeout_s)


def _head(content_length: int | None, path: str = "/upload", *extra: str) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        "Host: test",
        "Content-Type: multipart/form-data; boundary=xyz",
        *extra,
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


@pytest.fixture(scope="module")
def routed(moto_endpoint, tmp_path_factory):
    """Jobs may send 8 MiB, 10 MiB of them in hand at once; an upload 1 MiB; an API key is set."""
    service = Service(moto_endpoint, tmp_path_factory.mktemp("routes"), "routes26")
    service.provision()
    url = service.start_web(
        MAX_UPLOAD_BYTES=str(LIMIT),
        JOB_MAX_BYTES=str(8 * LIMIT),
        JOB_SPOOL_MAX_BYTES=str(10 * LIMIT),
        API_KEY=KEY,
        WEB_THREADS="4",
    )
    yield url
    service.stop()


KEY = "routes-key"


def _answer(sock: socket.socket) -> tuple[str, bytes]:
    data = b""
    while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _length(data):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return head.split(b"\r\n", 1)[0].decode(), body


def _length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":", 1)[1])
    return 0


@pytest.mark.parametrize(
    ("path", "declared", "status"),
    [
        ("/upload", 2 * LIMIT, "413"),  # under the jobs limit, over the upload limit
        ("/healthz", 100 * 1024, "413"),
        ("/results/" + "a" * 32, 100 * 1024, "413"),
        ("/jobs", 4 * LIMIT, "401"),  # no key: refused before the archive is read
    ],
)
def test_a_body_over_its_routes_limit_is_refused_from_the_headers(routed, path, declared, status):
    key = () if path == "/jobs" else (f"X-Api-Key: {KEY}",)
    with _connect(routed) as sock:
        sock.sendall(_head(declared, path, *key))  # the headers only: no body is waited for
        line, body = _answer(sock)
    assert line.startswith(f"HTTP/1.1 {status}"), line
    assert len(body.decode().strip().splitlines()) == 1, body


def test_a_chunked_body_is_refused_at_its_routes_limit(routed):
    chunk = b"x" * 65536
    sent = 0
    with _connect(routed) as sock:
        sock.sendall(_head(None, "/upload", f"X-Api-Key: {KEY}", "Transfer-Encoding: chunked"))
        try:
            while sent < 8 * LIMIT:  # the jobs limit: the upload limit must stop it first
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
        except OSError:  # refused and closed while sending
            pass
        line, body = _answer(sock)
    assert line.startswith("HTTP/1.1 413"), line
    assert b"at most" in body and len(body.strip().splitlines()) == 1


def test_a_job_with_the_key_is_read_from_the_one_spool(routed):
    members = [(f"{i}.bin", os.urandom(300 * 1024)) for i in range(3)]  # past Waitress's memory
    headers = {"Content-Type": "application/zip", "X-Api-Key": KEY}
    accepted = requests.post(f"{routed}/jobs", data=zip_of(members), headers=headers, timeout=60)
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["total"] == 3


def test_job_bodies_in_hand_share_a_cap_on_disk(routed):
    """Issue 26 finding 4: a dozen large job bodies could fill the host's disk. What they may take
    at once is JOB_SPOOL_MAX_BYTES; past it a job is 503 with Retry-After, and a client that walks
    away mid-body gives its share back."""
    key = f"X-Api-Key: {KEY}"
    holder = _connect(routed)
    holder.sendall(_head(6 * LIMIT, "/jobs", key) + b"PK\x03\x04")  # 6 of the 10 MiB, then stalls

    def refused() -> tuple[str, bytes] | None:
        with _connect(routed, timeout_s=2) as sock:
            sock.sendall(_head(6 * LIMIT, "/jobs", key))
            try:
                data = sock.recv(65536)  # refused from its headers while the holder holds
            except TimeoutError:  # the holder's headers were not routed yet: this one waits
                return None
            while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _length(data):
                data += sock.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            return head.decode(), body

    try:
        head, body = wait_until(refused, "a second large job refused while the first holds")
        assert head.startswith("HTTP/1.1 503"), head
        assert "\r\nRetry-After: 5" in head, head
        assert b"batch-job bodies are in hand" in body and len(body.strip().splitlines()) == 1
    finally:
        holder.close()
    junk = b"PK\x03\x04" + b"\0" * (6 * LIMIT - 4)  # not a zip: read whole, then 400

    def admitted() -> requests.Response | None:
        response = requests.post(
            f"{routed}/jobs",
            data=junk,
            headers={"Content-Type": "application/zip", "X-Api-Key": KEY},
            timeout=60,
        )
        assert response.status_code in (400, 503), response.text
        return (response,) if response.status_code == 400 else None

    wait_until(admitted, "the walked-away body's share given back")
