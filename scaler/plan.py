"""Turn a desired instance count into fleet actions: pure, shared by EC2 and the simulator.

Rules: pending and running instances are capacity (so a burst does not launch a second herd while
the first boots); scale-out starts stopped instances (the warm pool) before launching; scale-in
cancels new launches still pending, then stops running instances, newest first (under a paid
minimum, those whose paid time has run out first); stopped instances
beyond the pool, or stopped too long, are terminated. A Spot instance is terminated where an
on-demand one would be stopped: EC2 cannot stop a one-time Spot instance, so it never joins the
warm pool. An instance whose worker was given notice (a Spot interruption or a rebalance
recommendation: runtime.readiness) is gone already: it is no capacity, it is terminated, and the
count it leaves short is launched or started in the same plan.

The pool is also filled ahead of need (`PoolRules.spares`): once a worker has served as long as
a start is paid for (min_billed_s) and nothing is being scaled, spares are launched to fill it;
each is stopped into the pool once its worker is ready, so its image and model are on its disk.
A spare is no capacity while it boots (the policy does not count it), and is paid once: a start
pays EC2's minute, and a surge the pool serves then starts in a restart's boot instead of a
launch's. What a surge started goes back to the pool at scale-in (stopped, not terminated), and
running workers count as the pool's members, so spares are launched again only when the pool
ages out (stopped_max_age_s) or capacity is lost.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

CAPACITY_STATES = ("pending", "running")
# A spare whose worker is not ready this long after its launch will not be: something keeps it
# from booting (the image, the model). It is terminated, not left running unseen as no capacity.
SPARE_READY_MAX_S = 600.0
FLEET_STATES = ("pending", "running", "stopping", "stopped")


@dataclass(frozen=True)
class Instance:
    """One fleet instance as the planner and the runners see it."""

    instance_id: str
    state: str  # EC2 state name
    launched_at: float  # epoch seconds this run began (launch, or the latest start from stopped)
    restarted: bool = False  # this run is a start from stopped, not a new launch
    stopped_at: float | None = None  # epoch seconds of our last stop, when we know it
    ready: bool = False  # its worker has loaded the model during this run (runtime.readiness)
    spot: bool = False  # a one-time Spot instance: EC2 refuses to stop it, so it is terminated
    instance_type: str = ""  # what its running time is priced at (scaler.billing)
    notice: bool = False  # its worker was given notice during this run and takes no more work
    usage: str = ""  # its worker's usage tag, as written (runtime.usage)
    ready_at: float | None = None  # epoch seconds its worker became ready in this run
    spare: bool = False  # launched to fill the warm pool: stopped into it once ready
    # (name, version) its worker serves, default first, as its tag says (runtime.model_versions)
    models: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class PoolRules:
    warm_pool_max: int  # stopped instances kept for fast restarts
    stopped_max_age_s: float  # stopped longer than this: terminate
    min_billed_s: float = 0.0  # each run is paid at least this long (EC2: 60 s); 0 per second
    # Fill the pool with spares once a worker has served min_billed_s: a spare is paid as one
    # start, so a fleet that has run that long is worth one (never for a Spot-only fleet, whose
    # instances EC2 will not stop).
    spares: bool = False
    fleet_max: int | None = None  # spares never take the fleet past this many instances


def paid_left_s(instance: Instance, now: float, min_billed_s: float) -> float:
    """Seconds of this run's paid minimum not yet used: 0 once it has run that long."""
    # Clamped both ways: a start stamped ahead of this clock (skew) is paid at most the minimum.
    return min(min_billed_s, max(0.0, min_billed_s - (now - instance.launched_at)))


@dataclass(frozen=True)
class Actions:
    start: tuple[str, ...] = ()
    launch: int = 0
    stop: tuple[str, ...] = ()
    terminate: tuple[str, ...] = ()
    spares: int = 0  # launched to be stopped into the warm pool once ready

    def __bool__(self) -> bool:
        return bool(self.start or self.launch or self.stop or self.terminate or self.spares)

    def describe(self) -> str:
        spares = f" spares={self.spares}" if self.spares else ""
        return (
            f"start={list(self.start)} launch={self.launch} "
            f"stop={list(self.stop)} terminate={list(self.terminate)}{spares}"
        )


def count_states(instances: Iterable[Instance]) -> dict[str, int]:
    counts = dict.fromkeys(FLEET_STATES, 0)
    for instance in instances:
        if instance.state in counts:
            counts[instance.state] += 1
    return counts


def starting(instances: Iterable[Instance]) -> int:
    """Running instances whose worker still loads its model: capacity that serves nothing yet."""
    return sum(1 for i in instances if i.state == "running" and not i.ready and not i.spare)


def workers(instances: Iterable[Instance]) -> list[dict]:
    """The running instances for /status, each with the model versions its worker serves; none
    until its worker is ready in this run (a restarted instance's tag is its last run's)."""
    return [
        {
            "id": i.instance_id,
            "models": [{"name": n, "version": v} for n, v in i.models] if i.ready else [],
        }
        for i in sorted(instances, key=lambda i: i.instance_id)
        if i.state == "running"
    ]


def serving(instance: Instance) -> bool:
    """Pending or running, not under notice and not a spare: capacity the policy may count on."""
    return instance.state in CAPACITY_STATES and not instance.notice and not instance.spare


def capacity(instances: Iterable[Instance]) -> int:
    return sum(1 for i in instances if serving(i))


