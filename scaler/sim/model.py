"""The simulated deployment: a queue, a fleet of instances and a scaler ticking over them.

Modelled: every tick the policy sees visible and in-flight counts and pending + running capacity,
exactly as the real scaler does, and scaler.plan turns its answer into starts, launches, stops and
terminations. A new instance works boot_new_s after launch, a stopped one boot_start_s after its
start. An idle running worker takes up to batch_max waiting messages at once and holds them for
batch_overhead_s + n * service_s. A stopped instance finishes its batch first (the drain).
Instance-seconds count from launch or start until stopped, under two billing models: per second,
and per second with EC2's minimum of 60 s for each start. The drain policy sees the arrival rate
as the live scaler measures it (the lesser of two windows' rates), the latest arrival as its
counts show it (a second late: the idle clock restarts there) and each instance's expected
ready time. Money (runtime.prices): compute at the market's price under both billing models, plus
the requests an image makes (measured on the live stack: docs/scaling.md), per 1,000 images; the
fixed host's cost over the run apart. On the Spot market an instance may be
interrupted (interruptions_per_hour, seeded): it is gone at once, the messages it held go back to
the queue, and the scaler sees the capacity drop at its next tick. Not modelled: SQS receive
sampling, visibility timeouts, failures.
"""

from __future__ import annotations

import bisect
import heapq
import random
from collections import deque
from dataclasses import dataclass, field, replace

from runtime.prices import DEFAULT_PRICES, DEFAULT_WORKER_TYPE, Prices
from runtime.sqs import BATCH_MAX
from runtime.stats import percentile
from scaler.plan import Instance, PoolRules, capacity, paid_left_s
from scaler.policies import IdleClock, Limits, Observation, PolicyConfig, QuietWindow
from scaler.registry import make_planner, make_policy
from scaler.sim.traces import Trace

BILLINGS = ("min60", "per-second")  # EC2's (60 s minimum per start), and without the minimum


@dataclass(frozen=True)
class SimConfig:
    boot_new_s: float = 40.0
    boot_start_s: float = 10.0
    service_s: float = 0.08  # per image in a batch
    batch_overhead_s: float = 0.2  # per batch: receive, fetch, write results, delete
    batch_max: int = BATCH_MAX
    tick_s: float = 2.0
    limits: Limits = Limits(0, 12)
    latency_target_s: float = 5.0
    quiet_period_s: float = 30.0
    # Spares fill the pool once a worker has served the billing's paid minimum, as the scaler's
    # default does (WARM_POOL_SPARES); none on the Spot market (EC2 will not stop them).
    pool: PoolRules = PoolRules(warm_pool_max=2, stopped_max_age_s=3600.0, spares=True)
    idle_delay_s: float = 2.0
    arrival_window_s: float = 1.0
    steady_window_s: float = 30.0
    # The live gauge's windows end where the web tier has surely published: a second back.
    arrival_lag_s: float = 1.0
    min_billed_s: float = 60.0  # EC2's minimum charge for each start
    # What the policy and the planner are told the fleet is billed by, and what cost_per_1000
    # prices: "min60" (EC2's: per second, min_billed_s per start) or "per-second".
    billing: str = "min60"
    horizon_s: float = 3600.0  # after the last arrival, give up (a policy that never drains)
    market: str = "on-demand"  # or "spot": the price, and whether interruptions happen
    instance_type: str = DEFAULT_WORKER_TYPE
    interruptions_per_hour: float = 0.0  # per Spot instance running
    interruption_seed: int = 7
    # Requests per image as the live stack counted them on a 100-image burst (docs/scaling.md):
    # the upload, its cache entry and the result (S3 PUTs), SQS sends, receives and deletes.
    requests_per_image: tuple[tuple[str, float], ...] = (
        ("s3-put", 3.05),
        ("s3-get", 0.16),
        ("sqs", 2.2),
    )
    prices: Prices = DEFAULT_PRICES

    @property
    def paid_minimum_s(self) -> float:
        """The minimum each start is paid for under this run's billing."""
        return self.min_billed_s if self.billing == "min60" else 0.0

    @property
    def throughput_img_s(self) -> float:
        """What one worker does when busy: the number workers would report."""
        return self.batch_max / (self.batch_overhead_s + self.batch_max * self.service_s)


