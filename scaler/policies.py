"""Scaling policies: pure functions from queue and fleet numbers to a desired instance count.

Nothing here calls AWS, reads a clock or logs. The executor (scaler.service) gathers the numbers,
the simulator (scaler.sim) makes them up, and both call the same functions.

`target` follows AWS's "scaling based on Amazon SQS" guidance (backlog per instance) in the shape
of KEDA's SQS scaler: typed inputs, bad data raises, and the 0 -> 1 activation decision is apart
from the per-instance target.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, fields

from runtime.sqs import BATCH_MAX

SEED_IMAGES_PER_INSTANCE = 4


class PolicyError(ValueError):
    """The numbers handed to a policy are impossible (negative counts, zero throughput)."""


@dataclass(frozen=True)
class Observation:
    """What a policy sees at one tick."""

    visible: int  # messages waiting in the request queue
    in_flight: int  # messages received by a worker and not yet deleted
    capacity: int  # instances that are or will soon be working: pending + running
    throughput_img_s: float  # images per second one instance handles (measured or the default)
    # Highest raw demand over the last quiet period; None until the scaler has watched that long.
    window_peak: int | None = None
    arrival_rate_img_s: float = 0.0  # requests per second arriving lately (sustained, not bursts)
    steady_rate_img_s: float = 0.0  # the same over longer windows: is a trickle still flowing?
    # Seconds until each pending or running instance works: 0 when running. One per capacity.
    ready_in_s: tuple[float, ...] = ()
    warm: int = 0  # stopped instances that a start brings back faster than a launch
    idle_s: float = 0.0  # seconds since a tick last saw any load
    # Seconds each pending or running instance is already paid for and not yet used: under EC2's
    # billing (a 60 s minimum per start) what is left of its minimum; 0 billed per second.
    paid_left_s: tuple[float, ...] = ()

    @property
    def load(self) -> int:
        return self.visible + self.in_flight

    @property
    def paid(self) -> int:
        """Instances still inside their paid minimum: stopping one saves nothing, and starting it
        again would begin a new one."""
        return sum(1 for left in self.paid_left_s if left > 0)


@dataclass(frozen=True)
class Limits:
    min: int
    max: int


@dataclass(frozen=True)
class TargetParams:
    latency_target_s: float  # how long the backlog may take to clear: the queueing delay aimed for
    activation_load: int = 0  # the fleet wakes from zero once load exceeds this


@dataclass(frozen=True)
class PolicyConfig:
    """Everything a policy is bound to besides the observation: the deployment's settings."""

    limits: Limits
    latency_target_s: float = 5.0  # target
    activation_load: int = 0  # target
    boot_new_s: float = 40.0  # drain: expected seconds from launch until a new worker works
    boot_start_s: float = 10.0  # drain: the same from a start out of the warm pool
    idle_delay_s: float = 2.0  # drain: idle seconds before the fleet goes to zero
    batch_max: int = BATCH_MAX  # drain: one batch is the finest step a projection can tell apart

    @classmethod
    def of(cls, rules) -> PolicyConfig:
        """The fields `rules` has by these names (the live scaler's config, the simulator's);
        the ones it lacks keep their defaults."""
        names = (f.name for f in fields(cls))
        return cls(**{name: getattr(rules, name) for name in names if hasattr(rules, name)})


@dataclass(frozen=True)
class Decision:
    desired: int  # instance count to aim for now (within limits)
    raw: int  # what the load alone asks for, before the quiet period and the limits
    reason: str  # one line for people
    code: str = ""  # the rule that decided, for machines (the dashboard words it)
    facts: tuple[tuple[str, float | int | str], ...] = ()  # the numbers behind the rule


Policy = Callable[[Observation], Decision]


def check_observation(obs: Observation, limits: Limits) -> None:
    if obs.visible < 0 or obs.in_flight < 0 or obs.capacity < 0:
        raise PolicyError(f"negative count in {obs}")
    if not (obs.throughput_img_s > 0 and math.isfinite(obs.throughput_img_s)):
        raise PolicyError(f"throughput must be a positive number, got {obs.throughput_img_s!r}")
    if obs.window_peak is not None and obs.window_peak < 0:
        raise PolicyError(f"negative window peak {obs.window_peak}")
    for rate in (obs.arrival_rate_img_s, obs.steady_rate_img_s):
        if not (rate >= 0 and math.isfinite(rate)):
            raise PolicyError(f"arrival rates must be numbers >= 0, got {rate!r}")
    times = (*obs.ready_in_s, *obs.paid_left_s)
    if obs.warm < 0 or not obs.idle_s >= 0 or any(not r >= 0 for r in times):
        raise PolicyError(f"negative warm pool, idle time, ready or paid time in {obs}")
    if len(obs.paid_left_s) > obs.capacity:
        raise PolicyError(f"{len(obs.paid_left_s)} paid times for a capacity of {obs.capacity}")
    if not 0 <= limits.min <= limits.max:
        raise PolicyError(f"need 0 <= min <= max, got {limits}")


