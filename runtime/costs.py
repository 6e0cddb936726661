"""Money from what was used: instance runs under EC2's billing and counted requests.

EC2 bills Linux instances per second with a 60 s minimum each time one starts (a launch, or a
start from stopped): a run of 20 s is paid as 60 s. Requests are priced by class
(runtime.requests). The fixed host (web tier and scaler) runs whatever the traffic and is kept
apart, so `per_1000_images` is what answering costs: (compute + requests) per 1,000 images.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from runtime.prices import CURRENCY, INSTANCE_VCPUS, PRICES_AS_OF, Prices
from runtime.requests import add as add_counts

MINIMUM_BILLED_S = 60.0


def billed_s(run_s: float, minimum_s: float = MINIMUM_BILLED_S) -> float:
    """Seconds EC2 bills for one run that has lasted run_s so far."""
    return max(minimum_s, max(0.0, run_s))


@dataclass(frozen=True)
class Run:
    """One run of one instance: from its launch or start until it stopped (or now)."""

    instance_type: str
    market: str
    seconds: float


def compute_usd(runs: Iterable[Run], prices: Prices) -> float:
    return sum(prices.hourly(r.instance_type, r.market) * billed_s(r.seconds) / 3600 for r in runs)


def cpu_per_1000_usd(cpu_ms_per_image: float, prices: Prices, market: str = "on-demand") -> float:
    """Compute per 1,000 images on the default worker type when its every vCPU is busy."""
    itype = prices.worker_type
    cpu_s_usd = prices.hourly(itype, market) / 3600 / INSTANCE_VCPUS.get(itype, 2)
    return cpu_ms_per_image * cpu_s_usd  # (ms / 1000 per image) x 1,000 images


def requests_usd(by_class: Mapping[str, int], prices: Prices) -> float:
    return sum(prices.request(name) * n for name, n in by_class.items())


def per_1000(usd: float, images: int) -> float | None:
    return None if images <= 0 else usd * 1000 / images


def summary(
    *,
    compute: float,
    requests: Mapping[str, int],
    images: int,
    fixed_s: float,
    prices: Prices,
) -> dict:
    """The `cost` object of /status: dollars so far by part, and per 1,000 images answered."""
    request_usd = requests_usd(requests, prices)
    return {
        "currency": CURRENCY,
        "per_1000_images": _round(per_1000(compute + request_usd, images)),
        "compute": _round(compute),
        "requests": _round(request_usd),
        "fixed": _round(prices.fixed_hourly * fixed_s / 3600),
        "fixed_per_hour": _round(prices.fixed_hourly),
        "images": images,
        "request_counts": dict(sorted(requests.items())),
        "prices_as_of": PRICES_AS_OF,
    }


def with_requests(cost: dict | None, requests: Mapping[str, int], prices: Prices) -> dict:
    """Another tier's `cost` (the scaler's, None if unreachable) plus this process's requests:
    the web tier's /status adds its own to the fleet's."""
    cost = cost or summary(compute=0.0, requests={}, images=0, fixed_s=0.0, prices=prices)
    counts = add_counts(cost.get("request_counts", {}), requests)
    request_usd = requests_usd(counts, prices)
    return {
        **cost,
        "requests": _round(request_usd),
        "per_1000_images": _round(per_1000(cost["compute"] + request_usd, cost["images"])),
        "request_counts": dict(sorted(counts.items())),
    }


def _round(usd: float | None) -> float | None:
    return None if usd is None else round(usd, 8)
