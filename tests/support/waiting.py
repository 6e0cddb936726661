"""Waiting for an event instead of sleeping for a guess of how long it takes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T],
    what: str,
    timeout_s: float = 60.0,
    every_s: float = 0.2,
    ignoring: tuple[type[BaseException], ...] = (),
) -> T:
    """Return the predicate's first truthy value; fail with `what` after timeout_s.

    The timeout only stops a broken test from hanging (the machine is shared: be generous);
    `ignoring` names errors that mean "not yet" (a server still starting), reported at the end."""
    deadline = time.monotonic() + timeout_s
    last_error: BaseException | None = None
    while True:
        try:
            value = predicate()
        except ignoring as error:
            value, last_error = None, error
        if value:
            return value
        if time.monotonic() > deadline:
            seen = f" (last error: {last_error})" if last_error else ""
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}{seen}")
        time.sleep(every_s)
