"""What a worker tells the scaler through its own EC2 instance: tags with a time.

- READY_AT_TAG: its model loaded. Between an instance's start and that tag, its worker is loading
  the model: the scaler reports it as "starting", so the dashboard can say why a running worker
  answers nothing yet; a start from stopped is newer than an old tag.
- NOTICE_AT_TAG: the metadata service gave notice (a Spot interruption or a rebalance
  recommendation, worker.notice). The worker has stopped taking work; the scaler counts the
  instance as gone and replaces it at its next tick, without waiting for EC2 to end it.

Written by the worker (its role may set only these keys, only on fleet instances) and read by the
scaler with the fleet listing it already makes.
"""

from __future__ import annotations

import logging
import time

from runtime.resources import NOTICE_AT_TAG, READY_AT_TAG

log = logging.getLogger(__name__)


def _tag_now(ec2, instance_id: str, key: str, now: float | None) -> bool:
    if not instance_id:
        return False
    stamp = f"{time.time() if now is None else now:.3f}"
    try:
        ec2.create_tags(Resources=[instance_id], Tags=[{"Key": key, "Value": stamp}])
    except Exception as error:  # noqa: BLE001 - the worker goes on whether or not this is told
        log.warning("could not tag %s %s (%s)", instance_id, key, type(error).__name__)
        return False
    return True


def announce_ready(ec2, instance_id: str, now: float | None = None) -> bool:
    """Tag the instance ready; False (and a warning) when it cannot: readiness is only shown."""
    return _tag_now(ec2, instance_id, READY_AT_TAG, now)


def announce_notice(ec2, instance_id: str, now: float | None = None) -> bool:
    """Tag the instance under notice; False (and a warning) when it cannot: then the scaler sees
    the instance go when EC2 ends it, and the worker's drain still loses nothing."""
    return _tag_now(ec2, instance_id, NOTICE_AT_TAG, now)


def _since(tags: dict[str, str], key: str, started_at: float) -> bool:
    try:
        return float(tags[key]) >= started_at
    except (KeyError, ValueError):
        return False


def is_ready(tags: dict[str, str], started_at: float) -> bool:
    """The tag says the model loaded during this run of the instance (not an earlier one)."""
    return ready_at(tags, started_at) is not None


def ready_at(tags: dict[str, str], started_at: float) -> float | None:
    """When the model loaded during this run of the instance; None if it has not yet."""
    return float(tags[READY_AT_TAG]) if _since(tags, READY_AT_TAG, started_at) else None


def under_notice(tags: dict[str, str], started_at: float) -> bool:
    """The worker was given notice during this run of the instance."""
    return _since(tags, NOTICE_AT_TAG, started_at)
