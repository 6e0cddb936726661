"""Uploads over real HTTP: prebuilt multipart bodies, one keep-alive connection per thread.

The standard library's http.client keeps the client's own CPU small: on a 2-core machine the
client shares the cores with the service it measures.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from bench.photos import Photo

_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


@dataclass(frozen=True)
class Outcome:
    status: int
    latency_s: float
    finished: float  # perf_counter when the answer was read
    body: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == 200


@dataclass(frozen=True)
class Batch:
    """What one round of uploads gave: every outcome, and its wall time."""

    outcomes: list[Outcome]
    wall_s: float

    @property
    def failed(self) -> int:
        return sum(1 for o in self.outcomes if not o.ok)


class Uploader:
    def __init__(self, host: str, port: int, timeout_s: float = 120.0):
        self._host, self._port, self._timeout_s = host, port, timeout_s
        self._local = threading.local()

    def upload(self, photo: Photo) -> Outcome:
        boundary = uuid.uuid4().hex
        body = _multipart(boundary, photo)
        headers = {
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Accept": "application/json",
        }
        started = time.perf_counter()
        for attempt in (1, 2):
            connection = self._connection()
            try:
                connection.request("POST", "/upload", body=body, headers=headers)
                response = connection.getresponse()
                payload = response.read()
                break
            except _STALE:
                # The server closed an idle keep-alive connection: nothing was answered yet.
                self._local.connection = None
                if attempt == 2:
                    raise
        finished = time.perf_counter()
        try:
            parsed = json.loads(payload) if response.status == 200 else {}
        except ValueError:
            parsed = {}
        return Outcome(response.status, finished - started, finished, parsed)

    def sequential(self, photos: list[Photo]) -> Batch:
        started = time.perf_counter()
        outcomes = [self.upload(photo) for photo in photos]
        return Batch(outcomes, time.perf_counter() - started)

    def concurrent(self, photos: list[Photo], concurrency: int) -> Batch:
        """All photos through `concurrency` client threads; wall time to the last answer."""
        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            started = time.perf_counter()
            outcomes = list(pool.map(self.upload, photos))
        return Batch(outcomes, max(o.finished for o in outcomes) - started)

    def _connection(self) -> http.client.HTTPConnection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout_s)
            self._local.connection = connection
        return connection


def _multipart(boundary: str, photo: Photo) -> bytes:
    head = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="myfile"; filename="{photo.filename}"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    return head + photo.data + f"\r\n--{boundary}--\r\n".encode()
