"""Arrival traces: request arrival times in seconds from the start, each request one image."""

from __future__ import annotations

import csv
import math
import random
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Trace:
    name: str
    arrivals: tuple[float, ...]  # sorted


def burst(n: int, at_s: float = 0.0) -> Trace:
    """n requests at once, as a load generator that fires them all concurrently does."""
    return Trace(f"burst-{n}", (at_s,) * n)


def bursts(n: int, count: int, every_s: float) -> Trace:
    """count bursts of n requests, every_s apart: a load generator run again and again."""
    arrivals = tuple(k * every_s for k in range(count) for _ in range(n))
    return Trace(f"burst-{n}x{count}/{every_s:g}s", arrivals)


def _poisson_times(rng: random.Random, rate: float, start_s: float, end_s: float) -> list[float]:
    times, t = [], start_s
    while True:
        t += rng.expovariate(rate)
        if t >= end_s:
            return times
        times.append(t)


def poisson(rate: float, duration_s: float, rng: random.Random) -> Trace:
    return Trace(f"poisson-{rate:g}/s", tuple(_poisson_times(rng, rate, 0.0, duration_s)))


def step(phases: list[tuple[float, float]], rng: random.Random) -> Trace:
    """Poisson arrivals whose rate changes: phases of (rate per second, duration in seconds)."""
    times, start = [], 0.0
    for rate, duration in phases:
        times += _poisson_times(rng, rate, start, start + duration)
        start += duration
    label = "-".join(f"{rate:g}" for rate, _ in phases)
    return Trace(f"step-{label}/s", tuple(times))


def ramp(peak_rate: float, up_s: float, down_s: float, rng: random.Random) -> Trace:
    """Poisson arrivals whose rate climbs linearly from 0 to peak_rate, then falls back to 0."""

    def rate(t: float) -> float:
        return peak_rate * (t / up_s if t < up_s else max(0.0, 1 - (t - up_s) / down_s))

    # Thinning: draw at the peak rate, keep each arrival with probability rate(t) / peak.
    candidates = _poisson_times(rng, peak_rate, 0.0, up_s + down_s)
    times = [t for t in candidates if rng.random() * peak_rate < rate(t)]
    return Trace(f"ramp-0-{peak_rate:g}-0/s", tuple(times))


def small_bursts(n: int, mean_gap_s: float, duration_s: float, rng: random.Random) -> Trace:
    """Bursts of n requests at Poisson-spaced moments: many users, each uploading a few images."""
    starts = _poisson_times(rng, 1 / mean_gap_s, 0.0, duration_s)
    return Trace(f"bursts-{n}/{mean_gap_s:g}s", tuple(t for t in starts for _ in range(n)))


def grader(n: int, gap_s: float) -> Trace:
    """The course grader: n images at once, idle, then the same n again."""
    return Trace(f"grader-{n}x2/{gap_s:g}s", (0.0,) * n + (gap_s,) * n)


def sparse(mean_gap_s: float, duration_s: float, rng: random.Random) -> Trace:
    """Interactive use: one image now and then, a couple of minutes apart on average."""
    return Trace(
        f"sparse-1/{mean_gap_s:g}s", tuple(_poisson_times(rng, 1 / mean_gap_s, 0.0, duration_s))
    )


class TraceError(ValueError):
    """A trace file that is not a CSV of arrival times."""


def from_csv(path: str) -> Trace:
    """Arrival times in seconds, one per line under the header `t`; sorted here."""
    try:
        with Path(path).open(newline="") as handle:
            rows = list(csv.reader(handle))
    except OSError as error:
        raise TraceError(f"{path}: {error.strerror or error}") from None
    except (UnicodeDecodeError, csv.Error) as error:
        raise TraceError(f"{path}: not a text CSV ({error})") from None
    if not rows or [c.strip() for c in rows[0]] != ["t"]:
        raise TraceError(f"{path}: the first line must be the header `t`")
    times = []
    for number, row in enumerate(rows[1:], start=2):
        if not row or not "".join(row).strip():
            continue
        try:
            (cell,) = row
            t = float(cell)
        except ValueError:
            raise TraceError(f"{path}:{number}: expected one number, got {row!r}") from None
        if not (math.isfinite(t) and t >= 0):
            raise TraceError(f"{path}:{number}: arrival time must be a finite number >= 0")
        times.append(t)
    if not times:
        raise TraceError(f"{path}: no arrival times")
    return Trace(Path(path).stem, tuple(sorted(times)))


def standard_traces(seed: int = 7) -> list[Trace]:
    """The traces the simulator replays by default; one seeded RNG makes them reproducible."""
    rng = random.Random(seed)
    return [
        burst(100),  # the course workload: 100 images uploaded at once
        burst(1000),
        # Re-runs: a gap within the quiet period finds the target policy's fleet still up.
        bursts(100, 3, every_s=60),
        bursts(100, 3, every_s=120),
        poisson(0.5, 600, rng),
        poisson(2, 600, rng),
        poisson(8, 600, rng),
        step([(1, 200), (20, 200), (1, 200)], rng),
        ramp(10, up_s=300, down_s=300, rng=rng),
        small_bursts(5, mean_gap_s=20, duration_s=600, rng=rng),
        grader(100, gap_s=300),
        sparse(mean_gap_s=120, duration_s=1800, rng=rng),
    ]
