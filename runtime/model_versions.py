"""Which model versions a worker serves, told through a tag on its own instance
(runtime.resources.MODELS_TAG), so the dashboard can say which version each worker runs.

The value is `<name>=<version> ...`, the default model first: written once the models are loaded
(next to the ready tag) and again after each rollout switch (worker.served.Rollout). The scaler
reads it with the fleet listing it already makes (scaler.fleet) and /status passes it on.
"""

from __future__ import annotations

import logging

from runtime.resources import MODELS_TAG

log = logging.getLogger(__name__)

TAG_VALUE_MAX = 256  # EC2's limit on a tag value


def format_models(classifiers) -> str:
    """`name=version ...` for the classifiers in hand ("?" for a version nobody knows)."""
    parts = [f"{c.name}={getattr(c, 'version', '') or '?'}" for c in classifiers]
    return " ".join(parts)[:TAG_VALUE_MAX]


def parse_models(value: str) -> tuple[tuple[str, str], ...]:
    """(name, version) pairs; a part that is not `name=version` is left out (another writer's
    tag, or one cut at the length limit, must not break the listing)."""
    pairs = (part.partition("=") for part in value.split())
    return tuple((name, version) for name, eq, version in pairs if name and eq and version)


def announce_models(ec2, instance_id: str, classifiers) -> bool:
    """Tag the instance with the versions it serves; False (and a warning) when it cannot: the
    versions are only shown."""
    if not instance_id:
        return False
    value = format_models(classifiers)
    try:
        ec2.create_tags(Resources=[instance_id], Tags=[{"Key": MODELS_TAG, "Value": value}])
    except Exception as error:  # noqa: BLE001 - the worker serves whether or not this is shown
        log.warning("could not tag %s with its models (%s)", instance_id, type(error).__name__)
        return False
    return True
