"""Arrival traces: request arrival times in seconds from the start, each request one image."""

from __future__ import annotations

import random
from dataclasses import dataclass


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
    ]