@dataclass(frozen=True)
class Result:
    trace: str
    policy: str
    completion_s: float
    p50_s: float
    p95_s: float
    peak_instances: int
    instance_seconds: float
    instance_seconds_min60: float  # each start billed at least min_billed_s
    starts: int  # launches and starts from stopped
    completed: int
    requests: int
    market: str = "on-demand"
    billing: str = "min60"
    cost_per_1000: float = 0.0  # compute under the run's billing + requests, $
    cost_per_1000_per_s: float = 0.0  # the same, were every second billed without the minimum
    fixed_usd: float = 0.0  # the fixed host over the run: apart, traffic or not
    interruptions: int = 0

    def as_dict(self) -> dict:
        return {
            "trace": self.trace,
            "policy": self.policy,
            "completion_s": round(self.completion_s, 2),
            "p50_s": round(self.p50_s, 2),
            "p95_s": round(self.p95_s, 2),
            "peak_instances": self.peak_instances,
            "instance_seconds": round(self.instance_seconds, 1),
            "instance_seconds_min60": round(self.instance_seconds_min60, 1),
            "starts": self.starts,
            "market": self.market,
            "billing": self.billing,
            "cost_per_1000": round(self.cost_per_1000, 6),
            "cost_per_1000_per_s": round(self.cost_per_1000_per_s, 6),
            "fixed_usd": round(self.fixed_usd, 6),
            "interruptions": self.interruptions,
        }


@dataclass
class _Machine:
    instance_id: str
    state: str  # pending (booting), running, stopping (draining), stopped, terminated
    launched_at: float
    restarted: bool = False
    stopped_at: float | None = None
    batch: list[float] = field(default_factory=list)  # arrival times of the messages it holds
    billed_from: float = 0.0
    ready_at: float = 0.0
    spare: bool = False  # launched to be stopped into the pool once ready (scaler.plan)

    def view(self) -> Instance:
        return Instance(
            self.instance_id,
            self.state,
            self.launched_at,
            self.restarted,
            self.stopped_at,
            ready=self.state == "running",  # here a worker works the moment it is running
            spare=self.spare,
        )


