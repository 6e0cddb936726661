"""The fleet: pure planning tables, then the EC2 executor against a real moto server over HTTP."""

from __future__ import annotations

import dataclasses

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from runtime.model_versions import announce_models, format_models, parse_models
from runtime.readiness import announce_ready
from runtime.resources import FLEET_TAG, SPARE_TAG, STARTED_AT_TAG, STOPPED_AT_TAG
from runtime.retry import Backoff, retry
from scaler.fleet import Fleet, ensure_local_launch_template, view
from scaler.plan import (
    SPARE_READY_MAX_S,
    Actions,
    Instance,
    PoolRules,
    capacity,
    count_states,
    paid_left_s,
    plan,
    plan_original,
    workers,
)
from tests.support.fleet import unique_settings

RULES = PoolRules(warm_pool_max=2, stopped_max_age_s=3600.0)
NOW = 10_000.0


def inst(iid, state, launched_at=0.0, restarted=False, stopped_at=None) -> Instance:
    return Instance(iid, state, launched_at, restarted, stopped_at)


# ---- planning (pure) -------------------------------------------------------------------------


def test_scale_out_prefers_the_warm_pool_then_launches():
    fleet = [
        inst("r1", "running"),
        inst("s-new", "stopped", stopped_at=NOW - 10),
        inst("s-old", "stopped", stopped_at=NOW - 100),
    ]
    assert plan(2, fleet, NOW, RULES) == Actions(start=("s-old",))
    assert plan(5, fleet, NOW, RULES) == Actions(start=("s-old", "s-new"), launch=2)


def test_pending_instances_count_as_capacity():
    fleet = [inst("p1", "pending"), inst("p2", "pending"), inst("r1", "running")]
    assert capacity(fleet) == 3
    assert not plan(3, fleet, NOW, RULES)
    assert plan(4, fleet, NOW, RULES) == Actions(launch=1)


def test_stopping_instances_are_not_capacity_and_not_restarted():
    fleet = [inst("x1", "stopping"), inst("r1", "running")]
    assert plan(2, fleet, NOW, RULES) == Actions(launch=1)


def test_scale_in_cancels_booting_launches_then_stops_newest_running():
    fleet = [
        inst("r-old", "running", launched_at=1.0),
        inst("r-new", "running", launched_at=5.0),
        inst("p-new", "pending", launched_at=9.0),
        inst("p-restart", "pending", launched_at=9.0, restarted=True),
    ]
    assert plan(3, fleet, NOW, RULES) == Actions(terminate=("p-new",))
    assert plan(1, fleet, NOW, RULES) == Actions(stop=("r-new", "r-old"), terminate=("p-new",))


def test_under_a_paid_minimum_scale_in_stops_what_is_no_longer_paid_for_first():
    # At 100 s: r-old has run 99 s (paid time used up), r-mid 60.5 s, r-new 30 s (30 s paid left).
    fleet = [
        inst("r-new", "running", launched_at=70.0),
        inst("r-old", "running", launched_at=1.0),
        inst("r-mid", "running", launched_at=39.5),
    ]
    paid = PoolRules(warm_pool_max=3, stopped_max_age_s=3600.0, min_billed_s=60.0)
    assert plan(1, fleet, 100.0, paid) == Actions(stop=("r-mid", "r-old"))
    # Billed per second, newest first as ever.
    assert plan(1, fleet, 100.0, dataclasses.replace(paid, min_billed_s=0.0)) == Actions(
        stop=("r-new", "r-mid")
    )
    assert paid_left_s(fleet[0], 100.0, 60.0) == 30.0 and paid_left_s(fleet[1], 100.0, 60.0) == 0


def test_scale_in_keeps_at_most_the_warm_pool_stopped():
    fleet = [inst(f"s{k}", "stopped", stopped_at=NOW - k) for k in range(1, 4)]
    # s1 and s2 were stopped most recently: they stay; s3 goes.
    assert plan(0, fleet, NOW, RULES) == Actions(terminate=("s3",))
    # Instances on their way to stopped take pool slots first.
    running = [inst("r1", "running"), inst("r2", "running")]
    assert plan(0, running + fleet, NOW, RULES) == Actions(
        stop=("r1", "r2"), terminate=("s1", "s2", "s3")
    )
    assert plan(0, [inst("x", "stopping"), *fleet], NOW, RULES).terminate == ("s2", "s3")


