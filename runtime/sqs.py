"""The SQS calls every tier makes, written once: batches of ten, best-effort batch calls that log
what failed, and queue depths parsed from attributes by one pure function.

A queue attribute is a string from a service (or an emulator); a depth that cannot be read is an
error, never a silent 0, as KEDA's SQS scaler treats it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from runtime.failures import log_failure

log = logging.getLogger(__name__)
T = TypeVar("T")

BATCH_MAX = 10  # SQS takes at most ten entries per batch call
VISIBLE = "ApproximateNumberOfMessages"
IN_FLIGHT = "ApproximateNumberOfMessagesNotVisible"
DEPTH_ATTRIBUTES = (VISIBLE, IN_FLIGHT)
# SQS counts fit an int32; more is a bad reading. (KEDA has parsed them as int64 since November
# 2024; a queue of two billion messages is a broken reading here, not a backlog to scale for.)
MAX_COUNT = 2**31 - 1
_DIGITS = re.compile(r"[0-9]{1,12}")


class QueueAttributeError(ValueError):
    """A queue attribute that is missing or not a count."""


@dataclass(frozen=True)
class Depth:
    visible: int  # waiting to be received
    in_flight: int  # received, not yet deleted

    @property
    def total(self) -> int:
        return self.visible + self.in_flight


def parse_count(attributes: Mapping[str, object] | None, name: str) -> int:
    """The count `name` of get_queue_attributes' `Attributes`; QueueAttributeError when it is
    missing, not a plain non-negative integer, or beyond MAX_COUNT."""
    value = (attributes or {}).get(name)
    if value is None:
        raise QueueAttributeError(f"queue attribute {name} is missing")
    if not isinstance(value, str) or not _DIGITS.fullmatch(value) or int(value) > MAX_COUNT:
        raise QueueAttributeError(f"queue attribute {name} is not a count: {str(value)[:40]!r}")
    return int(value)


def parse_depth(attributes: Mapping[str, object] | None) -> Depth:
    return Depth(parse_count(attributes, VISIBLE), parse_count(attributes, IN_FLIGHT))


def read_depth(sqs, queue_url: str) -> Depth:
    """Raises what boto3 raises, or QueueAttributeError."""
    response = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=list(DEPTH_ATTRIBUTES))
    return parse_depth(response.get("Attributes"))


def read_visible(sqs, queue_url: str) -> int:
    response = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=[VISIBLE])
    return parse_count(response.get("Attributes"), VISIBLE)


def chunks(items: Sequence[T], size: int = BATCH_MAX) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def _best_effort_batch(sqs, operation: str, queue_url: str, entries: list[dict], what: str) -> int:
    """Call `operation` for each chunk of ten; log (never raise) what fails. Returns how many
    entries were not done."""
    undone = 0
    for chunk in chunks(entries):
        batch = [{"Id": str(i), **entry} for i, entry in enumerate(chunk)]
        try:
            response = getattr(sqs, operation)(QueueUrl=queue_url, Entries=batch)
        except Exception as error:  # noqa: BLE001 - best effort: the caller says what it costs
            log_failure(log, what, error)
            undone += len(batch)
            continue
        failed = response.get("Failed") or []
        if failed:
            first = failed[0]
            log.warning(
                "%s: %d of %d entries failed (%s: %s: %s)",
                what,
                len(failed),
                len(batch),
                operation,
                first.get("Code", "?"),
                first.get("Message", ""),
            )
            undone += len(failed)
    return undone


def send_batch(sqs, queue_url: str, bodies: Sequence[str], what: str) -> int:
    entries = [{"MessageBody": body} for body in bodies]
    return _best_effort_batch(sqs, "send_message_batch", queue_url, entries, what)


def delete_batch(sqs, queue_url: str, receipts: Sequence[str], what: str) -> int:
    entries = [{"ReceiptHandle": receipt} for receipt in receipts]
    return _best_effort_batch(sqs, "delete_message_batch", queue_url, entries, what)


def change_visibility_batch(
    sqs, queue_url: str, receipts: Sequence[str], timeout_s: int, what: str
) -> int:
    entries = [{"ReceiptHandle": r, "VisibilityTimeout": timeout_s} for r in receipts]
    return _best_effort_batch(sqs, "change_message_visibility_batch", queue_url, entries, what)
