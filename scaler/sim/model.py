"""The simulated deployment: a queue, a fleet of instances and a scaler ticking over them.

Modelled: every tick the policy sees visible and in-flight counts and pending + running capacity,
exactly as the real scaler does, and scaler.plan turns its answer into starts, launches, stops and
terminations. A new instance works boot_new_s after launch, a stopped one boot_start_s after its
start. An idle running worker takes up to batch_max waiting messages at once and holds them for
batch_overhead_s + n * service_s. A stopped instance finishes its batch first (the drain).
Instance-seconds count from launch or start until stopped. Not modelled: SQS receive sampling,
visibility timeouts, failures.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field

from runtime.stats import percentile
from scaler.plan import Instance, PoolRules, capacity, plan
from scaler.policies import Limits, Observation, QuietWindow, make_policy
from scaler.sim.traces import Trace


@dataclass(frozen=True)
class SimConfig:
    boot_new_s: float = 40.0
    boot_start_s: float = 10.0
    service_s: float = 0.08  # per image in a batch
    batch_overhead_s: float = 0.2  # per batch: receive, fetch, write results, delete
    batch_max: int = 10
    tick_s: float = 2.0
    limits: Limits = Limits(0, 12)
    latency_target_s: float = 5.0
    quiet_period_s: float = 30.0
    pool: PoolRules = PoolRules(warm_pool_max=2, stopped_max_age_s=3600.0)
    horizon_s: float = 3600.0  # after the last arrival, give up (a policy that never drains)

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
    completed: int
    requests: int

    def as_dict(self) -> dict:
        return {
            "trace": self.trace,
            "policy": self.policy,
            "completion_s": round(self.completion_s, 2),
            "p50_s": round(self.p50_s, 2),
            "p95_s": round(self.p95_s, 2),
            "peak_instances": self.peak_instances,
            "instance_seconds": round(self.instance_seconds, 1),
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

    def view(self) -> Instance:
        return Instance(
            self.instance_id, self.state, self.launched_at, self.restarted, self.stopped_at
        )


class _Run:
    def __init__(self, trace: Trace, policy_name: str, config: SimConfig):
        self.config = config
        self.policy = make_policy(policy_name, config.limits, config.latency_target_s)
        self.window = QuietWindow(config.quiet_period_s)
        self.events: list[tuple[float, int, int, str, str]] = []
        self.seq = 0
        self.queue: deque[float] = deque()
        self.machines: dict[str, _Machine] = {}
        self.latencies: list[float] = []
        self.last_done = 0.0
        self.instance_seconds = 0.0
        self.peak = 0
        self.pending_arrivals = len(trace.arrivals)
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
                self.instance_seconds += now - machine.billed_from
        return now

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
        self.latencies += [now - arrived for arrived in machine.batch]
        self.last_done = now
        machine.batch = []
        if machine.state == "stopping":
            self._stopped(machine, now)

    def _stopped(self, machine: _Machine, now: float) -> None:
        machine.state = "stopped"
        machine.stopped_at = now
        self.instance_seconds += now - machine.billed_from

    def _tick(self, now: float) -> bool:
        """One scaler round; False once all work is done and the fleet has settled."""
        views = [m.view() for m in self.machines.values() if m.state != "terminated"]
        in_flight = sum(len(m.batch) for m in self.machines.values())
        obs = Observation(
            visible=len(self.queue),
            in_flight=in_flight,
            capacity=capacity(views),
            throughput_img_s=self.config.throughput_img_s,
            window_peak=self.window.peak(now),
        )
        decision = self.policy(obs)
        self.window.observe(now, decision.raw)
        actions = plan(decision.desired, views, now, self.config.pool)
        for iid in actions.terminate:
            machine = self.machines[iid]
            if machine.state == "pending":  # a cancelled launch was billed while it booted
                self.instance_seconds += now - machine.billed_from
            machine.state = "terminated"
        for iid in actions.start:
            self._boot(self.machines[iid], now, restarted=True)
        for _ in range(actions.launch):
            iid = f"i-{len(self.machines):05d}"
            self.machines[iid] = _Machine(iid, "pending", now)
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

    def _boot(self, machine: _Machine, now: float, restarted: bool) -> None:
        machine.state = "pending"
        machine.restarted = restarted
        machine.launched_at = now
        machine.billed_from = now
        delay = self.config.boot_start_s if restarted else self.config.boot_new_s
        self._push(now + delay, "ready", machine.instance_id)


def simulate(trace: Trace, policy_name: str, config: SimConfig = SimConfig()) -> Result:  # noqa: B008
    run = _Run(trace, policy_name, config)
    run.run()
    latencies = sorted(run.latencies)
    return Result(
        trace=trace.name,
        policy=policy_name,
        completion_s=run.last_done,
        # No request completed: 0 in the table (the completed column says why).
        p50_s=percentile(latencies, 50) or 0.0,
        p95_s=percentile(latencies, 95) or 0.0,
        peak_instances=run.peak,
        instance_seconds=run.instance_seconds,
        completed=len(latencies),
        requests=len(trace.arrivals),
    )
