"""`drain`: the smallest fleet that clears the backlog as soon as the largest one would.

For each candidate fleet size the policy projects when the backlog would be gone, given the
arrival rate and the moment each instance can work: running ones now, pending ones when their boot
should end, added ones after a start from the warm pool (boot_start_s) or, once the pool is used
up, a launch (boot_new_s). Work finishes in whole batches, so 10 instances clear a burst of 100 as
soon as 12 do. Arrivals keep coming during the boots, which is what sizes a step up in sustained
load; a burst has no sustained rate behind it (the rate is the lesser of two short windows), so
the warm pool alone clears it whenever new launches could not finish sooner.

While work waits the fleet never shrinks. Once nothing waits, it keeps what the arrival rate
needs, and once nothing has waited or arrived for the idle delay (longer while a steady trickle
flows, but never longer than a restart costs) and nothing arrives, it goes to its minimum. Under
EC2's billing (per second, 60 s minimum per start) an instance still inside its paid minimum is
kept whatever the idle time: stopping it saves nothing and starting it again pays a new minimum.
It goes when its paid time runs out, so the idle delay in effect is max(idle delay, what is left
of the minimum).

Pure: the numbers come in an Observation, nothing here reads a clock or calls AWS.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass

from runtime.sqs import BATCH_MAX
from scaler.policies import Decision, Limits, Observation, PolicyError, check_observation, clamp

NEVER = math.inf
_EPSILON = 1e-9
FLUID_TIE_S = 0.5  # fluid drain times closer than this are a tie
TRICKLE_GAPS = 3  # a Poisson stream leaves a gap this many times its mean about 5 % of the time
TRICKLE_HOLD_MAX_S = 30.0
_MAX_STEPS = 20_000  # batch completions walked before calling a fleet hopeless


@dataclass(frozen=True)
class DrainParams:
    boot_new_s: float  # expected seconds from launch until a new instance's worker works
    boot_start_s: float  # the same from a start out of the warm pool
    idle_delay_s: float  # idle seconds before scaling to the minimum
    batch_max: int = BATCH_MAX  # messages a worker takes at once: work finishes in whole batches
    utilization: float = 0.75  # the busiest the fleet runs under a sustained rate (headroom)

    def __post_init__(self):
        if min(self.boot_new_s, self.boot_start_s, self.idle_delay_s) < 0 or self.batch_max < 1:
            raise PolicyError(f"boot times and idle delay must be >= 0, batch_max >= 1: {self}")
        if not 0 < self.utilization <= 1:
            raise PolicyError(f"utilization must be in (0, 1]: {self.utilization}")


def fluid_drain_time(
    backlog: float, rate: float, per_instance: float, ready_in_s: Sequence[float]
) -> float:
    """Seconds until a fluid backlog is gone and stays gone; NEVER if the fleet cannot keep up.

    Work left at t is backlog + rate*t - per_instance * sum(max(0, t - r)) over ready times r:
    piecewise linear, so walk the segments between ready times.
    """
    if backlog < 0 or rate < 0 or per_instance <= 0:
        raise PolicyError("backlog and rate must be >= 0 and per-instance throughput > 0")
    ready = sorted(ready_in_s)
    left, t, working = float(backlog), 0.0, 0
    while True:  # ends: each pass either returns or lets one more instance join
        while working < len(ready) and ready[working] <= t:
            working += 1
        slope = rate - working * per_instance
        end = ready[working] if working < len(ready) else NEVER
        if left <= 0 and slope <= 0:
            return t
        if slope < 0 and t + left / -slope <= end:
            return t + left / -slope
        if end == NEVER:
            return NEVER
        left += slope * (end - t)
        t = end


def drain_time(
    backlog: float,
    rate: float,
    per_instance: float,
    ready_in_s: Sequence[float],
    batch_max: int = 1,
) -> float:
    """Like fluid_drain_time, but work finishes in whole batches of batch_max.

    Each instance completes one batch every batch_max / per_instance seconds from its ready time.
    That is what tells 10 instances from 12 on a burst of 100: both finish in one round.
    The fluid answer is a lower bound, so the walk over batch completions starts there.
    """
    fluid = fluid_drain_time(backlog, rate, per_instance, ready_in_s)
    if fluid == NEVER or backlog == 0 or batch_max <= 1:
        return fluid
    batch_s = batch_max / per_instance
    done, upcoming = 0, []
    for r in ready_in_s:
        # Batches finished by the fluid time, then the instance's next completion after it.
        finished = max(0, math.floor((fluid - r) / batch_s + _EPSILON))
        done += finished
        heapq.heappush(upcoming, r + (finished + 1) * batch_s)
    for _ in range(_MAX_STEPS):
        if done * batch_max >= backlog + rate * fluid - _EPSILON and done > 0:
            return fluid
        fluid = heapq.heappop(upcoming)
        done += 1
        heapq.heappush(upcoming, fluid + batch_s)
    return NEVER


def candidate_ready_times(obs: Observation, size: int, params: DrainParams) -> list[float]:
    """Ready times of a fleet of `size`: today's soonest first, then starts, then launches.

    A smaller fleet sheds the instances that would be ready last (the planner cancels the newest
    launches first); a larger one restarts the warm pool before it launches anything.
    """
    have = sorted(obs.ready_in_s)
    if size <= len(have):
        return have[:size]
    extra = size - len(have)
    starts = min(extra, obs.warm)
    return have + [params.boot_start_s] * starts + [params.boot_new_s] * (extra - starts)


def idle_hold_s(steady_rate: float, params: DrainParams) -> float:
    """How long an empty queue waits before the fleet goes to zero.

    The idle delay; longer while a steady trickle still flows, so that the next request (due in
    1 / rate seconds) does not pay a restart: up to TRICKLE_GAPS gaps, at most TRICKLE_HOLD_MAX_S,
    and never longer than the restart it may save costs (boot_start_s: a restarted instance is
    billed while it boots, and the next request waits as long). Past that the hold has cost more
    than the restart would; stopping there pays at most twice what hindsight would (the
    break-even rule of renting versus buying), whatever the gaps: three mean gaps assume Poisson
    gaps, and on long-tailed ones three mean gaps often pass with nothing. A burst shows no
    steady rate, so after one the fleet goes to zero after the idle delay.
    """
    if steady_rate <= 0:
        return params.idle_delay_s
    trickle = min(TRICKLE_GAPS / steady_rate, TRICKLE_HOLD_MAX_S, params.boot_start_s)
    return max(params.idle_delay_s, trickle)


def sustained_need(rate: float, per_instance: float, utilization: float) -> int:
    """Instances that keep up with the arrival rate at the given utilization."""
    return math.ceil(rate / (per_instance * utilization) - _EPSILON) if rate > 0 else 0


def drain(obs: Observation, limits: Limits, params: DrainParams) -> Decision:
    check_observation(obs, limits)
    if len(obs.ready_in_s) != obs.capacity:
        raise PolicyError(f"{len(obs.ready_in_s)} ready times for a capacity of {obs.capacity}")
    load, rate, per = obs.load, obs.arrival_rate_img_s, obs.throughput_img_s
    facts = {
        "visible": obs.visible,
        "in_flight": obs.in_flight,
        "arrival_rate_img_s": round(rate, 3),
        "throughput_img_s": round(per, 3),
        "capacity": obs.capacity,
        "warm": obs.warm,
        "idle_s": round(obs.idle_s, 1),
        "idle_delay_s": params.idle_delay_s,
        "steady_rate_img_s": round(obs.steady_rate_img_s, 3),
    }

    def decide(desired: int, raw: int, code: str, reason: str, **more) -> Decision:
        return Decision(clamp(desired, limits), raw, reason, code, tuple({**facts, **more}.items()))

    hold = idle_hold_s(obs.steady_rate_img_s, params)
    paid = obs.paid
    facts["paid"] = paid
    if obs.visible == 0 and rate == 0 and obs.idle_s >= hold:
        if paid:
            return decide(
                paid,
                0,
                "idle-paid",
                f"nothing waiting for {obs.idle_s:g}s >= {hold:g}s: keep {paid} until their paid"
                f" minimum runs out (the most {max(obs.paid_left_s):.0f}s more)",
            )
        return decide(0, 0, "idle", f"nothing waiting for {obs.idle_s:g}s >= {hold:g}s: to zero")
    need = sustained_need(max(rate, obs.steady_rate_img_s), per, params.utilization)
    if obs.visible == 0:
        # Nothing waits: busy instances finish their batches even when stopped, so keep what the
        # arrivals need (one, until the idle delay runs out) and let the rest go, except those
        # already paid for.
        keep = min(obs.capacity, max(need, 1, paid))
        return decide(
            keep,
            need,
            "keep-up",
            f"nothing waiting: keep {keep} for {rate:g}/s arriving ({paid} paid for)",
            sustained_need=need,
        )
    fleets = [candidate_ready_times(obs, size, params) for size in range(limits.max + 1)]
    projections = [drain_time(load, rate, per, f, params.batch_max) for f in fleets]
    fluid = [fluid_drain_time(load, rate, per, f) for f in fleets]
    best = projections[limits.max]
    if best == NEVER:
        return decide(
            limits.max,
            limits.max,
            "overloaded",
            f"{rate:g}/s arriving outruns {limits.max} x {per:g}/s: the most",
            sustained_need=need,
        )
    # While anything waits the fleet never shrinks: cancelling a launch or stopping a worker
    # that would take the next batch saves a few seconds and risks a new boot later.
    size = max(
        obs.capacity,
        min(need, limits.max),
        next(
            n
            for n, (t, f) in enumerate(zip(projections, fluid, strict=True))
            # Whole batches decide; the fluid time breaks ties where rounding hides a gain.
            if t <= best + _EPSILON and f <= fluid[limits.max] + FLUID_TIE_S
        ),
    )
    size = min(size, limits.max)  # a lowered max brings a bigger fleet down
    starts = min(max(0, size - obs.capacity), obs.warm)
    launches = max(0, size - obs.capacity - starts)
    return decide(
        size,
        size,
        "drain-projection",
        f"{size} clear {load} queued + {rate:g}/s in {projections[size]:.1f}s "
        f"(the most, {limits.max}, in {best:.1f}s): {starts} start(s), {launches} launch(es)",
        drain_s=round(projections[size], 2),
        best_drain_s=round(best, 2),
        starts=starts,
        launches=launches,
        sustained_need=need,
    )
