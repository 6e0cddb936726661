"""Spot first, on-demand when Spot is refused: the launch order against a fake EC2 that refuses,
scale-in of Spot instances, then a real moto server over HTTP launching Spot workers."""

from __future__ import annotations

import uuid

import pytest
from botocore.exceptions import ClientError

from runtime.retry import Backoff
from runtime.settings import ConfigError, Settings
from scaler.fleet import Fleet, ensure_local_launch_template, launch_options
from scaler.plan import Actions, Instance, PoolRules, plan, plan_original

RULES = PoolRules(warm_pool_max=2, stopped_max_age_s=3600.0)


def _refusal(code: str) -> ClientError:
    # EC2 answers capacity refusals with a 500 (which retry() would wait on); the rest with 400.
    status = 500 if code == "InsufficientInstanceCapacity" else 400
    return ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "RunInstances",
    )


class RefusingEc2:
    """run_instances only: refuses the (market, type) pairs it is told to, records every call."""

    def __init__(self, refuse: dict[tuple[str, str | None], str]):
        self.refuse = refuse
        self.calls: list[dict] = []

    def run_instances(self, **request):
        self.calls.append(request)
        market = "spot" if "InstanceMarketOptions" in request else "on-demand"
        code = self.refuse.get((market, request.get("InstanceType")))
        if code:
            raise _refusal(code)
        return {"Instances": [{"InstanceId": f"i-{k}"} for k in range(request["MinCount"])]}


def _fleet(ec2, market: str, types: tuple[str, ...]) -> Fleet:
    return Fleet(
        ec2,
        "f",
        "lt",
        market=market,
        instance_types=types,
        backoff=Backoff(attempts=3),
        sleep=lambda _s: None,
    )


def _tried(ec2: RefusingEc2) -> list[tuple[str, str | None]]:
    return [
        ("spot" if "InstanceMarketOptions" in c else "on-demand", c.get("InstanceType"))
        for c in ec2.calls
    ]


def test_launch_options_try_spot_in_every_type_before_on_demand():
    assert launch_options("spot-with-fallback", ("a.x", "b.x")) == [
        ("spot", "a.x"),
        ("spot", "b.x"),
        ("on-demand", "a.x"),
        ("on-demand", "b.x"),
    ]
    assert launch_options("spot", ()) == [("spot", None)]
    assert launch_options("on-demand", ("a.x",)) == [("on-demand", "a.x")]


@pytest.mark.parametrize(
    "code", ["InsufficientInstanceCapacity", "SpotMaxPriceTooLow", "MaxSpotInstanceCountExceeded"]
)
def test_a_refused_spot_launch_falls_back_to_the_next_type_then_on_demand(code):
    ec2 = RefusingEc2({("spot", "c6i.large"): code, ("spot", "c7i.large"): code})
    notes = _fleet(ec2, "spot-with-fallback", ("c6i.large", "c7i.large")).apply(Actions(launch=2))
    # Each refusal moves on at once (no backoff on a capacity answer), each with its own token.
    assert _tried(ec2) == [("spot", "c6i.large"), ("spot", "c7i.large"), ("on-demand", "c6i.large")]
    assert len({c["ClientToken"] for c in ec2.calls}) == 3
    assert notes == [
        f"spot c6i.large refused ({code})",
        f"spot c7i.large refused ({code})",
        "launched 2 on-demand c6i.large",
    ]
    spot = ec2.calls[0]["InstanceMarketOptions"]
    assert spot["MarketType"] == "spot"
    assert spot["SpotOptions"]["SpotInstanceType"] == "one-time"


def test_spot_only_raises_the_last_refusal_and_never_buys_on_demand():
    ec2 = RefusingEc2({("spot", None): "InsufficientInstanceCapacity"})
    with pytest.raises(ClientError, match="InsufficientInstanceCapacity"):
        _fleet(ec2, "spot", ()).apply(Actions(launch=1))
    assert _tried(ec2) == [("spot", None)]


def test_other_errors_are_not_a_fallback():
    ec2 = RefusingEc2({("spot", None): "UnauthorizedOperation"})
    with pytest.raises(ClientError, match="UnauthorizedOperation"):
        _fleet(ec2, "spot-with-fallback", ()).apply(Actions(launch=1))
    assert _tried(ec2) == [("spot", None)]


def test_a_granted_first_option_says_what_launched():
    ec2 = RefusingEc2({})
    assert _fleet(ec2, "spot", ("c6i.large",)).apply(Actions(launch=3)) == [
        "launched 3 spot c6i.large"
    ]
    assert _fleet(RefusingEc2({}), "on-demand", ()).apply(Actions()) == []


def test_market_and_types_settings_are_checked():
    assert Settings().fleet_market == "on-demand"
    assert Settings(fleet_instance_types=" c6i.large, c7i.large ").instance_types == (
        "c6i.large",
        "c7i.large",
    )
    with pytest.raises(ConfigError, match="FLEET_MARKET"):
        Settings.from_env({"FLEET_MARKET": "cheap"})
    with pytest.raises(ConfigError, match="FLEET_INSTANCE_TYPES"):
        Settings.from_env({"FLEET_INSTANCE_TYPES": "c6i.large,'; rm"})


def _running(iid: str, launched_at: float, spot: bool) -> Instance:
    return Instance(iid, "running", launched_at, spot=spot)


def test_spot_instances_are_terminated_on_scale_in_not_stopped_into_the_pool():
    fleet = [
        _running("od-old", 1.0, False),
        _running("spot-mid", 2.0, True),
        _running("spot-new", 3.0, True),
    ]
    assert plan(1, fleet, 10.0, RULES) == Actions(terminate=("spot-new", "spot-mid"))
    assert plan(0, fleet, 10.0, RULES) == Actions(
        stop=("od-old",), terminate=("spot-new", "spot-mid")
    )
    assert plan_original(0, fleet) == Actions(stop=("od-old",), terminate=("spot-mid", "spot-new"))


# ---- a real moto server over HTTP ----------------------------------------------------------------


def test_the_fleet_launches_spot_instances_of_an_allowed_type(aws_client):
    ec2 = aws_client("ec2")
    suffix = uuid.uuid4().hex[:8]
    settings = Settings(
        fleet_name=f"fleet-{suffix}",
        launch_template=f"lt-{suffix}",
        fleet_market="spot-with-fallback",
        fleet_instance_types="c7i.large,c6i.large",
    )
    ensure_local_launch_template(ec2, settings)
    fleet = Fleet.from_settings(ec2, settings, backoff=Backoff(attempts=1))
    assert fleet.apply(Actions(launch=2)) == ["launched 2 spot c7i.large"]
    found = fleet.instances()
    assert [(i.spot, i.instance_type) for i in found] == [(True, "c7i.large")] * 2
    ids = tuple(i.instance_id for i in found)
    # Scale-in terminates them: EC2 cannot stop a one-time Spot instance.
    fleet.apply(plan(0, found, 0.0, RULES))
    states = {
        i["State"]["Name"]
        for r in ec2.describe_instances(InstanceIds=list(ids))["Reservations"]
        for i in r["Instances"]
    }
    assert states <= {"shutting-down", "terminated"}
