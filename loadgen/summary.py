"""What one request did (Outcome) and what the run amounts to (Summary), as a table or JSON."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass

from runtime.stats import percentile


@dataclass(frozen=True)
class Outcome:
    index: int
    start_time: float  # epoch seconds the request was due
    offset_s: float  # seconds since the run started
    filename: str
    status: str  # the HTTP status ("200", "500"), or "timeout" / "conn_error"
    latency_ms: float
    label: str
    correct: bool | None  # None: failed, or no expected label for this file
    cached: bool | None = None  # answered from the result cache; None: the server did not say

    @property
    def finished_s(self) -> float:
        """Seconds since the run started at which the answer arrived."""
        return self.offset_s + self.latency_ms / 1000

    @property
    def ok(self) -> bool:
        return self.status.isdigit() and 200 <= int(self.status) < 300


@dataclass(frozen=True)
class Latency:
    p50: float
    p95: float
    p99: float
    max: float
    mean: float


@dataclass(frozen=True)
class Accuracy:
    correct: int
    scored: int  # successful replies for files with an expected label

    @property
    def ratio(self) -> float | None:
        return self.correct / self.scored if self.scored else None


@dataclass(frozen=True)
class Summary:
    requests: int
    ok: int
    errors: dict[str, int]  # by status
    elapsed_s: float
    throughput_rps: float  # replies (any status) per second of the run
    latency_ms: Latency | None  # of successful replies
    accuracy: Accuracy | None  # None without --expected
    peak_running: int | None  # most running workers /status reported; None: no /status
    cached: int | None = None  # answers from the result cache; None: the server did not say
    cost: dict | None = None  # loadgen.status.run_cost; None: the server did not say

    def to_json(self) -> str:
        doc = asdict(self)
        if self.accuracy is not None:
            doc["accuracy"]["ratio"] = self.accuracy.ratio
        return json.dumps(doc, separators=(",", ":"))


def summarize(
    outcomes: list[Outcome],
    elapsed_s: float,
    scored: bool,
    peak_running: int | None = None,
    cost: dict | None = None,
) -> Summary:
    ok = [o for o in outcomes if o.ok]
    errors = Counter(o.status for o in outcomes if not o.ok)
    latencies = sorted(o.latency_ms for o in ok)
    latency = None
    if latencies:
        latency = Latency(
            *(round(percentile(latencies, p), 1) for p in (50, 95, 99, 100)),
            mean=round(sum(latencies) / len(latencies), 1),
        )
    accuracy = None
    if scored:
        judged = [o for o in ok if o.correct is not None]
        accuracy = Accuracy(sum(1 for o in judged if o.correct), len(judged))
    told = [o.cached for o in ok if o.cached is not None]
    return Summary(
        cached=sum(told) if told else None,
        requests=len(outcomes),
        ok=len(ok),
        errors=dict(sorted(errors.items())),
        elapsed_s=round(elapsed_s, 3),
        throughput_rps=round(len(outcomes) / elapsed_s, 2) if elapsed_s > 0 else 0.0,
        latency_ms=latency,
        accuracy=accuracy,
        peak_running=peak_running,
        cost=cost,
    )


def format_table(summary: Summary) -> str:
    rows = [
        ("requests", f"{summary.requests} ({summary.ok} ok)"),
        ("errors", ", ".join(f"{k}: {v}" for k, v in summary.errors.items()) or "none"),
        ("elapsed", f"{summary.elapsed_s:.2f} s"),
        ("throughput", f"{summary.throughput_rps:.2f} req/s"),
    ]
    if summary.cached is not None:
        rows.append(("cache", f"{summary.cached} answered from the cache"))
    if summary.latency_ms is not None:
        lat = summary.latency_ms
        rows.append(
            (
                "latency (ok)",
                f"p50 {lat.p50:.0f} ms  p95 {lat.p95:.0f} ms  p99 {lat.p99:.0f} ms  "
                f"max {lat.max:.0f} ms",
            )
        )
    if summary.accuracy is not None:
        acc = summary.accuracy
        ratio = "n/a" if acc.ratio is None else f"{acc.ratio:.1%}"
        rows.append(("accuracy", f"{acc.correct}/{acc.scored} = {ratio}"))
    if summary.peak_running is not None:
        rows.append(("peak workers", str(summary.peak_running)))
    if summary.cost is not None and summary.cost["per_1000_images"] is not None:
        cost, unit = summary.cost, "$" if summary.cost["currency"] == "USD" else ""
        rows.append(
            (
                "cost",
                f"{unit}{cost['per_1000_images']:.4g} per 1,000 images (compute "
                f"{unit}{cost['compute']:.4g}, requests {unit}{cost['requests']:.4g} for "
                f"{cost['images']} images; hosts {unit}{cost['fixed_per_hour']:.4g}/h apart)",
            )
        )
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
