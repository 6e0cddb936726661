"""One request from start to Outcome: send, classify what happened, judge, record, show."""

from __future__ import annotations

import http.client
import sys
import threading
import time
from collections.abc import Callable

from tqdm import tqdm

from loadgen.client import Client, Reply, Upload, parse_label
from loadgen.inputs import Expected, accepted_labels
from loadgen.summary import Outcome


class Recorder:
    """Sends one request, turns what happened into an Outcome, and keeps the progress bar."""

    def __init__(
        self,
        uploads: Callable[[int], Upload],
        expected: Expected | None,
        client: Client,
        t0: float,
        wall0: float,
        bar: tqdm,
        print_replies: bool,
    ):
        self._uploads = uploads
        self._expected = expected
        self._client = client
        self._t0, self._wall0 = t0, wall0
        self._bar = bar
        self._print = print_replies
        self._lock = threading.Lock()
        self._errors = 0
        self.outcomes: list[Outcome] = []

    def issue(self, index: int, due: float) -> None:
        upload = self._uploads(index)
        label, reply = "", None
        try:
            reply = self._client.post(upload)
            status = str(reply.status)
        except TimeoutError:
            status = "timeout"
        except (OSError, http.client.HTTPException):
            status = "conn_error"
        latency_ms = (time.monotonic() - due) * 1000
        ok = reply is not None and 200 <= reply.status < 300
        if ok:
            label = parse_label(upload.filename, reply)
        outcome = Outcome(
            index=index,
            start_time=self._wall0 + (due - self._t0),
            offset_s=due - self._t0,
            filename=upload.filename,
            status=status,
            latency_ms=latency_ms,
            label=label,
            correct=self._judge(upload.filename, label) if ok else None,
            cached=reply.cached if ok else None,
        )
        self._record(outcome, reply)

    def _judge(self, filename: str, label: str) -> bool | None:
        if self._expected is None:
            return None
        accepted = accepted_labels(self._expected, filename)
        return None if accepted is None else label in accepted

    def _record(self, outcome: Outcome, reply: Reply | None) -> None:
        with self._lock:
            self.outcomes.append(outcome)
            if self._print:
                line = reply.text if outcome.ok else f"{outcome.filename}: {outcome.status}"
                tqdm.write(line, file=sys.stdout)
            if not outcome.ok:
                self._errors += 1
                self._bar.set_postfix(errors=self._errors, refresh=False)
            self._bar.update(1)
