"""The scaler's loop waits on this instead of sleeping a whole tick (runtime.wake)."""

from __future__ import annotations

import threading
from collections.abc import Callable


class Wake:
    """The scaler's side: the loop waits on it instead of sleeping a whole tick."""

    def __init__(self, idle: Callable[[], bool]):
        self._idle, self._event = idle, threading.Event()

    def wake(self) -> bool:
        """A wake from a web process: cut the wait short if the fleet saw nothing queued."""
        if not self._idle():
            return False
        self._event.set()
        return True

    def now(self) -> None:
        """Unconditionally (stopping)."""
        self._event.set()

    def wait(self, timeout_s: float) -> bool:
        woken = self._event.wait(timeout_s)
        self._event.clear()
        return woken
