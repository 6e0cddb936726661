"""Bytes a process holds at once, within a limit: the web's upload bodies and the worker's
decodes share the rule.

A reservation waits while what is in hand plus its own size would pass the limit; one larger
than the whole limit proceeds alone, once nothing else is held (it is never refused for its
size: the size limits of uploads and images do that).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class ByteBudget:
    def __init__(self, limit_bytes: int):
        self.limit_bytes = limit_bytes
        self.held = 0
        self.peak = 0  # the most ever held at once: tests and logs read it
        self._free = threading.Condition()

    def acquire(self, size: int, timeout_s: float | None = None) -> bool:
        """Hold `size` bytes, waiting up to timeout_s (None: for as long as it takes); False if
        they did not fit in time."""
        with self._free:
            if not self._free.wait_for(lambda: self._fits(size), timeout=timeout_s):
                return False
            self.held += size
            self.peak = max(self.peak, self.held)
            return True

    def release(self, size: int) -> None:
        with self._free:
            self.held -= size
            self._free.notify_all()

    @contextmanager
    def reserved(self, size: int) -> Iterator[None]:
        self.acquire(size)
        try:
            yield
        finally:
            self.release(size)

    def _fits(self, size: int) -> bool:
        return self.held == 0 or self.held + size <= self.limit_bytes
