"""The scaling policies are pure functions: tables of numbers in, desired counts out."""

from __future__ import annotations

import math

import pytest

from scaler.policies import (
    IdleClock,
    Limits,
    Observation,
    PolicyConfig,
    PolicyError,
    QuietWindow,
    TargetParams,
    backlog_per_instance,
    is_active,
    seed,
    target,
)
from scaler.registry import make_policy

LIMITS = Limits(0, 12)
PARAMS = TargetParams(latency_target_s=5.0)  # with 10 img/s: 50 messages per instance


@pytest.mark.parametrize(
    ("visible", "in_flight", "capacity", "limits", "desired"),
    [
        (0, 0, 0, LIMITS, 0),
        (1, 0, 0, LIMITS, 1),
        (4, 0, 0, LIMITS, 1),
        (5, 0, 3, LIMITS, 3),  # never scales in while anything is visible
        (9, 0, 1, LIMITS, 3),
        (17, 0, 0, LIMITS, 5),
        (100, 0, 0, LIMITS, 12),  # ceil(100/4) = 25, capped at max
        (0, 40, 5, LIMITS, 0),  # seed ignores in-flight work: the queue is empty, stop all
        (0, 0, 0, Limits(2, 12), 2),
        (3, 0, 0, Limits(0, 0), 0),
    ],
)
def test_seed_table(visible, in_flight, capacity, limits, desired):
    obs = Observation(visible, in_flight, capacity, throughput_img_s=10.0)
    decision = seed(obs, limits)
    assert decision.desired == desired
    assert decision.code == ("empty" if visible == 0 else "per-4-visible")


@pytest.mark.parametrize(
    ("visible", "in_flight", "capacity", "throughput", "peak", "desired", "raw"),
    [
        # idle stays idle; activation wakes the fleet for a single message
        (0, 0, 0, 10.0, None, 0, 0),
        (1, 0, 0, 10.0, None, 1, 1),
        (0, 1, 0, 10.0, 0, 1, 1),  # in-flight work is load too
        # backlog per instance = 5 s x 10 img/s = 50
        (50, 0, 0, 10.0, None, 1, 1),
        (51, 0, 0, 10.0, None, 2, 2),
        (60, 40, 1, 10.0, 0, 2, 2),  # scale out at once, no quiet period for growth
        (400, 0, 0, 10.0, None, 8, 8),
        (10_000, 0, 3, 10.0, 0, 12, 200),  # never above max
        # measured throughput changes the per-instance backlog: 5 s x 2 img/s = 10
        (100, 0, 0, 2.0, None, 10, 10),
        (100, 0, 0, 40.0, None, 1, 1),
        # scale-in waits: first until the quiet period has been watched at all ...
        (0, 0, 5, 10.0, None, 5, 0),
        # ... then keeps the highest demand seen during it
        (0, 0, 5, 10.0, 5, 5, 0),
        (0, 0, 5, 10.0, 3, 3, 0),
        (60, 0, 5, 10.0, 1, 2, 2),
        (0, 0, 5, 10.0, 0, 0, 0),
        (0, 0, 5, 10.0, 9, 5, 0),  # an old peak never causes scale-out
        (0, 0, 0, 10.0, 7, 0, 0),
    ],
)
def test_target_table(visible, in_flight, capacity, throughput, peak, desired, raw):
    obs = Observation(visible, in_flight, capacity, throughput, window_peak=peak)
    decision = target(obs, LIMITS, PARAMS)
    assert (decision.desired, decision.raw) == (desired, raw)
    assert decision.reason and decision.code  # words for people, a rule name for the dashboard


@pytest.mark.parametrize(
    ("limits", "visible", "capacity", "peak", "desired"),
    [
        (Limits(2, 12), 0, 0, 0, 2),  # min holds the fleet up when idle
        (Limits(2, 12), 0, 5, 0, 2),
        (Limits(0, 3), 500, 1, 0, 3),
        (Limits(0, 3), 0, 6, 6, 3),  # a lowered max brings a bigger fleet down
        (Limits(0, 0), 500, 0, None, 0),
    ],
)
def test_target_limits(limits, visible, capacity, peak, desired):
    obs = Observation(visible, 0, capacity, 10.0, window_peak=peak)
    assert target(obs, limits, PARAMS).desired == desired


