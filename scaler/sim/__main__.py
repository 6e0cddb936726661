"""`python -m scaler.sim`: replay arrival traces through each policy and compare.

The standard traces, or your own (--trace FILE: a CSV of arrival times in seconds under the header
`t`), on your instance type (--boot-new-s, --boot-start-s, --throughput, --instance-type) and
tick (--tick-s), in each market (--market; Spot interruptions at --spot-interruptions-per-hour).
Cost per 1,000 images is compute under EC2's billing plus requests (runtime.prices); the web and
scaler host's cost over the run is shown apart. Deterministic: the traces and interruptions come
from seeded RNGs and the model has no other randomness.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace

from runtime.cli import OneLineParser, non_negative, positive
from runtime.prices import INSTANCE_HOURLY, MARKETS, PRICES_AS_OF
from runtime.settings import DEFAULT_POLICY, POLICIES, Settings
from scaler.plan import PoolRules
from scaler.policies import Limits
from scaler.sim.model import BILLINGS, Result, SimConfig, simulate
from scaler.sim.traces import TraceError, from_csv, standard_traces


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    # Policy defaults are the deployment's defaults (never the environment: runs must repeat).
    d = Settings()
    sim = SimConfig()
    parser = OneLineParser(prog="python -m scaler.sim", description=__doc__)
    add = parser.add_argument
    add("--json", action="store_true", help="one JSON object per (trace, policy), not a table")
    add("--seed", type=int, default=7, help="RNG seed of the standard random traces")
    add("--policy", action="append", choices=POLICIES, help="only this policy (repeatable)")
    add("--trace", action="append", metavar="FILE", help="replay this CSV instead (repeatable)")
    add("--only", action="append", metavar="NAME", help="standard traces starting with NAME")
    add("--boot-new-s", type=non_negative(), default=sim.boot_new_s, help="new instance boot")
    add("--boot-start-s", type=non_negative(), default=sim.boot_start_s, help="boot from stopped")
    add("--throughput", type=positive(), default=sim.throughput_img_s, help="img/s per instance")
    add("--tick-s", type=positive(), default=d.scaler_tick_s, help="scaler tick")
    add("--fleet-min", type=int, default=d.fleet_min)
    add("--fleet-max", type=int, default=d.fleet_max)
    add("--idle-delay-s", type=non_negative(), default=d.idle_delay_s)
    add("--quiet-period-s", type=non_negative(), default=d.quiet_period_s)
    add("--latency-target-s", type=positive(), default=d.latency_target_s)
    add("--warm-pool-max", type=int, default=d.warm_pool_max)
    add(
        "--no-spares",
        action="store_true",
        help="never fill the warm pool ahead of need (WARM_POOL_SPARES=false)",
    )
    add("--market", action="append", choices=MARKETS, help="only this market (repeatable)")
    add(
        "--billing",
        action="append",
        choices=BILLINGS,
        help="only this billing model (repeatable): min60 is EC2's, per second with a 60 s"
        " minimum per start; the policy is told which",
    )
    add("--instance-type", choices=sorted(INSTANCE_HOURLY), default=sim.instance_type)
    add(
        "--spot-interruptions-per-hour",
        type=non_negative(),
        default=sim.interruptions_per_hour,
        help="how often a Spot instance is interrupted (each, per hour running)",
    )
    args = parser.parse_args(argv)
    if not 0 <= args.fleet_min <= args.fleet_max or args.fleet_max < 1:
        parser.error("need 0 <= --fleet-min <= --fleet-max and --fleet-max >= 1")
    if args.warm_pool_max < 0:
        parser.error("--warm-pool-max must be >= 0")
    return args


def config_from(args: argparse.Namespace) -> SimConfig:
    base, defaults = SimConfig(), Settings()
    # A different throughput scales the whole batch time, overhead included.
    factor = base.throughput_img_s / args.throughput
    return replace(
        base,
        boot_new_s=args.boot_new_s,
        boot_start_s=args.boot_start_s,
        service_s=base.service_s * factor,
        batch_overhead_s=base.batch_overhead_s * factor,
        tick_s=args.tick_s,
        limits=Limits(args.fleet_min, args.fleet_max),
        latency_target_s=args.latency_target_s,
        quiet_period_s=args.quiet_period_s,
        idle_delay_s=args.idle_delay_s,
        pool=PoolRules(
            args.warm_pool_max,
            defaults.stopped_max_age_s,
            spares=defaults.warm_pool_spares and not args.no_spares,
        ),
        instance_type=args.instance_type,
        interruptions_per_hour=args.spot_interruptions_per_hour,
    )


COLUMNS = (
    f"{'trace':<20} {'policy':<7} {'market':<9} {'billing':<10} {'requests':>8} "
    f"{'p50_s':>7} {'p95_s':>7} {'peak':>5} {'starts':>6} {'inst_s':>7} {'inst_s_min60':>12} "
    f"{'$/1000':>8} {'p95 vs seed':>11} {'inst_s':>7} {'min60':>6} {'$/1000':>7}"
)


def table(results: list[Result]) -> str:
    seed = {(r.trace, r.market, r.billing): r for r in results if r.policy == "seed"}
    lines = [COLUMNS, "-" * len(COLUMNS)]
    for r in results:
        base = seed.get((r.trace, r.market, r.billing))
        versus = ("", "", "", "")
        if base is not None and r.policy != "seed":
            versus = (
                _change(r.p95_s, base.p95_s),
                _change(r.instance_seconds, base.instance_seconds),
                _change(r.instance_seconds_min60, base.instance_seconds_min60),
                _change(r.cost_per_1000, base.cost_per_1000),
            )
        lines.append(
            f"{r.trace:<20} {r.policy:<7} {r.market:<9} {r.billing:<10} {r.requests:>8} "
            f"{r.p50_s:>7.2f} {r.p95_s:>7.2f} {r.peak_instances:>5} {r.starts:>6} "
            f"{r.instance_seconds:>7.0f} {r.instance_seconds_min60:>12.0f} "
            f"{r.cost_per_1000:>8.4f} {versus[0]:>11} "
            f"{versus[1]:>7} {versus[2]:>6} {versus[3]:>7}"
        )
    return "\n".join(lines)


def _change(value: float, base: float) -> str:
    return f"{(value - base) / base:+.0%}" if base else "n/a"


def describe(config: SimConfig) -> str:
    return (
        f"model: boot {config.boot_new_s:g}s new / {config.boot_start_s:g}s from stopped, "
        f"{config.throughput_img_s:g} img/s per instance (batches of {config.batch_max}), "
        f"tick {config.tick_s:g}s, fleet {config.limits.min}-{config.limits.max}, "
        f"warm pool {config.pool.warm_pool_max}, idle delay {config.idle_delay_s:g}s, "
        f"quiet period {config.quiet_period_s:g}s, latency target {config.latency_target_s:g}s;"
        f" priced as {config.instance_type} (runtime.prices, {PRICES_AS_OF}), Spot interruptions"
        f" {config.interruptions_per_hour:g}/h; $/1000 is compute under the row's billing plus"
        f" requests; the fixed host costs ${config.prices.fixed_hourly:.4f}/h apart"
        " (fixed_usd in --json)"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = config_from(args)
    if args.trace:
        try:
            traces = [from_csv(path) for path in args.trace]
        except TraceError as error:
            print(f"python -m scaler.sim: error: {error}", file=sys.stderr)
            return 2
    else:
        traces = [
            t
            for t in standard_traces(args.seed)
            if not args.only or t.name.startswith(tuple(args.only))
        ]
    policies = args.policy or list(POLICIES)
    markets = args.market or list(MARKETS)
    billings = args.billing or list(BILLINGS)
    results = [
        simulate(trace, policy, replace(config, market=market, billing=billing))
        for trace in traces
        for billing in billings
        for market in markets
        for policy in policies
    ]
    if args.json:
        for result in results:
            row = result.as_dict()
            if result.policy == DEFAULT_POLICY:
                row["default"] = True
            print(json.dumps(row))
    else:
        print(table(results))
        print(f"\n{describe(config)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
