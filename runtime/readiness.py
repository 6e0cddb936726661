"""A worker's readiness, told through its own EC2 instance: a tag with the time its model loaded.

Between an instance's start and that tag, its worker is loading the model: the scaler reports it
as "starting", so the dashboard can say why a running worker answers nothing yet. The tag is
written by the worker (its role may set only this key, only on fleet instances) and read by the
scaler with the fleet listing it already makes; a start from stopped is newer than an old tag.
"""

from __future__ import annotations

import logging
import time

from runtime.resources import READY_AT_TAG

log = logging.getLogger(__name__)


def announce_ready(ec2, instance_id: str, now: float | None = None) -> bool:
    """Tag the instance ready; False (and a warning) when it cannot: readiness is only shown."""
    if not instance_id:
        return False
    stamp = f"{time.time() if now is None else now:.3f}"
    try:
        ec2.create_tags(Resources=[instance_id], Tags=[{"Key": READY_AT_TAG, "Value": stamp}])
    except Exception as error:  # noqa: BLE001 - the worker serves whether or not this is shown
        log.warning("could not tag %s ready (%s)", instance_id, type(error).__name__)
        return False
    return True


def is_ready(tags: dict[str, str], started_at: float) -> bool:
    """The tag says the model loaded during this run of the instance (not an earlier one)."""
    try:
        return float(tags[READY_AT_TAG]) >= started_at
    except (KeyError, ValueError):
        return False