class _Run:
    def __init__(self, trace: Trace, policy_name: str, config: SimConfig):
        self.config = config
        # The policy expects the boot times the model uses, as the live scaler's settings say them.
        self.policy = make_policy(policy_name, PolicyConfig.of(config))
        pool = replace(
            config.pool,
            min_billed_s=config.paid_minimum_s,
            spares=config.pool.spares and config.market == "on-demand",
            fleet_max=config.limits.max,
        )
        self.planner = make_planner(policy_name, pool)
        self.window = QuietWindow(config.quiet_period_s)
        self.idle = IdleClock()
        self.arrived: list[float] = []
        self.billed_min = 0.0
        self.starts = 0
        self.events: list[tuple[float, int, int, str, str]] = []
        self.seq = 0
        self.queue: deque[float] = deque()
        self.machines: dict[str, _Machine] = {}
        self.latencies: list[float] = []
        self.last_done = 0.0
        self.instance_seconds = 0.0
        self.peak = 0
        self.pending_arrivals = len(trace.arrivals)
        self.rng = random.Random(config.interruption_seed)
        self.interruptions = 0
        for t in trace.arrivals:
            self._push(t, "arrive", "")
        self._push(0.0, "tick", "")

    def _push(self, t: float, kind: str, iid: str) -> None:
        # Same-time order: arrivals, then batch ends and boots, then the tick sees the result.
        rank = {"arrive": 0, "done": 1, "ready": 1, "tick": 2}[kind]
        self.seq += 1
        heapq.heappush(self.events, (t, rank, self.seq, kind, iid))

    def run(self) -> float:
        horizon = (max((e[0] for e in self.events), default=0.0)) + self.config.horizon_s
        now = 0.0
        while self.events:
            now, _, _, kind, iid = heapq.heappop(self.events)
            if now > horizon:
                break
            if kind == "arrive":
                self.queue.append(now)
                self.arrived.append(now)
                self.pending_arrivals -= 1
            elif kind == "ready":
                self._ready(iid)
            elif kind == "done":
                self._done(iid, now)
            elif kind == "tick" and not self._tick(now):
                break
            self._dispatch(now)
        for machine in self.machines.values():
            if machine.state in ("pending", "running", "stopping"):
                self._bill(machine, now)
        return now

    def _bill(self, machine: _Machine, now: float) -> None:
        """One run of an instance ends: per second, and per second with the per-start minimum."""
        seconds = now - machine.billed_from
        self.instance_seconds += seconds
        self.billed_min += max(seconds, self.config.min_billed_s)

    def _dispatch(self, now: float) -> None:
        for machine in self.machines.values():
            if not self.queue:
                return
            if machine.state == "running" and not machine.batch:
                n = min(self.config.batch_max, len(self.queue))
                machine.batch = [self.queue.popleft() for _ in range(n)]
                busy = self.config.batch_overhead_s + n * self.config.service_s
                self._push(now + busy, "done", machine.instance_id)

    def _ready(self, iid: str) -> None:
        machine = self.machines[iid]
        if machine.state == "pending":
            machine.state = "running"

    def _done(self, iid: str, now: float) -> None:
        machine = self.machines[iid]
        if machine.state == "terminated":
            return  # interrupted mid-batch: its messages went back to the queue
        self.latencies += [now - arrived for arrived in machine.batch]
        self.last_done = now
        machine.batch = []
        if machine.state == "stopping":
            self._stopped(machine, now)

    def _stopped(self, machine: _Machine, now: float) -> None:
        machine.state = "stopped"
        machine.spare = False  # in the pool now: a start of it is capacity
        machine.stopped_at = now
        self._bill(machine, now)

    def _interrupt(self, now: float) -> None:
        """Spot interruptions since the last tick: each live instance at the configured rate."""
        if self.config.market != "spot" or self.config.interruptions_per_hour <= 0:
            return
        chance = self.config.interruptions_per_hour * self.config.tick_s / 3600
        for machine in self.machines.values():
            if machine.state in ("pending", "running", "stopping") and self.rng.random() < chance:
                self.interruptions += 1
                self.queue.extendleft(reversed(machine.batch))  # handed back, oldest first
                machine.batch = []
                self._bill(machine, now)
                machine.state = "terminated"

    def _tick(self, now: float) -> bool:
        """One scaler round; False once all work is done and the fleet has settled."""
        self._interrupt(now)
        views = [m.view() for m in self.machines.values() if m.state != "terminated"]
        in_flight = sum(len(m.batch) for m in self.machines.values())
        live = [
            m for m in self.machines.values() if m.state in ("pending", "running") and not m.spare
        ]
        obs = Observation(
            visible=len(self.queue),
            in_flight=in_flight,
            capacity=capacity(views),
            throughput_img_s=self.config.throughput_img_s,
            window_peak=self.window.peak(now),
            arrival_rate_img_s=self._arrival_rate(now, self.config.arrival_window_s),
            steady_rate_img_s=self._arrival_rate(now, self.config.steady_window_s),
            ready_in_s=tuple(max(0.0, m.ready_at - now) for m in live),
            paid_left_s=tuple(paid_left_s(m.view(), now, self.config.paid_minimum_s) for m in live),
            warm=sum(1 for m in self.machines.values() if m.state == "stopped"),
            idle_s=self.idle.observe(now, len(self.queue), self._last_arrival(now)),
        )
        decision = self.policy(obs)
        self.window.observe(now, decision.raw)
        actions = self.planner(decision.desired, views, now)
        for iid in actions.terminate:
            machine = self.machines[iid]
            if machine.state == "pending":  # a cancelled launch was billed while it booted
                self._bill(machine, now)
            machine.state = "terminated"
        for iid in actions.start:
            self._boot(self.machines[iid], now, restarted=True)
        for n in range(actions.launch + actions.spares):
            iid = f"i-{len(self.machines):05d}"
            self.machines[iid] = _Machine(iid, "pending", now, spare=n >= actions.launch)
            self._boot(self.machines[iid], now, restarted=False)
        for iid in actions.stop:
            machine = self.machines[iid]
            if machine.batch:
                machine.state = "stopping"
            else:
                self._stopped(machine, now)
        live = [m for m in self.machines.values() if m.state in ("pending", "running")]
        self.peak = max(self.peak, len(live))
        settled = not any(m.state == "stopping" for m in self.machines.values())
        idle = self.pending_arrivals == 0 and not self.queue and in_flight == 0
        if idle and settled and not actions and len(live) <= self.config.limits.min:
            return False
        self._push(now + self.config.tick_s, "tick", "")
        return True

    def _arrival_rate(self, now: float, w: float) -> float:
        """The lesser of the last two windows' rates, as the live gauge reads it: 0 for a burst.

        The windows end arrival_lag_s back, where the live gauge's complete seconds end.
        """
        now -= self.config.arrival_lag_s
        counts = [
            bisect.bisect_right(self.arrived, hi) - bisect.bisect_right(self.arrived, lo)
            for lo, hi in ((now - w, now), (now - 2 * w, now - w))
        ]
        return min(counts) / w

    def _last_arrival(self, now: float) -> float | None:
        """The latest arrival the live gauge would have counted by now (arrival_lag_s back)."""
        seen = bisect.bisect_right(self.arrived, now - self.config.arrival_lag_s)
        return self.arrived[seen - 1] if seen else None

    def _boot(self, machine: _Machine, now: float, restarted: bool) -> None:
        machine.state = "pending"
        machine.restarted = restarted
        machine.launched_at = now
        machine.billed_from = now
        self.starts += 1
        delay = self.config.boot_start_s if restarted else self.config.boot_new_s
        machine.ready_at = now + delay
        self._push(now + delay, "ready", machine.instance_id)


