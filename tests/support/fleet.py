"""Scaler test resources on moto: settings with queues, buckets, a fleet tag and a launch
template of their own; requests to queue; the fleet's instance states."""

from __future__ import annotations

import uuid

from embedded.provision import provision
from runtime.settings import Settings
from scaler.fleet import Fleet, ensure_local_launch_template


def unique_settings(prefix: str, **rules) -> Settings:
    """Settings whose buckets, queue, fleet tag and launch template no other test shares."""
    name = f"{prefix}{uuid.uuid4().hex[:10]}"
    return Settings(
        input_bucket=f"{name}-in",
        output_bucket=f"{name}-out",
        request_queue=f"{name}-requests",
        fleet_name=f"{name}-fleet",
        launch_template=f"{name}-lt",
        **rules,
    )


def provisioned(aws_client, prefix: str, **rules) -> Settings:
    """unique_settings with their resources made (buckets, queues, launch template)."""
    settings = unique_settings(prefix, **rules)
    provision(settings, aws_client("s3"), aws_client("sqs"))
    ensure_local_launch_template(aws_client("ec2"), settings)
    return settings


def send(sqs, settings: Settings, count: int) -> str:
    url = sqs.get_queue_url(QueueName=settings.request_queue)["QueueUrl"]
    for start in range(0, count, 10):
        entries = [
            {"Id": str(k), "MessageBody": "{}"} for k in range(start, min(count, start + 10))
        ]
        sqs.send_message_batch(QueueUrl=url, Entries=entries)
    return url


def fleet_states(ec2, settings: Settings) -> list[str]:
    return sorted(i.state for i in Fleet(ec2, settings.fleet_name, "").instances())
