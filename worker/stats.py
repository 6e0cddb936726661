"""What a worker has done and where its CPU went: read by /metrics, the throughput report and
`make bench`.

Every stage counts the CPU time of the thread that runs it (`Stats.stage_cpu_s`): on a CPU the
worker's threads share its cores, so work moved to another thread is not free, and CPU seconds
say what each stage really costs.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

# The stages whose CPU time is counted, in the order a message meets them; worker.stages has one
# method of each name, and only that method is charged to it.
STAGES = ("receive", "fetch", "decode", "preprocess", "model", "store", "reply", "delete")


@dataclass
class Stats:
    images: int = 0
    errors: int = 0
    batches: int = 0
    busy_s: float = 0.0  # wall time with at least one batch in hand
    model_s: float = 0.0
    batch_sizes: Counter = field(default_factory=Counter)  # batch size -> batches
    stage_cpu_s: Counter = field(default_factory=Counter)  # stage -> CPU seconds of its threads
    _in_hand: int = 0
    _since: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _leave(self) -> None:
        self._in_hand -= 1
        if self._in_hand == 0:
            self.busy_s += time.perf_counter() - self._since

    @property
    def busy_so_far_s(self) -> float:
        """busy_s with the busy period still open: a worker that always has a batch in hand
        (one fetching while another runs the model) would otherwise report no busy time at all."""
        with self._lock:
            open_s = time.perf_counter() - self._since if self._in_hand else 0.0
            return self.busy_s + open_s

    @property
    def images_per_busy_s(self) -> float:
        busy_s = self.busy_so_far_s
        return self.images / busy_s if busy_s else 0.0

    @property
    def in_hand(self) -> int:
        """Batches begun and neither ended nor abandoned."""
        return self._in_hand

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Count the CPU time this thread spends in the block as stage `name`'s."""
        started = time.thread_time()
        try:
            yield
        finally:
            spent = time.thread_time() - started
            with self._lock:
                self.stage_cpu_s[name] += spent

    def begin(self) -> None:
        with self._lock:
            if self._in_hand == 0:
                self._since = time.perf_counter()
            self._in_hand += 1

    def abandon(self) -> None:
        """A batch given back before it finished: it no longer counts as in hand."""
        with self._lock:
            self._leave()

    def end(self, images: int, errors: int, size: int) -> None:
        with self._lock:
            self._leave()
            self.images += images
            self.errors += errors
            self.batches += 1
            self.batch_sizes[size] += 1
