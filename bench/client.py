"""Uploads over real HTTP with the load generator's client (prebuilt multipart bodies, one
keep-alive connection per thread, on the standard library's http.client, so the client's own
CPU stays small on a machine it shares with the service it measures)."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from bench.photos import Photo
from loadgen.client import Client, Target, make_upload


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
        target = Target("http", host, port, "/upload")
        self._client = Client(target, timeout_s, accept="application/json")

    def upload(self, photo: Photo) -> Outcome:
        upload = make_upload("myfile", photo.filename, photo.data)
        started = time.perf_counter()
        reply = self._client.post(upload)
        finished = time.perf_counter()
        try:
            parsed = json.loads(reply.body) if reply.status == 200 else {}
        except ValueError:
            parsed = {}
        return Outcome(reply.status, finished - started, finished, parsed)

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
