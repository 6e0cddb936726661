"""Retry AWS calls that fail for reasons that pass (throttling, capacity, 5xx, dropped connections).

botocore already retries some of these inside one call; `retry` adds a longer backoff for
calls that can wait a few seconds but should not give up on one blip (the scaler's). `Streak`
paces a loop that never gives up (a long poll, an intake): each failure in a row waits longer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from runtime.failures import describe

log = logging.getLogger(__name__)
T = TypeVar("T")

_TRANSIENT_CODES = frozenset(
    {
        "RequestLimitExceeded",
        "Throttling",
        "ThrottlingException",
        "InsufficientInstanceCapacity",
        "InternalError",
        "InternalFailure",
        "ServiceUnavailable",
        "Unavailable",
    }
)


@dataclass(frozen=True)
class Backoff:
    attempts: int = 4
    base_s: float = 0.5
    max_s: float = 8.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("Backoff needs at least one attempt")

    def delay_s(self, attempt: int) -> float:
        return min(self.max_s, self.base_s * 2**attempt)


def is_transient(error: Exception) -> bool:
    if isinstance(error, ClientError):
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return error.response.get("Error", {}).get("Code") in _TRANSIENT_CODES or status >= 500
    return isinstance(error, BotoCoreError)


def retry(
    call: Callable[[], T],
    what: str,
    backoff: Backoff = Backoff(),  # noqa: B008 - frozen, so one shared default is safe
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run call(); on a transient AWS error wait and try again, up to backoff.attempts times."""
    for attempt in range(backoff.attempts):
        try:
            return call()
        except (ClientError, BotoCoreError) as error:
            if not is_transient(error) or attempt == backoff.attempts - 1:
                raise
            delay = backoff.delay_s(attempt)
            log.warning(
                "%s failed (%s); retry %d in %.1fs", what, describe(error), attempt + 1, delay
            )
            sleep(delay)
    raise AssertionError("unreachable: the last attempt returns or raises")


class Streak:
    """The delay before the next try of a loop that keeps going: it grows with each failure in
    a row (backoff.delay_s) and starts again from the base after a success."""

    def __init__(self, backoff: Backoff):
        self._backoff = backoff
        self._failures = 0

    def failed(self) -> float:
        delay = self._backoff.delay_s(self._failures)
        self._failures = min(self._failures + 1, 32)  # 2**n stays a float the delay can cap
        return delay

    def succeeded(self) -> None:
        self._failures = 0
