"""What a worker has used, told through a tag on its own instance (runtime.resources.USAGE_TAG).

The value is cumulative over one worker run,
`run=<start epoch> images=<n> busy_s=<s> <price class>=<n> ...`: a tag write and the scaler's
fleet listing are EC2 API calls, which AWS does not bill, and a cumulative figure survives a
missed write (the next one carries it). The scaler adds up the latest value of every run it has
seen (scaler.billing), and plans with the images per busy second of the runs in progress
(scaler.estimates.reported_rate).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from runtime.resources import USAGE_TAG

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Usage:
    run: str  # the worker process's start time: a restarted instance's counts begin again
    images: int
    requests: Mapping[str, int] = field(default_factory=dict)  # price class -> requests
    busy_s: float = 0.0  # wall time with a batch in hand (worker.stats): the rate's divisor


def format_usage(usage: Usage) -> str:
    # busy_s right after images: the value is cut at EC2's limit, and the rate must survive.
    parts = [f"run={usage.run}", f"images={usage.images}"]
    parts += [f"busy_s={usage.busy_s:.3f}"] if usage.busy_s > 0 else []
    parts += [f"{name}={n}" for name, n in sorted(usage.requests.items()) if n]
    return " ".join(parts)[:256]  # EC2's limit on a tag value


def parse_usage(value: str) -> Usage | None:
    """None for a value that is not one (another writer's tag must not break the listing)."""
    try:
        pairs = dict(part.split("=", 1) for part in value.split())
        run, images = pairs.pop("run"), int(pairs.pop("images"))
        busy_s = float(pairs.pop("busy_s", "0"))  # a worker from before it was told: 0
        requests = {name: int(n) for name, n in pairs.items()}
    except (KeyError, ValueError):
        return None
    if images < 0 or not 0 <= busy_s < math.inf or any(n < 0 for n in requests.values()):
        return None
    return Usage(run, images, requests, busy_s)


def publish_usage(ec2, instance_id: str, usage: Usage) -> bool:
    """Tag the instance with its usage; False (and a warning) when it cannot: only cost shows it."""
    if not instance_id:
        return False
    try:
        ec2.create_tags(
            Resources=[instance_id], Tags=[{"Key": USAGE_TAG, "Value": format_usage(usage)}]
        )
    except Exception as error:  # noqa: BLE001 - the worker serves whether or not this is shown
        log.warning("could not tag %s with its usage (%s)", instance_id, type(error).__name__)
        return False
    return True
