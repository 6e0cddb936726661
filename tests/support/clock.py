"""The one fake clock: a callable that returns `now`, which a test moves by hand."""

from __future__ import annotations


class Clock:
    def __init__(self, now: float = 1_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now