def test_stopped_instances_age_out():
    fleet = [
        inst("fresh", "stopped", stopped_at=NOW - 60),
        inst("stale", "stopped", stopped_at=NOW - 3601),
        inst("untagged", "stopped", launched_at=NOW - 7200),  # no stop tag: launch time counts
    ]
    assert plan(0, fleet, NOW, RULES) == Actions(terminate=("stale", "untagged"))
    # An old stopped instance that is needed is started, not terminated.
    assert plan(1, fleet, NOW, RULES) == Actions(start=("untagged",), terminate=("stale",))


def test_zero_pool_terminates_every_stopped_instance():
    rules = PoolRules(warm_pool_max=0, stopped_max_age_s=3600.0)
    fleet = [inst("s1", "stopped", stopped_at=NOW), inst("r1", "running")]
    assert plan(0, fleet, NOW, rules) == Actions(stop=("r1",), terminate=("s1",))


@pytest.mark.parametrize(
    ("desired", "fleet", "actions"),
    [
        # Out: restart what is stopped, then launch.
        (3, [inst("r1", "running"), inst("s1", "stopped")], Actions(start=("s1",), launch=1)),
        # Never in while anything is visible (the policy never asks for less than the fleet).
        (2, [inst("r1", "running"), inst("p1", "pending")], Actions()),
        # Queue empty: stop every running instance; booting ones are left to come up.
        (
            0,
            [inst("r1", "running"), inst("r2", "running"), inst("p1", "pending")],
            Actions(stop=("r1", "r2")),
        ),
        # Next tick: what is stopped is terminated, no warm pool kept.
        (
            0,
            [inst("s1", "stopped"), inst("s2", "stopped"), inst("x1", "stopping")],
            Actions(terminate=("s1", "s2")),
        ),
        (
            1,
            [inst("s1", "stopped"), inst("s2", "stopped")],
            Actions(start=("s1",), terminate=("s2",)),
        ),
    ],
)
def test_original_executor(desired, fleet, actions):
    assert plan_original(desired, fleet) == actions


FILLING = dataclasses.replace(RULES, min_billed_s=60.0, spares=True, fleet_max=4)


def ready(iid, launched_at=0.0, spare=False, state="running") -> Instance:
    return Instance(iid, state, launched_at, ready=state == "running", spare=spare)


def test_spares_fill_the_pool_once_a_worker_has_served_its_minute():
    young = [ready("r1", launched_at=NOW - 30)]
    assert plan(1, young, NOW, FILLING) == Actions()  # not a minute yet
    # The running worker joins the pool when traffic stops: one spare fills the pool of two.
    served = [ready("r1", launched_at=NOW - 60)]
    assert plan(1, served, NOW, FILLING) == Actions(spares=1)
    assert plan(1, served, NOW, RULES) == Actions()  # spares off: never
    three = dataclasses.replace(FILLING, warm_pool_max=3)
    assert plan(1, served, NOW, three) == Actions(spares=2)
    # What the pool holds, stopped or booting as spares, counts; a full pool gets none.
    stopped = inst("s1", "stopped", stopped_at=NOW - 5)
    assert plan(1, [*served, stopped], NOW, FILLING) == Actions()
    assert plan(1, [*served, stopped], NOW, three) == Actions(spares=1)
    booting = [*served, ready("sp1", NOW - 5, spare=True, state="pending")]
    assert plan(1, booting, NOW, FILLING) == Actions()
    # A surge's instances go to the pool at its scale-in: no launches to refill it meanwhile.
    surge = [*served, ready("r2", NOW - 90)]
    assert plan(2, surge, NOW, FILLING) == Actions()
    # Never past FLEET_MAX instances at once.
    big = dataclasses.replace(FILLING, warm_pool_max=5)
    crowded = [*served, ready("r2", NOW - 90), ready("r3", NOW - 90)]
    assert plan(3, crowded, NOW, big) == Actions(spares=1)


