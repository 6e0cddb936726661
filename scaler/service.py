"""One scaler tick: measure, ask the policy, plan, act through EC2, let the local runner follow.

Each decision is one log line carrying its inputs and reason; the last few are kept for /status
as structured records (see `DecisionRecord`), which the dashboard words as sentences.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ClientError

from runtime import keys
from runtime.costs import MINIMUM_BILLED_S, summary
from runtime.failures import describe
from runtime.prices import DEFAULT_PRICES, Prices
from runtime.requests import RequestCounter, add
from runtime.settings import Settings
from runtime.sqs import BATCH_MAX, QueueAttributeError
from scaler.arrivals import ArrivalGauge, Arrivals
from scaler.billing import Ledger
from scaler.decisions import decision_record
from scaler.estimates import Estimate, Estimates, EstimateStore, reported_rate
from scaler.fleet import Fleet, view
from scaler.gauges import QueueDepth, QueueGauge, ThroughputGauge
from scaler.lanes import job_share, per_instance
from scaler.plan import (
    CAPACITY_STATES,
    Instance,
    PoolRules,
    capacity,
    count_states,
    paid_left_s,
    serving,
    starting,
    workers,
)
from scaler.policies import (
    IdleClock,
    Limits,
    Observation,
    Policy,
    PolicyConfig,
    PolicyError,
    QuietWindow,
)
from scaler.registry import make_planner, make_policy
from scaler.runners.base import Runner

log = logging.getLogger(__name__)

DECISIONS_KEPT = 20
SAVE_EVERY_S = 60.0  # the most often a changed throughput is written to the estimates store
_AWS_ERRORS = (ClientError, BotoCoreError)


def _fills_pool(settings: Settings) -> bool:
    """Spares only where they can be on-demand (EC2 refuses to stop a one-time Spot instance):
    an on-demand fleet, or Spot with an on-demand fallback, whose pool is then on-demand."""
    return (
        settings.warm_pool_spares
        and settings.warm_pool_max > 0
        and settings.fleet_market in ("on-demand", "spot-with-fallback")
    )


@dataclass(frozen=True)
class ScalerConfig:
    policy: str
    limits: Limits
    latency_target_s: float
    quiet_period_s: float
    pool: PoolRules
    job_fleet_max: int = 0  # 0: the job lane may use the whole fleet
    boot_new_s: float = 40.0  # expected: a pending instance works this long after its launch
    boot_start_s: float = 10.0  # ... or after its start from stopped
    idle_delay_s: float = 2.0
    batch_max: int = BATCH_MAX
    model: str = ""  # whose throughput is remembered
    instance_type: str = ""  # what a launch tries first ("": the launch template's)

    @classmethod
    def from_settings(cls, settings: Settings) -> ScalerConfig:
        return cls(
            policy=settings.policy,
            limits=Limits(settings.fleet_min, settings.fleet_max),
            latency_target_s=settings.latency_target_s,
            quiet_period_s=settings.quiet_period_s,
            # EC2 bills each start at least MINIMUM_BILLED_S: the planner stops first the
            # instances whose paid time has run out.
            pool=PoolRules(
                settings.warm_pool_max,
                settings.stopped_max_age_s,
                MINIMUM_BILLED_S,
                # Once a worker has served its paid minute; a Spot-only fleet has none to launch.
                spares=_fills_pool(settings),
                fleet_max=settings.fleet_max,
            ),
            job_fleet_max=settings.job_fleet_max,
            boot_new_s=settings.expected_boot_new_s,
            boot_start_s=settings.expected_boot_start_s,
            idle_delay_s=settings.idle_delay_s,
            batch_max=settings.batch_max,
            model=settings.model,
            instance_type=next(iter(settings.instance_types), ""),
        )

    def ready_in_s(self, instance: Instance, now: float) -> float:
        """Seconds until a pending or running instance works, from its state and (re)start: a
        running one whose worker still loads its model works when its boot should end."""
        if instance.ready:
            return 0.0
        boot = self.boot_start_s if instance.restarted else self.boot_new_s
        return max(0.0, instance.launched_at + boot - now)


class Scaler:
    def __init__(
        self,
        config: ScalerConfig,
        *,
        fleet: Fleet,
        queue: QueueGauge,
        throughput: ThroughputGauge,
        arrivals: ArrivalGauge | None = None,
        runner: Runner | None = None,
        store: EstimateStore | None = None,
        clock: Callable[[], float] = time.time,
        prices: Prices = DEFAULT_PRICES,
        requests: RequestCounter | None = None,
    ):
        self.config = config
        self._prices = prices
        self._ledger = Ledger(prices)
        self._requests = requests  # what this process's clients send
        self._started_at = clock()
        # What the policy plans with: the configured boot times until measured ones replace them.
        self._planning = config
        self._policy: Policy = make_policy(config.policy, PolicyConfig.of(config))
        self._estimates = Estimates(config.boot_new_s, config.boot_start_s)
        self._store = store
        if store is not None:
            self._estimates.load(store.load())
        self._saved_at = 0.0
        self._rate_unsaved = False  # a changed throughput waits for its minute
        self._inputs: dict = {}
        self._plan = make_planner(config.policy, config.pool)
        self._window = QuietWindow(config.quiet_period_s)
        self._idle = IdleClock()
        self._arrivals = arrivals
        self._fleet = fleet
        self._queue = queue
        self._throughput = throughput
        self._runner = runner
        self._clock = clock
        self._lock = threading.Lock()
        self._decisions: deque[dict] = deque(maxlen=DECISIONS_KEPT)
        self._last_key: tuple | None = None
        self._depth = QueueDepth(0, 0, 0)
        self._fleet_counts = self._counts([])
        self._workers: list[dict] = []
        self._img_s = 0.0

    def tick(self) -> None:
        """One round. Failures are logged and leave the fleet as it is until the next tick: an
        AWS error in one line that says what failed, anything unexpected with its traceback."""
        try:
            self._tick()
        except Exception as error:  # noqa: BLE001 - one bad tick must not end the scaler
            line = f"tick failed ({describe(error)}); fleet stays as it is"
            log.error("decision %s", line, exc_info=error)
            self._last_key = ("tick-error",)
            record = decision_record(self._clock(), self.config.policy, None, None, None)
            self._remember(
                {**record, "ok": False, "code": "tick-error", "reason": line, "text": line}
            )

    def _tick(self) -> None:
        now = self._clock()
        try:
            instances = self._fleet.instances()
        except _AWS_ERRORS as error:
            self._failed("ec2", f"fleet unreadable ({describe(error)}); fleet stays as it is")
            return
        self._follow(instances)
        try:
            depth = self._queue.read()
        except (*_AWS_ERRORS, QueueAttributeError) as error:
            self._failed("sqs", f"queue unreadable ({describe(error)}); fleet stays as it is")
            return
        # Nothing queued and nothing running: nothing is arriving either (an accepted upload is
        # queued before anyone waits for it), so no CloudWatch call this tick. CloudWatch bills
        # every read; an idle deployment would pay for one per tick (docs/deploy.md, idle cost).
        quiet = depth.visible + depth.in_flight + depth.job_load == 0 and not any(
            i.state in ("pending", "running") for i in instances
        )
        # The workers' usage tags came with the listing (EC2 bills no call): while a worker run
        # tells its rate, CloudWatch is not asked. It stands in for workers that tag nothing.
        throughput = reported_rate(instances)
        if throughput is None:
            throughput = self._throughput.last if quiet else self._throughput.read()
        img_s, boots = self._learn(now, instances, throughput)
        try:
            jobs = job_share(
                depth.job_load,
                self.config.job_fleet_max,
                per_instance(self.config.policy, self.config.latency_target_s, img_s.value),
            )
        except PolicyError as error:
            self._failed("policy", f"bad metrics ({error}); fleet stays as it is")
            return
        if quiet or self._arrivals is None:
            arrivals = Arrivals(0.0, 0.0, measured=quiet)
        else:
            arrivals = self._arrivals.read()
        live = [i for i in instances if serving(i)]
        obs = Observation(
            visible=depth.visible + jobs,
            in_flight=depth.in_flight,
            capacity=capacity(instances),
            throughput_img_s=img_s.value,
            window_peak=self._window.peak(now),
            arrival_rate_img_s=arrivals.rate_img_s,
            steady_rate_img_s=arrivals.steady_img_s,
            ready_in_s=tuple(self._planning.ready_in_s(i, now) for i in live),
            paid_left_s=tuple(paid_left_s(i, now, self.config.pool.min_billed_s) for i in live),
            warm=sum(1 for i in instances if i.state == "stopped"),
            idle_s=self._idle.observe(now, depth.visible, arrivals.last_at),
        )
        try:
            decision = self._policy(obs)
        except PolicyError as error:
            self._failed("policy", f"bad metrics ({error}); fleet stays as it is")
            return
        self._window.observe(now, decision.raw)
        actions = self._plan(decision.desired, instances, now)
        with self._lock:
            self._depth, self._img_s = depth, img_s.value
        line = (
            f"policy={self.config.policy} visible={depth.visible} in_flight={obs.in_flight} "
            f"jobs={depth.job_load}(counted {jobs}) "
            f"capacity={obs.capacity} warm={obs.warm} arrivals={obs.arrival_rate_img_s:g}/s "
            f"steady={obs.steady_rate_img_s:g}/s idle={obs.idle_s:.1f}s "
            f"throughput={img_s.label('')} "
            f"boot={boots['new'].label()}/{boots['start'].label()} peak={obs.window_peak} "
            f"raw={decision.raw} desired={decision.desired} {actions.describe()} "
            f"rule={decision.code} reason={decision.reason!r}"
        )
        record = decision_record(now, self.config.policy, obs, decision, actions)
        record["estimates"] = self._inputs
        try:
            launched = self._fleet.apply(actions)
        except _AWS_ERRORS as error:
            self._failed("apply", f"{line} FAILED ({describe(error)})", record)
            return
        noticed = [i.instance_id for i in instances if i.notice and i.state in CAPACITY_STATES]
        if noticed:  # gone for the policy: terminated, and replaced in this same plan
            line += f" notice={noticed}"
            record["notice"] = noticed
        if launched:  # the market and type that launched, and any refused before it
            line += f" launch={'; '.join(launched)!r}"
            record["launched"] = launched
        self._record((decision.desired, bool(actions)), {**record, "text": line}, bool(actions))
        if actions:
            # Local instances change state at once: their workers (and /status) follow this tick.
            try:
                self._follow(self._fleet.instances())
            except _AWS_ERRORS as error:
                log.warning(
                    "fleet unreadable after acting (%s); runner follows next tick", describe(error)
                )

    def _learn(self, now: float, instances: list[Instance], gauge) -> tuple[Estimate, dict]:
        """Measure the boots that ended, remember the throughput, and plan with both."""
        model, kind = self.config.model, self.config.instance_type
        save_now = False
        for instance_type, boot_kind, boot_s in self._estimates.observe(instances):
            log.info("boot measured: %s %s ready in %.1fs", instance_type, boot_kind, boot_s)
            save_now = True
        if gauge.measured:
            # The first rate of a model is saved at once, like a new boot: a burst of seconds
            # may be all the scaler sees of it before the fleet stops.
            save_now |= model not in self._estimates.throughput
            self._rate_unsaved |= self._estimates.remember_throughput(model, gauge.img_s)
        img_s = self._estimates.img_s(model, gauge)
        boots = {k: self._estimates.boot(k, kind) for k in ("new", "start")}
        # A changed rate is saved at most once a minute (S3 PUTs), but saved.
        due = self._rate_unsaved and now - self._saved_at >= SAVE_EVERY_S
        if self._store and (save_now or due):
            self._saved_at, self._rate_unsaved = now, False
            self._store.save(self._estimates.to_json())
        planned = (boots["new"].value, boots["start"].value)
        if planned != (self._planning.boot_new_s, self._planning.boot_start_s):
            self._planning = dataclasses.replace(
                self.config, boot_new_s=planned[0], boot_start_s=planned[1]
            )
            self._policy = make_policy(self.config.policy, PolicyConfig.of(self._planning))
        inputs = {
            "boot_new_s": boots["new"].as_status(),
            "boot_start_s": boots["start"].as_status(),
            "throughput_img_s": img_s.as_status(),
            "instance_type": kind or "(launch template's)",
        }
        with self._lock:
            self._inputs = inputs
        return img_s, boots

    def _follow(self, instances: list[Instance]) -> None:
        with self._lock:
            self._fleet_counts = self._counts(instances)
            self._workers = workers(instances)
            self._ledger.observe(instances, self._clock())
        if self._runner is not None:
            self._runner.reconcile([view(i) for i in instances])

    @staticmethod
    def _counts(instances: list[Instance]) -> dict[str, int]:
        # "starting" is part of "running": instances whose worker still loads the model.
        return {**count_states(instances), "starting": starting(instances)}

    def _record(self, key: tuple, record: dict, acted: bool, level: int = logging.INFO) -> None:
        # Log a tick that acted, failed or changed its mind; identical quiet ticks only at debug.
        if not acted and key == self._last_key:
            log.debug("decision %s", record["text"])
            return
        self._last_key = key
        log.log(level, "decision %s", record["text"])
        self._remember(record)

    def _remember(self, record: dict) -> None:
        with self._lock:
            self._decisions.append(record)

    def _failed(self, what: str, line: str, record: dict | None = None) -> None:
        failed = record or decision_record(self._clock(), self.config.policy, None, None, None)
        failed = {**failed, "ok": False, "code": f"{what}-error", "reason": line, "text": line}
        self._record((f"{what}-error",), failed, acted=True, level=logging.WARNING)

    def status(self) -> dict:
        with self._lock:
            return {
                "queue": {
                    "visible": self._depth.visible,
                    "in_flight": self._depth.in_flight,
                    "dlq": self._depth.dlq,
                    "jobs_visible": self._depth.job_visible,
                    "jobs_in_flight": self._depth.job_in_flight,
                },
                "fleet": dict(self._fleet_counts),
                "workers": list(self._workers),  # which model versions each worker serves
                "policy": self.config.policy,
                "limits": {"min": self.config.limits.min, "max": self.config.limits.max},
                "decisions": list(self._decisions),
                "throughput_img_s": self._img_s,
                "cost": self._cost(),
                # What the policy plans with, and whether each is measured or a default.
                "estimates": dict(self._inputs),
            }

    def _cost(self) -> dict:
        own = self._requests.by_class() if self._requests is not None else {}
        return summary(
            compute=self._ledger.compute_usd(),
            requests=add(own, self._ledger.worker_requests()),
            images=self._ledger.images(),
            fixed_s=self._clock() - self._started_at,
            prices=self._prices,
        )


def build_scaler(
    settings: Settings,
    *,
    ec2,
    sqs,
    cloudwatch,
    s3=None,
    runner: Runner | None = None,
    requests: RequestCounter | None = None,
) -> Scaler:
    """The scaler for one deployment, from its settings and its AWS clients (and the counter of
    what they send, for the cost figures; with s3, what it measures is kept in the output bucket
    across restarts)."""
    store = EstimateStore(s3, settings.output_bucket, keys.SCALER_ESTIMATES) if s3 else None
    return Scaler(
        ScalerConfig.from_settings(settings),
        fleet=Fleet.from_settings(ec2, settings),
        queue=QueueGauge(
            sqs, settings.request_queue, settings.dead_letter_queue, settings.job_queue
        ),
        throughput=ThroughputGauge(
            cloudwatch, settings.fleet_name, settings.default_throughput_img_s
        ),
        arrivals=ArrivalGauge(cloudwatch, settings.fleet_name, settings.arrival_window_s),
        runner=runner,
        prices=settings.prices,
        requests=requests,
        store=store,
    )
