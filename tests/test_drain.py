"""The drain policy is a pure function: tables of observations in, fleet sizes and rules out."""

from __future__ import annotations

import math

import pytest

from runtime.settings import DEFAULT_POLICY, POLICIES
from scaler.drain import (
    NEVER,
    DrainParams,
    candidate_ready_times,
    drain,
    drain_time,
    fluid_drain_time,
    idle_hold_s,
    sustained_need,
)
from scaler.policies import Limits, Observation, PolicyConfig, PolicyError
from scaler.registry import make_policy

LIMITS = Limits(0, 12)
PARAMS = DrainParams(boot_new_s=40.0, boot_start_s=10.0, idle_delay_s=2.0, batch_max=10)


def obs(
    visible, in_flight=0, ready=(), *, warm=0, rate=0.0, steady=0.0, idle=0.0, img_s=10.0, paid=()
):
    return Observation(
        visible,
        in_flight,
        capacity=len(ready),
        throughput_img_s=img_s,
        arrival_rate_img_s=rate,
        steady_rate_img_s=steady,
        ready_in_s=tuple(ready),
        warm=warm,
        idle_s=idle,
        paid_left_s=tuple(paid),
    )


@pytest.mark.parametrize(
    ("observation", "desired", "code"),
    [
        # Cold bursts: 10 instances clear 100 in one round of batches, as 12 would.
        (obs(100), 10, "drain-projection"),
        (obs(1000), 12, "drain-projection"),
        # A burst with a warm pool: two restarts (10 s) beat any launch (40 s).
        (obs(100, warm=2), 2, "drain-projection"),
        # A sustained 20/s outruns the pool: restart both, launch the rest.
        (obs(20, rate=20.0, warm=2), 11, "drain-projection"),
        # Booting instances are counted with their ready times: nothing more to launch.
        (obs(100, ready=[30] * 10), 10, "drain-projection"),
        # While work waits the fleet never shrinks.
        (obs(5, ready=[0] * 3), 3, "drain-projection"),
        (obs(200, ready=[0, 0], rate=20.0), 12, "drain-projection"),
        (obs(10, rate=200.0), 12, "overloaded"),
        # Nothing waits: in-flight batches finish on stopped instances; keep what arrivals need.
        (obs(0, 30, [0] * 5), 1, "keep-up"),
        (obs(0, 0, [0] * 5, rate=8.0), 2, "keep-up"),  # 8/s at 75 % of 10/s each
        (obs(0, 0, [0] * 5, steady=8.0), 2, "keep-up"),
        # Idle: zero once nothing waited for the idle delay and nothing arrives.
        (obs(0, 0, [0] * 3, idle=1.0), 1, "keep-up"),
        (obs(0, 0, [0] * 3, idle=2.0), 0, "idle"),
        (obs(0, 0, [0] * 3, idle=9.0, rate=1.0), 1, "keep-up"),
        # A steady trickle of 0.5/s holds the last worker for three mean gaps (6 s).
        (obs(0, 0, [0] * 3, idle=4.0, steady=0.5), 1, "keep-up"),
        (obs(0, 0, [0] * 3, idle=6.0, steady=0.5), 0, "idle"),
        # A slower trickle (0.2/s: 15 s for three gaps) is held only as long as a restart costs.
        (obs(0, 0, [0] * 3, idle=9.0, steady=0.2), 1, "keep-up"),
        (obs(0, 0, [0] * 3, idle=10.0, steady=0.2), 0, "idle"),
        (obs(0), 0, "keep-up"),
        # EC2's paid minimum: idle instances still paid for stay until their paid time runs out
        # (stopping one saves nothing; a restart pays a new minimum), then go.
        (obs(0, 0, [0] * 3, idle=9.0, paid=[30, 0.5, 0]), 2, "idle-paid"),
        (obs(0, 0, [0] * 3, idle=9.0, paid=[0, 0, 0]), 0, "idle"),
        (obs(0, 0, [0] * 3, idle=9.0), 0, "idle"),  # billed per second: nothing is paid ahead
        (obs(0, 30, [0] * 5, paid=[50, 50, 50, 0, 0]), 3, "keep-up"),
        (obs(0, 0, [0] * 5, rate=8.0, paid=[10, 0, 0, 0, 0]), 2, "keep-up"),
    ],
)
def test_drain_table(observation, desired, code):
    decision = drain(observation, LIMITS, PARAMS)
    assert (decision.desired, decision.code) == (desired, code)
    facts = dict(decision.facts)
    assert facts["visible"] == observation.visible and facts["capacity"] == observation.capacity
    assert decision.reason


def test_projection_facts_say_how_the_fleet_grows():
    facts = dict(drain(obs(20, rate=20.0, warm=2), LIMITS, PARAMS).facts)
    assert (facts["starts"], facts["launches"]) == (2, 9)
    assert facts["drain_s"] == facts["best_drain_s"]


