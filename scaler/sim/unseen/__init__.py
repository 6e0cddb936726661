"""Traces the policies were not designed on, for `python -m scaler.sim --trace`.

Four shapes, unlike the standard traces: a rate that swings as a sine, arrivals whose gaps are
Pareto-distributed (long-tailed: mostly seconds apart, now and then minutes), bursts of random
size at random moments, and a slow trickle with one spike. `python -m scaler.sim.unseen DIR
--seed N` writes a draw of them as CSV files (the same seed, the same files), so no trace is
kept in the tree: the goal figures (docs/scaling.md, tests/test_sim.py) are measured on the
draws of seeds 1, 2 and 3.
"""

from __future__ import annotations

import math
import random

from scaler.sim.traces import Trace, _poisson_times

SHAPES = ("sine", "pareto", "randbursts", "trickle_spike")


def sine(rng: random.Random, mean_rate: float = 3.3, period_s: float = 375.0) -> Trace:
    """Poisson arrivals for 15 minutes at mean_rate * (1 + sin(2 pi t / period_s))."""
    peak, duration = 2 * mean_rate, 900.0

    def rate(t: float) -> float:
        return mean_rate * (1 + math.sin(2 * math.pi * t / period_s))

    # Thinning: draw at the peak rate, keep each with probability rate(t) / peak.
    times = [t for t in _poisson_times(rng, peak, 0.0, duration) if rng.random() * peak < rate(t)]
    return Trace("sine", tuple(times))


def pareto(rng: random.Random, least_gap_s: float = 3.0, alpha: float = 1.5) -> Trace:
    """Half an hour of requests whose gaps are Pareto: at least least_gap_s, long-tailed."""
    times, t = [], 0.0
    while (t := t + least_gap_s * rng.paretovariate(alpha)) < 1800.0:
        times.append(t)
    return Trace("pareto", tuple(times))


def randbursts(rng: random.Random, mean_gap_s: float = 90.0, most: int = 200) -> Trace:
    """Half an hour of bursts of 1 to `most` requests at once, mean_gap_s apart on average."""
    starts = _poisson_times(rng, 1 / mean_gap_s, 0.0, 1800.0)
    return Trace("randbursts", tuple(t for t in starts for _ in range(rng.randint(1, most))))


def trickle_spike(rng: random.Random, rate: float = 0.2, spike: int = 500) -> Trace:
    """Twenty minutes of a Poisson trickle at `rate`, with `spike` requests at once at 10 min."""
    times = sorted([*_poisson_times(rng, rate, 0.0, 1200.0), *[600.0] * spike])
    return Trace("trickle_spike", tuple(times))


def unseen_traces(seed: int) -> list[Trace]:
    """The four shapes, each from its own RNG seeded by `seed`: one shape's draw never moves
    another's."""
    makers = (sine, pareto, randbursts, trickle_spike)
    return [make(random.Random(f"{seed}/{make.__name__}")) for make in makers]
