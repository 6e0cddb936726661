"""What things cost: the price table every cost figure is worked out from (US dollars).

Defaults are AWS's public list prices for us-east-1 (docs/scaling.md, "Prices", says when they
were taken); Spot prices move hourly, so theirs are typical recent figures, not quotes. PRICES_JSON
overrides any part, e.g. '{"instances": {"c6i.large": {"spot": 0.03}}, "requests": {"s3-put":
5e-06}}'; what it does not name keeps its default.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass

CURRENCY = "USD"
PRICES_AS_OF = "2025-06"  # when the defaults below were read from aws.amazon.com/pricing
MARKETS = ("on-demand", "spot")

# $/hour, Linux, us-east-1.
INSTANCE_HOURLY = {
    "c6i.large": {"on-demand": 0.085, "spot": 0.034},
    "c7i.large": {"on-demand": 0.08925, "spot": 0.036},
    "c7g.large": {"on-demand": 0.0725, "spot": 0.029},
    "m6i.large": {"on-demand": 0.096, "spot": 0.040},
    "t3.medium": {"on-demand": 0.0416, "spot": 0.0166},  # the embedded stack's "instances"
    "t3.small": {"on-demand": 0.0208, "spot": 0.0083},  # the web host's (web and scaler)
    "t3.micro": {"on-demand": 0.0104, "spot": 0.0042},
}
# vCPUs of each type: a CPU-second's price is the hour's / 3600 / vCPUs (at full use).
INSTANCE_VCPUS = {t: 2 for t in INSTANCE_HOURLY}
DEFAULT_WORKER_TYPE = "c6i.large"  # the first of the deployed stack's WorkerInstanceTypes
WEB_HOST_TYPE = "t3.small"  # the scaler runs there too: the stack's one fixed host

# $ per request, by price class (runtime.requests maps each API call to one).
REQUEST_PRICES = {
    "s3-put": 0.005 / 1000,  # PUT, COPY, POST, LIST
    "s3-get": 0.0004 / 1000,  # GET, HEAD and every other billed S3 request
    "s3-free": 0.0,  # DELETE (S3 does not bill it)
    "sqs": 0.40 / 1_000_000,  # standard queue, per 64 KiB chunk, after the free tier
    "cloudwatch-get": 0.01 / 1000,  # GetMetricStatistics (per request), GetMetricData (per metric)
    "cloudwatch-put": 0.01 / 1000,  # PutMetricData
    "cloudwatch-list": 0.01 / 1000,  # ListMetrics and other API requests
    "free": 0.0,  # EC2 API calls and anything else AWS does not bill per request
}


class PriceError(ValueError):
    """PRICES_JSON is not a valid override of the price table."""


@dataclass(frozen=True)
class Prices:
    instances: Mapping[str, Mapping[str, float]]  # type -> market -> $/hour
    requests: Mapping[str, float]  # price class -> $/request
    web_host: str = WEB_HOST_TYPE
    worker_type: str = DEFAULT_WORKER_TYPE

    def hourly(self, instance_type: str, market: str = "on-demand") -> float:
        """$/hour of one instance; an unlisted type is priced as the default worker type."""
        by_market = self.instances.get(instance_type) or self.instances[self.worker_type]
        return by_market.get(market, by_market["on-demand"])

    def request(self, price_class: str) -> float:
        return self.requests.get(price_class, 0.0)

    @property
    def fixed_hourly(self) -> float:
        """What runs all month whatever the traffic: the web host (web tier and scaler)."""
        return self.hourly(self.web_host)


def parse_prices(raw: str) -> Prices:
    """The default table with PRICES_JSON's overrides; PriceError names the first bad entry."""
    instances = {t: dict(m) for t, m in INSTANCE_HOURLY.items()}
    requests = dict(REQUEST_PRICES)
    hosts = {"web_host": WEB_HOST_TYPE, "worker_type": DEFAULT_WORKER_TYPE}
    if raw.strip():
        try:
            given = json.loads(raw)
        except ValueError:
            raise PriceError("PRICES_JSON is not JSON") from None
        if not isinstance(given, dict):
            raise PriceError("PRICES_JSON must be a JSON object")
        unknown = set(given) - {"instances", "requests", *hosts}
        if unknown:
            raise PriceError(f"PRICES_JSON: unknown key {sorted(unknown)[0]!r}")
        for itype, markets in _object(given.get("instances", {}), "instances").items():
            for market, price in _object(markets, f"instances.{itype}").items():
                if market not in MARKETS:
                    raise PriceError(
                        f"PRICES_JSON: instances.{itype}: market must be on-demand|spot"
                    )
                instances.setdefault(itype, {})[market] = _price(
                    price, f"instances.{itype}.{market}"
                )
            if "on-demand" not in instances[itype]:
                raise PriceError(f"PRICES_JSON: instances.{itype} needs an on-demand price")
        for name, price in _object(given.get("requests", {}), "requests").items():
            if name not in REQUEST_PRICES:
                raise PriceError(f"PRICES_JSON: requests: unknown class {name!r}")
            requests[name] = _price(price, f"requests.{name}")
        for key in hosts:
            if key in given:
                if given[key] not in instances:
                    raise PriceError(f"PRICES_JSON: {key}: no price for {given[key]!r}")
                hosts[key] = given[key]
    return Prices(instances=instances, requests=requests, **hosts)


def _object(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise PriceError(f"PRICES_JSON: {where} must be an object")
    return value


def _price(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise PriceError(f"PRICES_JSON: {where} must be a number")
    if value < 0:
        raise PriceError(f"PRICES_JSON: {where} must be >= 0")
    return float(value)


DEFAULT_PRICES = parse_prices("")