@pytest.mark.parametrize(
    ("limits", "observation", "desired"),
    [
        (Limits(2, 12), obs(0, 0, [0] * 5, idle=5.0), 2),  # min holds when idle
        (Limits(0, 3), obs(500), 3),
        (Limits(0, 3), obs(50, ready=[0] * 6), 3),  # a lowered max brings a bigger fleet down
        (Limits(0, 0), obs(500), 0),
    ],
)
def test_drain_limits(limits, observation, desired):
    assert drain(observation, limits, PARAMS).desired == desired


@pytest.mark.parametrize(
    ("backlog", "rate", "ready", "fluid", "batched"),
    [
        (100, 0.0, [40] * 12, 40 + 100 / 120, 41.0),
        (100, 0.0, [40] * 10, 41.0, 41.0),
        (100, 0.0, [40] * 9, 40 + 100 / 90, 42.0),
        (1000, 0.0, [40] * 12, 40 + 1000 / 120, 49.0),
        (50, 0.0, [10, 10], 12.5, 13.0),
        (0, 8.0, [0], 0.0, 0.0),  # nothing queued and keeping up: drained now
        (0, 0.0, [], 0.0, 0.0),
        (0, 8.0, [], NEVER, NEVER),  # arrivals and no fleet
        (10, 20.0, [0, 0], NEVER, NEVER),  # 2 x 10/s only matches 20/s: never drains
        (20, 5.0, [0, 30], 20 / 5, 4.0),  # drained before the second instance is up
    ],
)
def test_drain_times(backlog, rate, ready, fluid, batched):
    assert fluid_drain_time(backlog, rate, 10.0, ready) == pytest.approx(fluid)
    assert drain_time(backlog, rate, 10.0, ready, batch_max=10) == pytest.approx(batched)


def test_candidates_restart_the_pool_before_launching_and_shed_the_latest():
    o = obs(10, ready=[0, 35], warm=2)
    assert candidate_ready_times(o, 5, PARAMS) == [0, 35, 10, 10, 40]
    assert candidate_ready_times(o, 1, PARAMS) == [0]


def test_hold_and_need():
    assert idle_hold_s(0.0, PARAMS) == 2.0
    assert idle_hold_s(0.5, PARAMS) == 6.0
    # Never longer than the restart it may save costs: the 10 s boot from the warm pool.
    assert idle_hold_s(0.2, PARAMS) == 10.0
    assert idle_hold_s(0.01, PARAMS) == 10.0
    slow_restarts = DrainParams(boot_new_s=90.0, boot_start_s=45.0, idle_delay_s=2.0)
    assert idle_hold_s(0.01, slow_restarts) == 30.0  # and never past TRICKLE_HOLD_MAX_S
    assert idle_hold_s(100.0, PARAMS) == 2.0  # never below the idle delay
    assert sustained_need(0.0, 10.0, 0.75) == 0
    assert sustained_need(7.5, 10.0, 0.75) == 1
    assert sustained_need(7.6, 10.0, 0.75) == 2


@pytest.mark.parametrize(
    "observation",
    [
        Observation(1, 0, 2, 10.0, ready_in_s=(0.0,)),  # one ready time for two instances
        obs(1, rate=-1.0),
        obs(1, rate=math.nan),
        obs(1, steady=math.inf),
        obs(1, warm=-1),
        obs(1, idle=-1.0),
        obs(1, ready=[-3.0]),
        obs(1, img_s=0.0),
    ],
)
def test_drain_raises_on_bad_data(observation):
    with pytest.raises(PolicyError):
        drain(observation, LIMITS, PARAMS)


def test_bad_parameters_raise():
    with pytest.raises(PolicyError):
        DrainParams(-1.0, 10.0, 2.0)
    with pytest.raises(PolicyError):
        DrainParams(40.0, 10.0, 2.0, batch_max=0)
    with pytest.raises(PolicyError):
        DrainParams(40.0, 10.0, 2.0, utilization=0.0)
    with pytest.raises(PolicyError):
        drain_time(-1, 0.0, 10.0, [0])


def test_registry_binds_the_configuration():
    config = PolicyConfig(Limits(0, 5), boot_new_s=40.0, boot_start_s=10.0, idle_delay_s=2.0)
    assert make_policy("drain", config)(obs(100)).desired == 5
    assert make_policy("drain", config)(obs(100, warm=2)).desired == 2
    with pytest.raises(PolicyError):
        make_policy("fastest", config)


def test_every_policy_setting_name_builds_a_policy():
    assert DEFAULT_POLICY == "drain" and DEFAULT_POLICY in POLICIES
    for name in POLICIES:
        assert make_policy(name, PolicyConfig(LIMITS))(obs(100)).desired > 0


def test_more_paid_times_than_instances_is_refused():
    with pytest.raises(PolicyError, match="paid times"):
        drain(obs(0, 0, [0], paid=[10, 10]), LIMITS, PARAMS)
    with pytest.raises(PolicyError, match="paid time"):
        drain(obs(0, 0, [0], paid=[-1]), LIMITS, PARAMS)
