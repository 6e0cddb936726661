"""`python -m bench`: the bare model, one pinned worker, and the whole stack, in one run.

Prints a table, then one line of JSON. `--quick` runs every step with tiny sizes (a smoke test
of the harness, not a measurement).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench import model, report, service, worker
from bench.machine import describe
from bench.phones import DEFAULT_CACHE, PhonePhotos
from bench.photos import Photos
from embedded.stack import StackError
from runtime.settings import Settings


@dataclass(frozen=True)
class Plan:
    batches: tuple[int, ...]
    reps: int
    min_s: float
    drain: int
    phone_drain: int  # phone photos per worker drain
    phone_distinct: int  # distinct phone photos made (once, then cached); uploads cycle over them
    warmup: int
    sizes: service.Sizes
    overrides: dict  # settings for the measured processes


FULL = Plan(
    batches=(1, 2, 4, 8),
    reps=5,
    min_s=0.5,
    drain=400,
    phone_drain=60,
    phone_distinct=30,
    warmup=20,
    sizes=service.Sizes(
        warmup=20,
        seq=50,
        cache=20,
        burst=100,
        e2e=400,
        concurrency=50,
        phone_e2e=60,
        phone_concurrency=20,
        probes=30,
        job=1000,
    ),
    overrides={},
)
# Tiny sizes; a 1 s long poll lets the workers stop at once when the harness is done.
QUICK = Plan(
    batches=(1, 2),
    reps=1,
    min_s=0.05,
    drain=6,
    phone_drain=3,
    phone_distinct=3,
    warmup=2,
    sizes=service.Sizes(
        warmup=2,
        seq=3,
        cache=2,
        burst=4,
        e2e=6,
        concurrency=3,
        phone_e2e=3,
        phone_concurrency=3,
        probes=2,
        job=20,
    ),
    overrides={"RECEIVE_WAIT_S": "1"},
)
E2E_WORKERS = 2


def step(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def run(plan: Plan, log_dir: Path, settings: Settings, phone_cache: Path) -> dict:
    started = time.perf_counter()
    machine = describe()
    cpus = tuple(sorted(os.sched_getaffinity(0)))
    # The worker takes up to BATCH_MAX messages at once: its batch belongs among the candidates.
    batches = tuple(sorted({*plan.batches, settings.batch_max}))
    step(f"phone photos: {plan.phone_distinct} distinct 12 MP JPEGs in {phone_cache}")
    phones = PhonePhotos(plan.phone_distinct, phone_cache)
    step(f"bare model, 1 thread on cpu {cpus[-1]}, batches {batches}")
    one = model.measure((cpus[-1],), 1, batches, plan.reps, plan.min_s, phone_cache)
    step(f"bare model on every runtime installed besides {one.runtime}, 1 thread")
    runtimes = model.by_runtime((cpus[-1],), batches, plan.reps, plan.min_s, one)
    step(f"bare model, {E2E_WORKERS} threads on cpus {cpus}")
    two = model.measure(cpus, E2E_WORKERS, batches, plan.reps, plan.min_s)
    step(f"bare model, {E2E_WORKERS} processes x 1 thread side by side")
    pair = model.measure_side_by_side(
        [(cpu,) for cpu in cpus[-E2E_WORKERS:]], 1, batches, plan.reps, plan.min_s
    )
    photos = Photos()
    step(f"one worker on cpu {cpus[-1]} (moto on cpu {cpus[0]}): cold start, {plan.drain} queued")
    pinned = worker.run(
        photos,
        phones,
        plan.drain,
        plan.phone_drain,
        plan.warmup,
        log_dir / "worker",
        plan.overrides,
    )
    step(f"embedded stack, {E2E_WORKERS} workers: sequential, cache, burst, end to end")
    stack = service.run(
        photos, phones, plan.sizes, E2E_WORKERS, log_dir / "service", plan.overrides
    )
    result = report.summarise(machine, one, two, pair, pinned, stack, runtimes)
    result["bench_s"] = round(time.perf_counter() - started, 1)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    parser.add_argument("--json-only", action="store_true", help="print only the JSON line")
    parser.add_argument("--log-dir", default=".run/bench", help="logs of every process started")
    parser.add_argument(
        "--phone-cache",
        default=str(DEFAULT_CACHE),
        help="where the 12 MP phone photos are made once and kept (about 100 MB)",
    )
    args = parser.parse_args(argv)
    # The measured processes read the same environment; a bad setting fails here, not mid-run.
    settings = Settings.from_env()
    plan = QUICK if args.quick else FULL
    try:
        result = run(plan, Path(args.log_dir), settings, Path(args.phone_cache))
    except (StackError, RuntimeError) as error:
        print(f"bench: {error}", file=sys.stderr)
        return 1
    result["quick"] = args.quick
    if not args.json_only:
        print(report.table(result))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
