"""What the fleet has cost so far, from the instance listings the scaler already makes each tick.

A run (an instance's launch or start from stopped, until it stops) is billed from its start to
the last tick that saw it pending or running, at its type's price, with EC2's 60 s minimum
(runtime.costs). Workers' images and requests come from their usage tags (runtime.usage): the
latest value of each worker run. Finished runs are folded into totals, so memory stays flat.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from runtime.costs import Run, compute_usd
from runtime.prices import Prices
from runtime.requests import add
from runtime.usage import Usage, parse_usage
from scaler.plan import Instance

BILLED_STATES = ("pending", "running")


class Ledger:
    def __init__(self, prices: Prices):
        self._prices = prices
        # (id, start): (type, market, last tick that saw it billed)
        self._open: dict[tuple[str, float], tuple[str, str, float]] = {}
        self._usage: dict[tuple[str, str], Usage] = {}  # (id, worker run): its latest usage
        self._settled_usd = 0.0
        self._settled_images = 0
        self._settled_requests: Counter[str] = Counter()

    def observe(self, instances: Iterable[Instance], now: float) -> None:
        """One listing of the fleet, every instance that is not terminated."""
        runs, listed = {}, set()
        for i in instances:
            listed.add(i.instance_id)
            if i.state in BILLED_STATES:
                key = (i.instance_id, i.launched_at)
                market = "spot" if i.spot else "on-demand"
                runs[key] = (i.instance_type or self._prices.worker_type, market, now)
            usage = parse_usage(i.usage) if i.usage else None
            if usage is not None:
                self._usage[(i.instance_id, usage.run)] = usage
        # A run no longer pending or running has ended at the last tick that saw it.
        ended = [self._run(key, run) for key, run in self._open.items() if key not in runs]
        self._settled_usd += compute_usd(ended, self._prices)
        self._open = runs
        for key in [k for k in self._usage if k[0] not in listed]:  # terminated: its tag is gone
            gone = self._usage.pop(key)
            self._settled_images += gone.images
            self._settled_requests.update(gone.requests)

    @staticmethod
    def _run(key: tuple[str, float], run: tuple[str, str, float]) -> Run:
        return Run(run[0], run[1], run[2] - key[1])

    def compute_usd(self) -> float:
        open_runs = [self._run(key, run) for key, run in self._open.items()]
        return self._settled_usd + compute_usd(open_runs, self._prices)

    def images(self) -> int:
        return self._settled_images + sum(u.images for u in self._usage.values())

    def worker_requests(self) -> dict[str, int]:
        return add(self._settled_requests, *(u.requests for u in self._usage.values()))
