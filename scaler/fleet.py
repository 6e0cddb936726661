"""The EC2 side of the fleet: list our instances by tag and carry out planned actions.

An instance belongs to the fleet only if it carries FLEET_TAG = fleet name; every call that
changes state names instance ids taken from that tagged listing, so nothing else is ever touched.
Stop and start times are kept in tags of our own because EC2's StateTransitionReason is free text.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from datetime import datetime

from botocore.exceptions import ClientError

from runtime.readiness import is_ready
from runtime.resources import FLEET_TAG, STARTED_AT_TAG, STOPPED_AT_TAG
from runtime.retry import Backoff, retry
from runtime.settings import Settings
from scaler.plan import FLEET_STATES, Actions, Instance
from scaler.runners.base import InstanceView

log = logging.getLogger(__name__)

LOCAL_INSTANCE_TYPE = "t3.medium"
LOCAL_IMAGE_NAME = "amzn2-ami-hvm-*-x86_64-gp2"


class Fleet:
    def __init__(
        self,
        ec2,
        name: str,
        launch_template: str,
        *,
        clock: Callable[[], float] = time.time,
        backoff: Backoff = Backoff(),  # noqa: B008 - frozen
        sleep: Callable[[float], None] = time.sleep,
    ):
        self._ec2 = ec2
        self.name = name
        self.launch_template = launch_template
        self._clock = clock
        self._backoff = backoff
        self._sleep = sleep

    def _retry(self, what: str, call):
        return retry(call, what, self._backoff, self._sleep)

    def instances(self) -> list[Instance]:
        """Every fleet instance that is not (being) terminated."""
        filters = [
            {"Name": f"tag:{FLEET_TAG}", "Values": [self.name]},
            {"Name": "instance-state-name", "Values": list(FLEET_STATES)},
        ]

        def describe() -> list[Instance]:
            found = []
            for page in self._ec2.get_paginator("describe_instances").paginate(Filters=filters):
                for reservation in page["Reservations"]:
                    found.extend(_instance(raw) for raw in reservation["Instances"])
            return found

        found = self._retry("describe_instances", describe)
        # Defence in depth: whatever the filter did, act only on instances that carry our tag.
        return [i for i in found if i is not None]

    def apply(self, actions: Actions) -> None:
        """Carry out one plan. Terminate first: it frees capacity quotas for what follows."""
        now = f"{self._clock():.3f}"
        if actions.terminate:
            ids = list(actions.terminate)
            self._retry(
                "terminate_instances", lambda: self._ec2.terminate_instances(InstanceIds=ids)
            )
        if actions.start:
            ids = list(actions.start)
            self._tag(ids, STARTED_AT_TAG, now)
            self._retry("start_instances", lambda: self._ec2.start_instances(InstanceIds=ids))
        if actions.launch:
            self._launch(actions.launch)
        if actions.stop:
            ids = list(actions.stop)
            # Tag before stopping, so a stopped instance never lacks its stop time.
            self._tag(ids, STOPPED_AT_TAG, now)
            self._retry("stop_instances", lambda: self._ec2.stop_instances(InstanceIds=ids))

    def _tag(self, ids: list[str], key: str, value: str) -> None:
        tags = [{"Key": key, "Value": value}]
        self._retry("create_tags", lambda: self._ec2.create_tags(Resources=ids, Tags=tags))

    def _launch(self, count: int) -> list[str]:
        # One client token for all attempts: a retried launch after a lost reply is not a second.
        token = uuid.uuid4().hex
        request = {
            # All or nothing (moto honours only MinCount); a shortfall is retried next tick.
            "MinCount": count,
            "MaxCount": count,
            "LaunchTemplate": {"LaunchTemplateName": self.launch_template},
            "ClientToken": token,
            "TagSpecifications": [
                {"ResourceType": "instance", "Tags": [{"Key": FLEET_TAG, "Value": self.name}]}
            ],
        }
        reply = self._retry("run_instances", lambda: self._ec2.run_instances(**request))
        return [raw["InstanceId"] for raw in reply["Instances"]]


def _epoch(value) -> float:
    return value.timestamp() if isinstance(value, datetime) else float(value)


def _tag_float(tags: dict[str, str], key: str) -> float | None:
    try:
        return float(tags[key])
    except (KeyError, ValueError):
        return None


def _instance(raw: dict) -> Instance | None:
    tags = {t["Key"]: t["Value"] for t in raw.get("Tags", [])}
    if FLEET_TAG not in tags:
        return None
    launched = _epoch(raw["LaunchTime"])
    started = _tag_float(tags, STARTED_AT_TAG)
    # Real EC2 moves LaunchTime on each start; moto does not, so our start tag counts too.
    run_began = max(launched, started or 0.0)
    return Instance(
        instance_id=raw["InstanceId"],
        state=raw["State"]["Name"],
        launched_at=run_began,
        restarted=started is not None,
        stopped_at=_tag_float(tags, STOPPED_AT_TAG),
        ready=is_ready(tags, run_began),
    )


def view(instance: Instance) -> InstanceView:
    return InstanceView(
        instance_id=instance.instance_id,
        state=instance.state,
        launched_at=instance.launched_at,
        restarted=instance.restarted,
    )


def ensure_local_launch_template(ec2, settings: Settings) -> str:
    """Create the workers' launch template if missing (embedded AWS and compose); return its id.

    Real deployments make their own template with user data and roles; this one only has to be
    launchable, so it takes the first image the (emulated) account offers.
    """
    name = settings.launch_template
    try:
        found = ec2.describe_launch_templates(LaunchTemplateNames=[name])["LaunchTemplates"]
        return found[0]["LaunchTemplateId"]
    except ClientError as error:
        if "NotFound" not in error.response["Error"]["Code"]:
            raise
    # A narrow filter first: listing all of moto's ~1300 images takes seconds.
    images = ec2.describe_images(Filters=[{"Name": "name", "Values": [LOCAL_IMAGE_NAME]}])["Images"]
    images = images or ec2.describe_images()["Images"]
    if not images:
        raise RuntimeError("no machine image to base the local launch template on")
    images.sort(key=lambda image: image.get("Name", ""), reverse=True)
    # No fleet tag in the template: only the scaler's own launches join the fleet.
    data = {"ImageId": images[0]["ImageId"], "InstanceType": LOCAL_INSTANCE_TYPE}
    try:
        created = ec2.create_launch_template(LaunchTemplateName=name, LaunchTemplateData=data)
    except ClientError as error:
        if "AlreadyExists" not in error.response["Error"]["Code"]:
            raise
        # Another process created it between our look and our create.
        return ec2.describe_launch_templates(LaunchTemplateNames=[name])["LaunchTemplates"][0][
            "LaunchTemplateId"
        ]
    log.info("created launch template %s", name)
    return created["LaunchTemplate"]["LaunchTemplateId"]
