"""worker.lanes.Lanes in memory, as dramatiq's StubBroker is its broker in memory: unit tests hand
it to worker.pipeline.Pipeline and drive the production `run()` path without SQS.

What it keeps of SQS: a received message is in flight under a fresh receipt until it is deleted
or released; one neither (a message left for redelivery) stays in flight, as it would until its
visibility timeout; past `max_receive_count` receives a message goes to `dead` (the DLQ).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass

ACCOUNT_URL = "https://sqs.us-east-1.amazonaws.com/123456789012"
INTERACTIVE = f"{ACCOUNT_URL}/stub-requests"
JOBS = f"{ACCOUNT_URL}/stub-jobs"


@dataclass
class _Message:
    body: str
    sent_ms: int
    receives: int = 0
    state: str = "visible"  # visible, in hand, left (neither deleted nor released), gone


class StubLanes:
    def __init__(
        self,
        interactive_url: str = INTERACTIVE,
        job_url: str | None = None,
        *,
        max_receive_count: int | None = None,
        wait_s: float = 0.05,
    ):
        self.interactive_url, self.job_url = interactive_url, job_url
        self._max_receive_count, self._wait_s = max_receive_count, wait_s
        self._changed = threading.Condition()
        self._visible: dict[str, deque[_Message]] = {url: deque() for url in self._urls()}
        self._in_flight: dict[str, tuple[str, _Message]] = {}  # receipt -> (lane, message)
        self._receipts = (f"receipt-{n}" for n in itertools.count())
        self.deleted: dict[str, list[str]] = defaultdict(list)  # lane -> bodies
        self.dead: list[str] = []
        self.replies: dict[str, list[str]] = defaultdict(list)  # reply queue -> bodies
        self.held: set[str] = set()  # receipts between hold() and let_go()
        self.unknown_receipts: list[str] = []  # deleted or released, but not in flight
        self.running = False

    def _urls(self) -> list[str]:
        return [url for url in (self.interactive_url, self.job_url) if url]

    # What a test does --------------------------------------------------------------------

    def send(self, body: str, lane: str | None = None, sent_at: float | None = None) -> None:
        sent = time.time() if sent_at is None else sent_at
        with self._changed:
            self._visible[lane or self.interactive_url].append(_Message(body, int(sent * 1000)))
            self._changed.notify_all()

    def visible(self, lane: str | None = None) -> list[str]:
        with self._changed:
            return [m.body for m in self._visible[lane or self.interactive_url]]

    def in_flight(self) -> list[str]:
        with self._changed:
            return [m.body for _, m in self._in_flight.values()]

    def wait_settled(self, timeout_s: float = 30.0) -> None:
        """Until nothing is visible and nothing is in hand: every message received was deleted,
        released and received again, sent to `dead`, or left for redelivery."""
        with self._changed:
            settled = self._changed.wait_for(self._settled, timeout_s)
        assert settled, f"not settled: {self.visible()} visible, {self.in_flight()} in flight"

    def _settled(self) -> bool:
        nothing_visible = not any(self._visible.values())
        return nothing_visible and all(m.state == "left" for _, m in self._in_flight.values())

    # worker.lanes.Lanes ------------------------------------------------------------------

    def receive(
        self, batch_max: int, job_batch_max: int | None = None, jobs_ok: bool = True
    ) -> tuple[str, list[dict]]:
        def lanes_ready() -> list[str]:
            ready = [self.interactive_url] if self._visible[self.interactive_url] else []
            if jobs_ok and self.job_url and self._visible[self.job_url]:
                ready.append(self.job_url)
            return ready

        with self._changed:
            ready = self._changed.wait_for(lanes_ready, self._wait_s)
            if not ready:
                return self.interactive_url, []
            lane = ready[0]  # the interactive lane first
            most = batch_max if lane == self.interactive_url else (job_batch_max or batch_max)
            taken = []
            while self._visible[lane] and len(taken) < most:
                taken += self._take(lane, self._visible[lane].popleft())
            self._changed.notify_all()
            return lane, taken

    def _take(self, lane: str, message: _Message) -> list[dict]:
        message.receives += 1
        if self._max_receive_count and message.receives > self._max_receive_count:
            message.state = "gone"
            self.dead.append(message.body)
            return []
        message.state = "in hand"
        receipt = next(self._receipts)
        self._in_flight[receipt] = (lane, message)
        attributes = {"SentTimestamp": str(message.sent_ms)}
        attributes["ApproximateReceiveCount"] = str(message.receives)
        return [{"ReceiptHandle": receipt, "Body": message.body, "Attributes": attributes}]

    def start(self) -> None:
        self.running = True

    def stop(self) -> None:
        self.running = False

    def hold(self, url: str, receipts) -> None:
        with self._changed:
            self.held.update(receipts)

    def let_go(self, url: str, receipts) -> None:
        with self._changed:
            for receipt in receipts:
                self.held.discard(receipt)
                if receipt in self._in_flight:
                    self._in_flight[receipt][1].state = "left"
            self._changed.notify_all()

    def delete(self, url: str, receipts) -> None:
        with self._changed:
            for receipt in receipts:
                if (found := self._pop(url, receipt)) is not None:
                    found.state = "gone"
                    self.deleted[url].append(found.body)
            self._changed.notify_all()

    def release(self, url: str, receipts) -> None:
        with self._changed:
            for receipt in receipts:
                if (found := self._pop(url, receipt)) is not None:
                    found.state = "visible"
                    self._visible[url].append(found)
            self._changed.notify_all()

    def _pop(self, url: str, receipt: str) -> _Message | None:
        lane, message = self._in_flight.get(receipt, (None, None))
        if lane != url:
            self.unknown_receipts.append(receipt)
            return None
        del self._in_flight[receipt]
        return message

    def reply(self, reply_to: str, bodies) -> None:
        with self._changed:
            self.replies[reply_to].extend(bodies)


def drain(pipeline, lanes: StubLanes, timeout_s: float = 30.0) -> None:
    """Run the pipeline's production loop until the lanes are settled, then stop it warm."""
    runner = threading.Thread(target=pipeline.run, name="pipeline", daemon=True)
    runner.start()
    try:
        lanes.wait_settled(timeout_s)
    finally:
        pipeline.request_stop()
        runner.join(timeout_s)
    assert not runner.is_alive(), "the pipeline did not stop"
    assert not lanes.running, "the pipeline did not stop its visibility keepers"
