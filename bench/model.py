"""The physical limit: the bare model on prepared 224x224 tensors, nothing else.

Run in its own process (`python -m bench.model`), pinned with taskset by the harness, so its
thread count and cores are exactly those of the worker it is compared with. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class ModelTiming:
    threads: int
    cpus: tuple[int, ...]
    img_s: dict[int, float]  # batch size -> median images per second
    bs1_ms: float  # median latency of one batch-1 call

    @property
    def best_batch(self) -> int:
        return max(self.img_s, key=self.img_s.get)

    @property
    def best_img_s(self) -> float:
        return self.img_s[self.best_batch]


def measure(
    cpus: tuple[int, ...], threads: int, batches: tuple[int, ...], reps: int, min_s: float
) -> ModelTiming:
    """Time the model in a fresh process on `cpus` with `threads` intra-op threads."""
    args = [
        *taskset(cpus),
        sys.executable,
        "-m",
        "bench.model",
        f"--threads={threads}",
        f"--batches={','.join(map(str, batches))}",
        f"--reps={reps}",
        f"--min-s={min_s}",
    ]
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"bench.model failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    return ModelTiming(
        threads=threads,
        cpus=cpus,
        img_s={int(b): rate for b, rate in out["img_s"].items()},
        bs1_ms=out["bs1_ms"],
    )


def taskset(cpus: tuple[int, ...]) -> list[str]:
    return ["taskset", "-c", ",".join(map(str, cpus))]


def prepared_tensors(classifier) -> list:
    """The real photos, decoded and preprocessed exactly as the worker does it."""
    from worker.imaging import decode

    photos = sorted((ROOT / "images").glob("*.jpg"))
    return [classifier.prepare(decode(path.read_bytes())) for path in photos]


def time_batches(classifier, tensors, batches, reps: int, min_s: float) -> dict:
    for size in batches:  # first calls pay for oneDNN's kernel selection: not the model's rate
        for _ in range(2):
            classifier.classify(_batch(tensors, size))
    rates: dict[int, list[float]] = {size: [] for size in batches}
    bs1: list[float] = []
    # Repetitions outermost: a noisy moment on a shared machine hurts one rep of each size,
    # not every rep of one size.
    for _ in range(reps):
        for size in batches:
            batch = _batch(tensors, size)
            calls, started = 0, time.perf_counter()
            while True:
                call = time.perf_counter()
                classifier.classify(batch)
                now = time.perf_counter()
                if size == 1:
                    bs1.append(now - call)
                calls += 1
                if now - started >= min_s and calls >= 2:
                    break
            rates[size].append(calls * size / (now - started))
    if not bs1:
        for _ in range(5):
            call = time.perf_counter()
            classifier.classify(_batch(tensors, 1))
            bs1.append(time.perf_counter() - call)
    return {
        "img_s": {size: statistics.median(r) for size, r in rates.items()},
        "bs1_ms": statistics.median(bs1) * 1e3,
    }


def _batch(tensors, size: int) -> list:
    return [tensors[i % len(tensors)] for i in range(size)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.model", description=__doc__)
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batches", default="1,2,4,8")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--min-s", type=float, default=0.5, help="least seconds per timing")
    args = parser.parse_args(argv)

    from worker.models import load_classifier

    classifier = load_classifier(args.model, threads=args.threads)
    batches = tuple(int(b) for b in args.batches.split(","))
    result = time_batches(classifier, prepared_tensors(classifier), batches, args.reps, args.min_s)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
