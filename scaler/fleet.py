"""The EC2 side of the fleet: list our instances by tag and carry out planned actions.

An instance belongs to the fleet only if it carries FLEET_TAG = fleet name; every call that
changes state names instance ids taken from that tagged listing, so nothing else is ever touched.
Stop and start times are kept in tags of our own because EC2's StateTransitionReason is free text.

A launch tries the market's options in order (`launch_options`): Spot in each allowed instance
type, then (spot-with-fallback) on-demand in each. EC2 refusing capacity or price moves on to the
next option at once; what was refused is said in the tick's decision line.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from datetime import datetime

from botocore.exceptions import ClientError

from runtime.model_versions import parse_models
from runtime.readiness import ready_at, under_notice
from runtime.resources import (
    FLEET_TAG,
    MODELS_TAG,
    SPARE_TAG,
    STARTED_AT_TAG,
    STOPPED_AT_TAG,
    USAGE_TAG,
)
from runtime.retry import Backoff, retry
from runtime.settings import MARKETS, Settings
from scaler.plan import FLEET_STATES, Actions, Instance
from scaler.runners.base import InstanceView

log = logging.getLogger(__name__)

LOCAL_INSTANCE_TYPE = "t3.medium"
LOCAL_IMAGE_NAME = "amzn2-ami-hvm-*-x86_64-gp2"

# What EC2 answers when a market or type has nothing for us now: try the next option instead.
# The last: an account without Spot's service-linked role (docs/deploy.md) cannot buy Spot.
CAPACITY_REFUSALS = frozenset(
    {
        "InsufficientInstanceCapacity",
        "SpotMaxPriceTooLow",
        "MaxSpotInstanceCountExceeded",
        "AuthFailure.ServiceLinkedRoleCreationNotPermitted",
    }
)
# One-time, terminated on interruption: a persistent request would relaunch behind our back, and
# the scaler replaces lost capacity itself. Passed on run_instances, not in the launch template,
# so one template serves every market (moto also ignores a template's market options).
SPOT_MARKET = {
    "MarketType": "spot",
    "SpotOptions": {"SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"},
}


class _Refused(Exception):
    """A launch option EC2 has no capacity or price for; not retried, the next one is tried."""

    def __init__(self, error: ClientError):
        super().__init__(error.response["Error"]["Code"])
        self.error, self.code = error, error.response["Error"]["Code"]


def launch_options(market: str, types: tuple[str, ...]) -> list[tuple[str, str | None]]:
    """(market, instance type) in the order a launch tries them; type None: the template's."""
    if market not in MARKETS:
        raise ValueError(f"unknown market {market!r}")
    kinds = list(types) or [None]
    spot = [("spot", kind) for kind in kinds]
    on_demand = [("on-demand", kind) for kind in kinds]
    return {"spot": spot, "on-demand": on_demand, "spot-with-fallback": spot + on_demand}[market]


class Fleet:
    def __init__(
        self,
        ec2,
        name: str,
        launch_template: str,
        *,
        clock: Callable[[], float] = time.time,
        market: str = "on-demand",
        instance_types: tuple[str, ...] = (),
        backoff: Backoff = Backoff(),  # noqa: B008 - frozen
        sleep: Callable[[float], None] = time.sleep,
    ):
        self._ec2 = ec2
        self.name = name
        self.launch_template = launch_template
        self._options = launch_options(market, instance_types)
        self._clock = clock
        self._backoff = backoff
        self._sleep = sleep

    @classmethod
    def from_settings(cls, ec2, settings: Settings, **options) -> Fleet:
        """The fleet FLEET_NAME launched from LAUNCH_TEMPLATE in FLEET_MARKET's way."""
        return cls(
            ec2,
            settings.fleet_name,
            settings.launch_template,
            market=settings.fleet_market,
            instance_types=settings.instance_types,
            **options,
        )

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

    def apply(self, actions: Actions) -> list[str]:
        """Carry out one plan. Terminate first: it frees capacity quotas for what follows.

        Returns what the launch had to work around (options refused, the one that launched),
        for the decision line; empty when nothing was launched."""
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
        notes = self._launch(actions.launch) if actions.launch else []
        if actions.spares:  # into the warm pool, once ready (scaler.plan)
            notes += [f"spares: {n}" for n in self._launch(actions.spares, spare=True)]
        if actions.stop:
            ids = list(actions.stop)
            # Tag before stopping, so a stopped instance never lacks its stop time.
            self._tag(ids, STOPPED_AT_TAG, now)
            self._retry("stop_instances", lambda: self._ec2.stop_instances(InstanceIds=ids))
        return notes

    def _tag(self, ids: list[str], key: str, value: str) -> None:
        tags = [{"Key": key, "Value": value}]
        self._retry("create_tags", lambda: self._ec2.create_tags(Resources=ids, Tags=tags))

    def _launch(self, count: int, spare: bool = False) -> list[str]:
        """Launch `count` by the first option EC2 grants; raise the last refusal if none does.
        Spares are on-demand: EC2 will not stop a one-time Spot instance into the pool."""
        notes: list[str] = []
        last: ClientError | None = None
        options = [o for o in self._options if o[0] == "on-demand"] if spare else self._options
        for market, kind in options:
            try:
                self._run(count, market, kind, spare)
            except _Refused as refused:
                last = refused.error
                notes.append(f"{market} {kind or 'template type'} refused ({refused.code})")
                log.warning("launch of %d: %s", count, notes[-1])
                continue
            notes.append(f"launched {count} {market} {kind or 'template type'}")
            return notes
        if last is None:  # a Spot-only fleet has no option for a spare (scaler.service)
            raise ValueError("no on-demand option to launch a spare with")
        raise last

    def _run(self, count: int, market: str, kind: str | None, spare: bool = False) -> None:
        # One client token per option for all its attempts: a retried launch after a lost reply
        # is not a second launch (and a token must not be reused with other parameters).
        token = uuid.uuid4().hex
        tags = [{"Key": FLEET_TAG, "Value": self.name}]
        tags += [{"Key": SPARE_TAG, "Value": "1"}] if spare else []
        request = {
            # All or nothing (moto honours only MinCount); a shortfall is retried next tick.
            "MinCount": count,
            "MaxCount": count,
            "LaunchTemplate": {"LaunchTemplateName": self.launch_template},
            "ClientToken": token,
            "TagSpecifications": [{"ResourceType": "instance", "Tags": tags}],
        }
        if kind is not None:
            request["InstanceType"] = kind
        if market == "spot":
            request["InstanceMarketOptions"] = SPOT_MARKET

        def run():
            try:
                return self._ec2.run_instances(**request)
            except ClientError as error:
                # Not retried here (retry() would wait on InsufficientInstanceCapacity): the next
                # option may have capacity now.
                if error.response.get("Error", {}).get("Code") in CAPACITY_REFUSALS:
                    raise _Refused(error) from error
                raise

        self._retry("run_instances", run)


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
        ready=ready_at(tags, run_began) is not None,
        ready_at=ready_at(tags, run_began),
        spot=raw.get("InstanceLifecycle") == "spot",
        instance_type=raw.get("InstanceType", ""),
        notice=under_notice(tags, run_began),
        usage=tags.get(USAGE_TAG, ""),
        models=parse_models(tags.get(MODELS_TAG, "")),
        spare=SPARE_TAG in tags and STOPPED_AT_TAG not in tags,
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