def simulate(trace: Trace, policy_name: str, config: SimConfig = SimConfig()) -> Result:  # noqa: B008
    run = _Run(trace, policy_name, config)
    run.run()
    latencies = sorted(run.latencies)
    prices, done = config.prices, max(1, len(latencies))
    hourly = prices.hourly(config.instance_type, config.market)
    requests = sum(prices.request(name) * n for name, n in config.requests_per_image) * 1000
    billed = run.billed_min if config.billing == "min60" else run.instance_seconds
    return Result(
        trace=trace.name,
        policy=policy_name,
        completion_s=run.last_done,
        # No request completed: 0 in the table (the completed column says why).
        p50_s=percentile(latencies, 50) or 0.0,
        p95_s=percentile(latencies, 95) or 0.0,
        peak_instances=run.peak,
        instance_seconds=run.instance_seconds,
        instance_seconds_min60=run.billed_min,
        starts=run.starts,
        completed=len(latencies),
        requests=len(trace.arrivals),
        market=config.market,
        billing=config.billing,
        cost_per_1000=hourly * billed / 3600 * 1000 / done + requests,
        cost_per_1000_per_s=hourly * run.instance_seconds / 3600 * 1000 / done + requests,
        fixed_usd=prices.fixed_hourly * run.last_done / 3600,
        interruptions=run.interruptions,
    )
