"""Files a run leaves in --out: results.csv (one row per request), fleet.csv (when the target
has /status) and report.png (latency over time, and fleet size over time)."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

from loadgen.status import FleetSample
from loadgen.summary import Outcome

RESULT_COLUMNS = ("start_time", "filename", "status", "latency_ms", "label", "correct")


def write_results_csv(path: Path, outcomes: list[Outcome]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(RESULT_COLUMNS)
        for o in sorted(outcomes, key=lambda o: (o.start_time, o.index)):
            correct = "" if o.correct is None else str(o.correct).lower()
            writer.writerow(
                (
                    f"{o.start_time:.3f}",
                    o.filename,
                    o.status,
                    f"{o.latency_ms:.1f}",
                    o.label,
                    correct,
                )
            )


def write_fleet_csv(path: Path, samples: list[FleetSample]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(field.name for field in dataclasses.fields(FleetSample))
        for s in samples:
            writer.writerow("" if v is None else v for v in dataclasses.astuple(s))


def write_report_png(path: Path, outcomes: list[Outcome], samples: list[FleetSample]) -> None:
    import matplotlib  # imported here: a second's start-up that runs without --out need not pay

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    rows = 2 if samples else 1
    fig, axes = plt.subplots(rows, 1, figsize=(10, 3.5 * rows), sharex=True, squeeze=False)
    _plot_latency(axes[0][0], outcomes)
    if samples:
        _plot_fleet(axes[1][0], samples)
    axes[-1][0].set_xlabel("seconds since start")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_latency(ax, outcomes: list[Outcome]) -> None:
    ok = [o for o in outcomes if o.ok]
    failed = [o for o in outcomes if not o.ok]
    ax.scatter([o.offset_s for o in ok], [o.latency_ms for o in ok], s=8, label="ok")
    if failed:
        ax.scatter(
            [o.offset_s for o in failed],
            [o.latency_ms for o in failed],
            s=14,
            marker="x",
            color="tab:red",
            label="error",
        )
    ax.set_ylabel("latency (ms)")
    ax.set_title("request latency by start time")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")


def _plot_fleet(ax, samples: list[FleetSample]) -> None:
    from matplotlib.ticker import MaxNLocator

    t = [s.offset_s for s in samples]
    for state in ("running", "pending", "stopping"):
        values = [getattr(s, state) for s in samples]
        if any(v is not None for v in values):
            ax.step(t, [v or 0 for v in values], where="post", label=state)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("instances")
    ax.set_title("fleet and queue (from /status)")
    ax.grid(alpha=0.3)
    queue = ax.twinx()
    backlog = [(s.visible or 0) + (s.in_flight or 0) for s in samples]
    queue.plot(t, backlog, color="tab:gray", linestyle="--", label="queued + in flight")
    queue.set_ylabel("messages")
    lines = ax.get_legend_handles_labels()
    extra = queue.get_legend_handles_labels()
    ax.legend(lines[0] + extra[0], lines[1] + extra[1], loc="upper left")