def test_no_spares_while_the_fleet_is_scaled():
    served = [ready("r1", launched_at=NOW - 600), ready("r2", launched_at=NOW - 500)]
    assert plan(3, served, NOW, FILLING) == Actions(launch=1)
    assert plan(1, served, NOW, FILLING) == Actions(stop=("r2",))


def test_a_spare_is_no_capacity_and_goes_to_the_pool_once_ready():
    booting = ready("sp1", NOW - 5, spare=True, state="pending")
    served = ready("r1", launched_at=NOW - 600)
    assert capacity([served, booting]) == 1
    # Not cancelled by a scale-in, not counted by a scale-out: it boots on.
    assert plan(0, [served, booting], NOW, FILLING) == Actions(stop=("r1",))
    assert plan(2, [served, booting], NOW, FILLING) == Actions(launch=1)
    up = ready("sp1", NOW - 5, spare=True)
    assert plan(1, [served, up], NOW, FILLING) == Actions(stop=("sp1",))
    loading = dataclasses.replace(up, ready=False)  # its worker still loads: not yet
    assert plan(1, [served, loading], NOW, FILLING) == Actions()
    assert "spares=1" in Actions(spares=1).describe()
    # One whose worker never gets ready is terminated, not left running as no capacity; what
    # the pool then lacks is launched anew.
    stuck = ready("sp2", NOW - SPARE_READY_MAX_S - 1, spare=True, state="pending")
    assert plan(1, [served, stuck], NOW, FILLING) == Actions(terminate=("sp2",), spares=1)


def test_plan_rejects_negative_desired():
    with pytest.raises(ValueError):
        plan(-1, [], NOW, RULES)


def test_count_states_reports_every_fleet_state():
    fleet = [inst("a", "running"), inst("b", "stopped"), inst("c", "shutting-down")]
    assert count_states(fleet) == {"pending": 0, "running": 1, "stopping": 0, "stopped": 1}


# ---- retries -----------------------------------------------------------------------------------


def _client_error(code: str, status: int = 400) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "RunInstances",
    )


def test_transient_errors_are_retried_with_growing_backoff():
    failures = [_client_error("RequestLimitExceeded"), EndpointConnectionError(endpoint_url="x")]
    sleeps: list[float] = []

    def call():
        if failures:
            raise failures.pop(0)
        return "ok"

    assert retry(call, "test", Backoff(attempts=3, base_s=0.5), sleeps.append) == "ok"
    assert sleeps == [0.5, 1.0]


def test_permanent_errors_and_exhausted_retries_raise():
    sleeps: list[float] = []

    def bad_request():
        raise _client_error("InvalidParameterValue")

    with pytest.raises(ClientError):
        retry(bad_request, "test", Backoff(attempts=3), sleeps.append)
    assert sleeps == []

    def always_503():
        raise _client_error("Whatever", status=503)

    with pytest.raises(ClientError):
        retry(always_503, "test", Backoff(attempts=3, base_s=1.0, max_s=1.5), sleeps.append)
    assert sleeps == [1.0, 1.5]


# ---- EC2 through moto --------------------------------------------------------------------------


@pytest.fixture
def ec2(aws_client):
    return aws_client("ec2")


@pytest.fixture
def settings():
    return unique_settings("fleet")


@pytest.fixture
def fleet(ec2, settings):
    ensure_local_launch_template(ec2, settings)
    return Fleet(ec2, settings.fleet_name, settings.launch_template, backoff=Backoff(attempts=1))


def states(ec2, ids) -> dict[str, str]:
    reply = ec2.describe_instances(InstanceIds=list(ids))
    return {
        i["InstanceId"]: i["State"]["Name"] for r in reply["Reservations"] for i in r["Instances"]
    }


def tags_of(ec2, iid) -> dict[str, str]:
    reply = ec2.describe_instances(InstanceIds=[iid])
    return {t["Key"]: t["Value"] for t in reply["Reservations"][0]["Instances"][0].get("Tags", [])}


def test_launch_template_is_created_once(ec2, settings):
    first = ensure_local_launch_template(ec2, settings)
    assert ensure_local_launch_template(ec2, settings) == first
    found = ec2.describe_launch_templates(LaunchTemplateNames=[settings.launch_template])
    assert [t["LaunchTemplateId"] for t in found["LaunchTemplates"]] == [first]


