"""Retry AWS calls that fail for reasons that pass (throttling, capacity, 5xx, dropped connections).

botocore already retries some of these inside one call; this outer loop adds a longer backoff for
the scaler, whose calls can wait a few seconds but should not give up a tick on one blip.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from botocore.exceptions import BotoCoreError, ClientError

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
            log.warning("%s failed (%s); retry %d in %.1fs", what, error, attempt + 1, delay)
            sleep(delay)
    raise AssertionError("unreachable: the last attempt returns or raises")