@pytest.mark.parametrize(
    ("load", "activation", "active"),
    [(0, 0, False), (1, 0, True), (5, 5, False), (6, 5, True)],
)
def test_activation_is_separate_from_the_target(load, activation, active):
    assert is_active(load, activation) is active
    obs = Observation(load, 0, 0, 10.0)
    assert target(obs, LIMITS, TargetParams(5.0, activation)).desired == (1 if active else 0)


def test_backlog_per_instance_is_latency_times_throughput():
    assert backlog_per_instance(5.0, 10.0) == 50.0
    assert backlog_per_instance(0.5, 3.0) == 1.5


@pytest.mark.parametrize(
    "obs",
    [
        Observation(-1, 0, 0, 10.0),
        Observation(0, -1, 0, 10.0),
        Observation(0, 0, -1, 10.0),
        Observation(0, 0, 0, 0.0),
        Observation(0, 0, 0, -3.0),
        Observation(0, 0, 0, math.nan),
        Observation(0, 0, 0, math.inf),
        Observation(0, 0, 0, 10.0, window_peak=-1),
    ],
)
def test_policies_raise_on_bad_data(obs):
    with pytest.raises(PolicyError):
        target(obs, LIMITS, PARAMS)
    with pytest.raises(PolicyError):
        seed(obs, LIMITS)


def test_bad_limits_and_parameters_raise():
    obs = Observation(1, 0, 0, 10.0)
    with pytest.raises(PolicyError):
        seed(obs, Limits(3, 2))
    with pytest.raises(PolicyError):
        target(obs, LIMITS, TargetParams(latency_target_s=0.0))
    with pytest.raises(PolicyError):
        is_active(-1)
    with pytest.raises(PolicyError):
        make_policy("fastest", PolicyConfig(LIMITS))


def test_make_policy_binds_limits_and_parameters():
    obs = Observation(100, 0, 0, 10.0)
    assert make_policy("seed", PolicyConfig(Limits(0, 5)))(obs).desired == 5
    assert make_policy("target", PolicyConfig(Limits(0, 5), 5.0))(obs).desired == 2
    assert make_policy("target", PolicyConfig(Limits(0, 5), 1.0))(obs).desired == 5


def test_idle_clock_counts_from_the_last_busy_tick():
    clock = IdleClock()
    assert clock.observe(0.0, 0) == 0.0  # nothing watched yet: not idle
    assert clock.observe(2.0, 0) == 2.0
    assert clock.observe(4.0, 3) == 0.0
    assert clock.observe(6.0, 0) == 2.0  # emptied between 4 and 6: counted from 4
    assert clock.observe(9.0, 0) == 5.0


def test_idle_clock_restarts_at_each_counted_arrival():
    """A worker takes a trickle's requests as they come, so no tick sees one waiting: the
    arrivals the web tier counted are what say the trickle still flows."""
    clock = IdleClock()
    assert clock.observe(0.0, 3) == 0.0
    assert clock.observe(2.0, 0, last_arrival_at=None) == 2.0
    assert clock.observe(4.0, 0, last_arrival_at=3.0) == 1.0  # arrived after the busy tick
    assert clock.observe(6.0, 0, last_arrival_at=3.0) == 3.0  # the same arrival: no restart
    assert clock.observe(8.0, 0, last_arrival_at=1.0) == 5.0  # an older one never turns it back
    assert clock.observe(10.0, 0, last_arrival_at=12.0) == 0.0  # stamped ahead of this clock


def test_quiet_window_reports_nothing_until_watched_a_full_period():
    window = QuietWindow(30.0)
    assert window.peak(0.0) is None
    window.observe(0.0, 4)
    window.observe(10.0, 2)
    assert window.peak(20.0) is None
    assert window.peak(30.0) == 4


def test_quiet_window_forgets_demand_older_than_the_period():
    window = QuietWindow(30.0)
    for t, raw in [(0.0, 6), (10.0, 3), (20.0, 1), (40.0, 0)]:
        window.observe(t, raw)
    assert window.peak(40.0) == 3  # the 6 at t=0 is older than 30 s
    assert window.peak(50.0) == 1
    assert window.peak(55.0) == 0
    assert window.peak(100.0) == 0


def test_quiet_window_of_zero_allows_immediate_scale_in():
    window = QuietWindow(0.0)
    window.observe(0.0, 5)
    assert window.peak(2.0) == 0
    with pytest.raises(PolicyError):
        QuietWindow(-1.0)