def test_launch_tags_instances_into_the_fleet(ec2, fleet, settings):
    assert fleet.instances() == []
    fleet.apply(Actions(launch=2))
    found = fleet.instances()
    assert len(found) == 2
    assert {i.state for i in found} <= {"pending", "running"}
    for instance in found:
        assert tags_of(ec2, instance.instance_id)[FLEET_TAG] == settings.fleet_name
        assert not instance.restarted


def test_spares_are_launched_tagged_and_join_the_pool_at_their_stop(ec2, fleet, settings):
    fleet.apply(Actions(spares=1))
    (spare,) = fleet.instances()
    assert spare.spare and tags_of(ec2, spare.instance_id)[SPARE_TAG] == "1"
    assert capacity([spare]) == 0
    fleet.apply(Actions(stop=(spare.instance_id,)))
    fleet.apply(Actions(start=(spare.instance_id,)))
    (restarted,) = fleet.instances()
    assert restarted.restarted and not restarted.spare  # out of the pool it is capacity
    assert capacity([restarted]) == 1


def test_spares_are_on_demand_where_the_fleet_buys_spot_first(ec2, settings):
    ensure_local_launch_template(ec2, settings)
    fleet = Fleet(ec2, settings.fleet_name, settings.launch_template, market="spot-with-fallback")
    notes = fleet.apply(Actions(launch=1, spares=1))
    by_spare = {i.spare: i for i in fleet.instances()}
    assert by_spare[False].spot and not by_spare[True].spot  # a Spot one cannot be stopped
    assert any(n.startswith("spares: launched 1 on-demand") for n in notes), notes


def test_stop_records_the_time_and_start_marks_a_restart(ec2, settings):
    ensure_local_launch_template(ec2, settings)
    times = iter([1_000.0, 2_000.0])
    fleet = Fleet(ec2, settings.fleet_name, settings.launch_template, clock=lambda: next(times))
    fleet.apply(Actions(launch=1))  # takes the first clock reading
    (iid,) = [i.instance_id for i in fleet.instances()]
    fleet.apply(Actions(stop=(iid,)))
    (stopped,) = fleet.instances()
    assert (stopped.state, stopped.stopped_at) == ("stopped", 2_000.0)
    fleet._clock = lambda: 9e9  # noqa: SLF001 - a start far after the launch
    fleet.apply(Actions(start=(iid,)))
    (started,) = fleet.instances()
    assert started.state in ("pending", "running")
    assert started.restarted and started.launched_at == 9e9
    assert view(started).restarted
    assert float(tags_of(ec2, iid)[STARTED_AT_TAG]) == 9e9


def test_a_worker_is_ready_only_once_it_tagged_this_run(ec2, settings):
    ensure_local_launch_template(ec2, settings)
    fleet = Fleet(ec2, settings.fleet_name, settings.launch_template, clock=lambda: 5e9)
    fleet.apply(Actions(launch=1))
    (launched,) = fleet.instances()
    assert not launched.ready  # its worker is loading the model
    iid = launched.instance_id
    assert announce_ready(ec2, iid, now=launched.launched_at + 6)
    assert fleet.instances()[0].ready
    fleet.apply(Actions(stop=(iid,)))
    fleet._clock = lambda: 9e9  # noqa: SLF001 - a start long after that tag
    fleet.apply(Actions(start=(iid,)))
    (restarted,) = fleet.instances()
    assert not restarted.ready  # the old tag is from the previous run
    assert not announce_ready(ec2, "", now=1.0)  # no instance id (a worker run by hand)


class Named:
    """Stands in for a loaded classifier: what the models tag says of it."""

    def __init__(self, name: str, version: str):
        self.name, self.version = name, version