def clamp(n: int, limits: Limits) -> int:
    return max(limits.min, min(n, limits.max))


def seed(obs: Observation, limits: Limits) -> Decision:
    """The original design: one instance per 4 visible images, up to max; never scales in while
    anything is visible, and goes to zero (its planner: stop, then terminate) once nothing is."""
    check_observation(obs, limits)
    raw = math.ceil(obs.visible / SEED_IMAGES_PER_INSTANCE)
    if obs.visible == 0:
        return Decision(limits.min, raw, "queue empty: stop all", "empty", (("visible", 0),))
    desired = max(obs.capacity, clamp(raw, limits))
    return Decision(
        desired,
        raw,
        f"ceil(visible {obs.visible} / {SEED_IMAGES_PER_INSTANCE}), never below the fleet",
        "per-4-visible",
        (("visible", obs.visible), ("per_instance", SEED_IMAGES_PER_INSTANCE)),
    )


def is_active(load: int, activation_load: int = 0) -> bool:
    """Whether there is work at all: the 0 <-> 1 decision, apart from the per-instance target."""
    if load < 0:
        raise PolicyError(f"negative load {load}")
    return load > activation_load


def backlog_per_instance(latency_target_s: float, throughput_img_s: float) -> float:
    """Messages one instance may hold and still answer within the latency target."""
    if latency_target_s <= 0 or throughput_img_s <= 0:
        raise PolicyError("latency target and throughput must be > 0")
    return latency_target_s * throughput_img_s


def target_raw(obs: Observation, params: TargetParams) -> tuple[int, str]:
    """Instances the load asks for, ignoring the fleet's size, the quiet period and the limits."""
    if not is_active(obs.load, params.activation_load):
        return 0, f"inactive: load {obs.load} <= activation {params.activation_load}"
    per_instance = backlog_per_instance(params.latency_target_s, obs.throughput_img_s)
    raw = max(1, math.ceil(obs.load / per_instance))
    return raw, f"load {obs.load} / backlog per instance {per_instance:g}"


def target(obs: Observation, limits: Limits, params: TargetParams) -> Decision:
    """Target tracking on backlog per instance: out at once, in only after a quiet period."""
    check_observation(obs, limits)
    raw, why = target_raw(obs, params)
    facts = (("load", obs.load), ("capacity", obs.capacity), ("raw", raw))
    if raw >= obs.capacity:
        return Decision(clamp(raw, limits), raw, f"{why}: scale to demand", "to-demand", facts)
    if obs.window_peak is None:
        reason = f"{why}: hold, quiet period not watched"
        return Decision(clamp(obs.capacity, limits), raw, reason, "hold-unwatched", facts)
    keep = min(obs.capacity, max(raw, obs.window_peak))
    facts = (*facts, ("window_peak", obs.window_peak))
    if keep == obs.capacity:
        reason = f"{why}: hold, peak {obs.window_peak} within quiet period"
        return Decision(clamp(keep, limits), raw, reason, "hold-peak", facts)
    reason = f"{why}: scale in to quiet-period peak {max(raw, obs.window_peak)}"
    return Decision(clamp(keep, limits), raw, reason, "quiet-scale-in", facts)


class QuietWindow:
    """Remembers raw demand long enough to say what the peak of the last quiet period was.

    The one stateful piece of scaling; it keeps timestamps given by the caller, never a clock.
    """

    def __init__(self, period_s: float):
        if period_s < 0:
            raise PolicyError("quiet period must be >= 0")
        self.period_s = period_s
        self._first: float | None = None
        self._samples: deque[tuple[float, int]] = deque()

    def observe(self, now: float, raw: int) -> None:
        if self._first is None:
            self._first = now
        self._samples.append((now, raw))
        while self._samples and self._samples[0][0] < now - self.period_s:
            self._samples.popleft()

    def peak(self, now: float) -> int | None:
        """Highest raw demand seen within period_s before now; None until watched that long."""
        if self._first is None or now - self._first < self.period_s:
            return None
        return max((r for t, r in self._samples if t >= now - self.period_s), default=0)


class IdleClock:
    """How long the queue has been idle: seconds since anything last waited or arrived.

    Counted from the later of the last tick that saw work waiting and the last arrival the
    caller has counted (the web tier's per-second counts, published a second or so late).
    The arrivals matter: a running worker takes a trickle's requests as they come, so a tick
    seldom sees one waiting, and a clock fed the queue alone would call a flowing trickle idle.
    So the fleet goes to zero at most idle delay + one tick after the last request came or
    waited. Timestamps come from the caller.
    """

    def __init__(self):
        self._busy_at: float | None = None

    def observe(self, now: float, load: int, last_arrival_at: float | None = None) -> float:
        """Record this tick's load and latest counted arrival; return the idle seconds."""
        if load > 0 or self._busy_at is None:
            self._busy_at = now
        if last_arrival_at is not None:
            self._busy_at = max(self._busy_at, min(last_arrival_at, now))
        return now - self._busy_at
