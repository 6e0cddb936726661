"""`python -m scaler.sim`: replay the standard traces through each policy and compare.

Deterministic: the traces come from one seeded RNG and the model has no other randomness.
"""

from __future__ import annotations

import argparse
import json
import sys

from runtime.settings import Settings
from scaler.plan import PoolRules
from scaler.policies import POLICIES, Limits
from scaler.sim.model import Result, SimConfig, simulate
from scaler.sim.traces import standard_traces


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    # Policy defaults are the deployment's defaults (never the environment: runs must repeat).
    d = Settings()
    sim = SimConfig()
    parser = argparse.ArgumentParser(prog="python -m scaler.sim", description=__doc__)
    add = parser.add_argument
    add(
        "--json", action="store_true", help="one JSON object per (trace, policy) instead of a table"
    )
    add("--seed", type=int, default=7, help="RNG seed of the Poisson traces")
    add("--policy", action="append", choices=POLICIES, help="only this policy (repeatable)")
    add("--trace", action="append", help="only traces whose name starts with this (repeatable)")
    add("--boot-new-s", type=float, default=sim.boot_new_s, help="boot time of a new instance")
    add("--boot-start-s", type=float, default=sim.boot_start_s, help="boot time from stopped")
    add("--service-s", type=float, default=sim.service_s, help="per-image time in a batch")
    add("--batch-overhead-s", type=float, default=sim.batch_overhead_s, help="per-batch time")
    add("--tick-s", type=float, default=d.scaler_tick_s, help="scaler tick")
    add("--fleet-min", type=int, default=d.fleet_min)
    add("--fleet-max", type=int, default=d.fleet_max)
    add("--quiet-period-s", type=float, default=d.quiet_period_s)
    add("--latency-target-s", type=float, default=d.latency_target_s)
    add("--warm-pool-max", type=int, default=d.warm_pool_max)
    return parser.parse_args(argv)


def config_from(args: argparse.Namespace) -> SimConfig:
    return SimConfig(
        boot_new_s=args.boot_new_s,
        boot_start_s=args.boot_start_s,
        service_s=args.service_s,
        batch_overhead_s=args.batch_overhead_s,
        tick_s=args.tick_s,
        limits=Limits(args.fleet_min, args.fleet_max),
        latency_target_s=args.latency_target_s,
        quiet_period_s=args.quiet_period_s,
        pool=PoolRules(args.warm_pool_max, Settings().stopped_max_age_s),
    )


def table(results: list[Result]) -> str:
    header = (
        f"{'trace':<20} {'policy':<7} {'requests':>8} {'completion_s':>12} {'p50_s':>7} "
        f"{'p95_s':>7} {'peak':>5} {'instance_s':>10} {'p95 vs seed':>11} {'inst_s vs seed':>14}"
    )
    seed = {r.trace: r for r in results if r.policy == "seed"}
    lines = [header, "-" * len(header)]
    for r in results:
        base = seed.get(r.trace)
        if base is not None and r.policy != "seed":
            p95 = f"{_change(r.p95_s, base.p95_s):>11}"
            cost = f"{_change(r.instance_seconds, base.instance_seconds):>14}"
        else:
            p95, cost = f"{'':>11}", f"{'':>14}"
        lines.append(
            f"{r.trace:<20} {r.policy:<7} {r.requests:>8} {r.completion_s:>12.1f} "
            f"{r.p50_s:>7.2f} {r.p95_s:>7.2f} {r.peak_instances:>5} "
            f"{r.instance_seconds:>10.0f} {p95} {cost}"
        )
    return "\n".join(lines)


def _change(value: float, base: float) -> str:
    return f"{(value - base) / base:+.0%}" if base else "n/a"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = config_from(args)
    traces = [
        t
        for t in standard_traces(args.seed)
        if not args.trace or t.name.startswith(tuple(args.trace))
    ]
    policies = args.policy or list(POLICIES)
    results = [simulate(trace, policy, config) for trace in traces for policy in policies]
    if args.json:
        for result in results:
            print(json.dumps(result.as_dict()))
    else:
        print(table(results))
        print(
            f"\nmodel: boot {config.boot_new_s:g}s new / {config.boot_start_s:g}s from stopped, "
            f"{config.throughput_img_s:g} img/s per instance (batches of {config.batch_max}), "
            f"tick {config.tick_s:g}s, fleet {config.limits.min}-{config.limits.max}, "
            f"warm pool {config.pool.warm_pool_max}, quiet period {config.quiet_period_s:g}s, "
            f"latency target {config.latency_target_s:g}s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