def test_the_fleet_reads_which_versions_a_worker_serves_once_it_is_ready(ec2, settings):
    ensure_local_launch_template(ec2, settings)
    fleet = Fleet(ec2, settings.fleet_name, settings.launch_template, clock=lambda: 5e9)
    fleet.apply(Actions(launch=1))
    (launched,) = fleet.instances()
    iid = launched.instance_id
    assert launched.models == ()  # its worker is loading the model
    assert workers([dataclasses.replace(launched, state="pending")]) == []  # not a worker yet
    served = [Named("efficientnet_lite0", "3f2a"), Named("catdog", "1")]
    assert announce_models(ec2, iid, served)
    assert announce_ready(ec2, iid, now=launched.launched_at + 6)
    (tagged,) = fleet.instances()
    assert tagged.models == (("efficientnet_lite0", "3f2a"), ("catdog", "1"))
    running = dataclasses.replace(tagged, state="running")
    assert workers([running]) == [
        {
            "id": iid,
            "models": [
                {"name": "efficientnet_lite0", "version": "3f2a"},
                {"name": "catdog", "version": "1"},
            ],
        }
    ]
    # Started again: the tag is its last run's until its worker is ready again.
    assert workers([dataclasses.replace(running, ready=False)]) == [{"id": iid, "models": []}]
    assert not announce_models(ec2, "", served)  # no instance id (a worker run by hand)


def test_the_models_tag_is_read_whatever_else_it_holds():
    assert format_models([Named("a", "1"), Named("b", "")]) == "a=1 b=?"
    assert len(format_models([Named("m" * 200, "1"), Named("n" * 200, "2")])) == 256
    assert parse_models("a=1 junk =2 b= c=3") == (("a", "1"), ("c", "3"))
    assert parse_models("") == ()


def test_scale_out_starts_the_warm_pool_before_launching(ec2, fleet):
    fleet.apply(Actions(launch=2))
    ids = [i.instance_id for i in fleet.instances()]
    fleet.apply(Actions(stop=tuple(ids)))
    assert set(states(ec2, ids).values()) == {"stopped"}

    actions = plan(3, fleet.instances(), NOW, RULES)
    assert set(actions.start) == set(ids) and actions.launch == 1
    fleet.apply(actions)
    found = fleet.instances()
    assert len(found) == 3
    assert {i.instance_id for i in found if i.restarted} == set(ids)
    assert capacity(found) == 3


def test_aged_stopped_instances_are_terminated(ec2, settings):
    ensure_local_launch_template(ec2, settings)
    long_ago = Fleet(ec2, settings.fleet_name, settings.launch_template, clock=lambda: 1_000.0)
    long_ago.apply(Actions(launch=2))
    ids = [i.instance_id for i in long_ago.instances()]
    long_ago.apply(Actions(stop=tuple(ids)))
    assert all(float(tags_of(ec2, iid)[STOPPED_AT_TAG]) == 1_000.0 for iid in ids)

    fleet = Fleet(ec2, settings.fleet_name, settings.launch_template)
    actions = plan(0, fleet.instances(), 1_000.0 + RULES.stopped_max_age_s + 1, RULES)
    assert set(actions.terminate) == set(ids)
    fleet.apply(actions)
    assert fleet.instances() == []
    assert set(states(ec2, ids).values()) <= {"shutting-down", "terminated"}


def test_instances_outside_the_fleet_are_never_touched(ec2, fleet, settings):
    image = ec2.describe_launch_template_versions(LaunchTemplateName=settings.launch_template)[
        "LaunchTemplateVersions"
    ][0]["LaunchTemplateData"]["ImageId"]
    untagged = ec2.run_instances(ImageId=image, MinCount=2, MaxCount=2)["Instances"]
    other = ec2.run_instances(
        ImageId=image,
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[
            {"ResourceType": "instance", "Tags": [{"Key": FLEET_TAG, "Value": "another-fleet"}]}
        ],
    )["Instances"]
    outsiders = [i["InstanceId"] for i in untagged + other]
    ec2.stop_instances(InstanceIds=[outsiders[0]])
    before = states(ec2, outsiders)

    fleet.apply(plan(3, fleet.instances(), NOW, RULES))
    assert len(fleet.instances()) == 3
    fleet.apply(plan(0, fleet.instances(), NOW, RULES))
    # Stopped instances beyond the pool go too, on the following round.
    fleet.apply(plan(0, fleet.instances(), NOW, RULES))
    mine = fleet.instances()
    assert [i.state for i in mine] == ["stopped"] * RULES.warm_pool_max

    assert not {i.instance_id for i in mine} & set(outsiders)
    assert states(ec2, outsiders) == before
