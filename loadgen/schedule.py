"""When requests start: closed loop (N threads, each sends its next request when its last reply
arrives) or open loop (Poisson arrivals at a fixed rate, whatever the replies do).

The schedule knows nothing of HTTP: it calls `issue(index, scheduled)` where `scheduled` is the
time.monotonic() instant the request was due, so open-loop latency can include the wait for a
free thread (without that, a saturated server would look faster than it is).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

Issue = Callable[[int, float], None]


@dataclass(frozen=True)
class Plan:
    num_request: int | None  # stop after this many requests ...
    duration_s: float | None  # ... or start none after this many seconds
    rate: float | None  # open loop: mean arrivals per second; None: closed loop
    concurrency: int  # closed loop: threads; open loop: most requests in flight

    def __post_init__(self):
        if (self.num_request is None) == (self.duration_s is None):
            raise ValueError("a plan is bounded by exactly one of num_request and duration_s")


def run(plan: Plan, issue: Issue, stop: threading.Event, t0: float, seed: int | None = None):
    """Runs the plan from monotonic instant `t0`; returns when every started request is done."""
    if plan.rate is None:
        _closed_loop(plan, issue, stop, t0)
    else:
        _open_loop(plan, issue, stop, t0, random.Random(seed))


class _Tickets:
    """Hands out request indexes until the plan's bound is reached; shared by the threads."""

    def __init__(self, plan: Plan, t0: float):
        self._limit = plan.num_request
        self._deadline = None if plan.duration_s is None else t0 + plan.duration_s
        self._next = 0
        self._lock = threading.Lock()

    def take(self) -> int | None:
        with self._lock:
            if self._limit is not None and self._next >= self._limit:
                return None
            if self._deadline is not None and time.monotonic() >= self._deadline:
                return None
            index, self._next = self._next, self._next + 1
            return index


def _closed_loop(plan: Plan, issue: Issue, stop: threading.Event, t0: float) -> None:
    tickets = _Tickets(plan, t0)

    def loop() -> None:
        while not stop.is_set():
            index = tickets.take()
            if index is None:
                return
            issue(index, time.monotonic())

    count = (
        plan.concurrency if plan.num_request is None else min(plan.concurrency, plan.num_request)
    )
    threads = [threading.Thread(target=loop, name=f"load-{i}", daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _open_loop(plan: Plan, issue: Issue, stop, t0: float, rng: random.Random) -> None:
    futures = []
    with ThreadPoolExecutor(plan.concurrency, thread_name_prefix="load") as pool:
        due, index = t0, 0
        while not stop.is_set():
            if plan.num_request is not None and index >= plan.num_request:
                break
            due += rng.expovariate(plan.rate)
            if plan.duration_s is not None and due - t0 >= plan.duration_s:
                break
            if stop.wait(max(0.0, due - time.monotonic())):
                break
            futures.append(pool.submit(issue, index, due))
            index += 1
        if stop.is_set():
            pool.shutdown(wait=True, cancel_futures=True)
    for future in futures:
        if not future.cancelled():
            future.result()  # `issue` records its own failures; anything else is a bug to show