def _without_noticed(instances: list[Instance]) -> tuple[list[Instance], list[Instance]]:
    """(the fleet a plan works with, the instances under notice it terminates)."""
    noticed = [i for i in instances if i.notice and i.state in CAPACITY_STATES]
    gone = {i.instance_id for i in noticed}
    return [i for i in instances if i.instance_id not in gone], noticed


def _stop_time(instance: Instance) -> float:
    # Without our stop tag (stopped by hand) the launch time is the earliest it can have stopped.
    return instance.stopped_at if instance.stopped_at is not None else instance.launched_at


def plan(desired: int, instances: list[Instance], now: float, rules: PoolRules) -> Actions:
    if desired < 0:
        raise ValueError(f"negative desired count {desired}")
    instances, noticed = _without_noticed(instances)
    spares = [i for i in instances if i.spare and i.state in CAPACITY_STATES]
    instances = [i for i in instances if i not in spares]
    by_state = {state: [i for i in instances if i.state == state] for state in FLEET_STATES}
    have = len(by_state["pending"]) + len(by_state["running"])

    start: list[Instance] = []
    launch = 0
    stop: list[Instance] = []
    cancel: list[Instance] = []
    if desired > have:
        # Oldest stopped first: restarting it resets the age that would otherwise expire it.
        warm = sorted(by_state["stopped"], key=_stop_time)
        start = warm[: desired - have]
        launch = desired - have - len(start)
    elif desired < have:
        # First cancel new launches still booting: they have done no work and hold nothing warm.
        # EC2 cannot stop a pending instance, so cancelling is terminating. Then stop running
        # instances, newest first (under emulated boot delays, those are the ones still booting).
        # A pending restart is left for a later tick, when it can be stopped back into the pool.
        booting = [i for i in by_state["pending"] if not i.restarted]
        cancel = sorted(booting, key=lambda i: i.launched_at, reverse=True)[: have - desired]
        # Under a paid minimum, those whose paid time has run out go first (they cost by the
        # second), then those with the least paid time left.
        newest_first = sorted(
            by_state["running"],
            key=lambda i: (paid_left_s(i, now, rules.min_billed_s), -i.launched_at),
        )
        going = newest_first[: have - desired - len(cancel)]
        stop += [i for i in going if not i.spot]
        cancel += [i for i in going if i.spot]

    scaling = bool(start or launch or stop or cancel)
    # A spare goes into the pool once its worker is ready; one still booting will, unless it
    # has booted for SPARE_READY_MAX_S.
    stop += [i for i in spares if i.state == "running" and i.ready]
    stuck = [i for i in spares if not i.ready and now - i.launched_at > SPARE_READY_MAX_S]
    booting_spares = len(spares) - sum(1 for i in spares if i in stop or i in stuck)

    started = {i.instance_id for i in start}
    idle = [i for i in by_state["stopped"] if i.instance_id not in started]
    aged = [i for i in idle if now - _stop_time(i) > rules.stopped_max_age_s]
    fresh = sorted((i for i in idle if i not in aged), key=_stop_time, reverse=True)
    # Instances on their way to stopped are the newest members of the pool.
    slots = max(0, rules.warm_pool_max - len(by_state["stopping"]) - len(stop))
    terminate = noticed + cancel + stuck + aged + fresh[slots:]
    pool = len(by_state["stopping"]) + len(stop) + min(len(fresh), slots) + booting_spares
    new_spares = 0
    if not scaling:
        new_spares = _spares(by_state["running"], pool, have + booting_spares, now, rules)

    return Actions(
        start=tuple(i.instance_id for i in start),
        launch=launch,
        stop=tuple(i.instance_id for i in stop),
        terminate=tuple(i.instance_id for i in terminate),
        spares=new_spares,
    )


def _spares(running: list[Instance], pool: int, live: int, now: float, rules: PoolRules) -> int:
    """Spares to launch into the pool: what it lacks, once a worker has served min_billed_s,
    and never past fleet_max instances running at once (`live` counts those there are). Running
    instances go to the pool when traffic stops: they are its members too, so a pool a surge has
    just used is not refilled by launches while the surge runs, and a pool the last worker joins
    does not overflow (each overflow terminated would be a launch wasted)."""
    if not rules.spares:
        return 0
    if not any(i.ready and now - i.launched_at >= rules.min_billed_s for i in running):
        return 0
    room = rules.warm_pool_max - pool - len(running)
    if rules.fleet_max is not None:
        room = min(room, rules.fleet_max - live)
    return max(0, room)


def plan_original(desired: int, instances: list[Instance]) -> Actions:
    """The original design's executor, for policy `seed`: no warm pool and no scale-in under load.

    Out: start stopped instances first, then launch. At zero (the queue is empty): stop every
    running instance. Whatever is stopped and not started again is terminated at the next tick.
    Pending instances are left to boot (EC2 cannot stop them); the next empty tick stops them.
    """
    if desired < 0:
        raise ValueError(f"negative desired count {desired}")
    instances, noticed = _without_noticed(instances)
    by_state = {state: [i for i in instances if i.state == state] for state in FLEET_STATES}
    have = len(by_state["pending"]) + len(by_state["running"])
    start = by_state["stopped"][: max(0, desired - have)]
    launch = max(0, desired - have - len(start))
    going = by_state["running"] if desired == 0 else []
    stop = [i for i in going if not i.spot]
    started = {i.instance_id for i in start}
    terminate = noticed + [i for i in going if i.spot]  # a Spot instance cannot be stopped
    terminate += [i for i in by_state["stopped"] if i.instance_id not in started]
    return Actions(
        start=tuple(i.instance_id for i in start),
        launch=launch,
        stop=tuple(i.instance_id for i in stop),
        terminate=tuple(i.instance_id for i in terminate),
    )
