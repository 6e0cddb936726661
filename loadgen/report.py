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


def write_report_png(
    path: Path, outcomes: list[Outcome], samples: list[FleetSample], title: str
) -> None:
    """Latency by completion time, completions per second and the fleet on one time axis (the
    fleet's, which runs on past the last answer while it scales in), then the latency spread."""
    import matplotlib  # imported here: a second's start-up that runs without --out need not pay

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    timed = 3 if samples else 2
    fig = plt.figure(figsize=(11, 2.6 * (timed + 1) + 0.6))
    grid = fig.add_gridspec(timed + 1, 1, hspace=0.55)
    first = fig.add_subplot(grid[0])
    axes = [first] + [fig.add_subplot(grid[i], sharex=first) for i in range(1, timed)]
    _plot_latency(axes[0], outcomes)
    _plot_completions(axes[1], outcomes)
    if samples:
        _plot_fleet(axes[2], samples)
    axes[-1].set_xlabel("seconds since the run started")
    for ax in axes[:-1]:
        ax.tick_params(labelbottom=False)
    _plot_distribution(fig.add_subplot(grid[timed]), outcomes)
    fig.suptitle(title, fontsize=11)
    fig.subplots_adjust(left=0.08, right=0.76, top=1 - 0.8 / fig.get_figheight(), bottom=0.06)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _legend(ax, handles=None, labels=None) -> None:
    # Outside the plot, on the right: a legend must never cover the data.
    if handles is None:
        handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.09, 1), fontsize=9)


def _plot_latency(ax, outcomes: list[Outcome]) -> None:
    groups = (
        ("from the model", "tab:blue", "o", lambda o: o.ok and not o.cached),
        ("from the cache", "tab:green", "o", lambda o: o.ok and o.cached),
        ("error", "tab:red", "x", lambda o: not o.ok),
    )
    for label, colour, marker, keep in groups:
        chosen = [o for o in outcomes if keep(o)]
        if chosen:
            ax.scatter(
                [o.finished_s for o in chosen],
                [o.latency_ms / 1000 for o in chosen],
                s=10,
                marker=marker,
                color=colour,
                label=label,
            )
    ax.set_ylabel("latency (s)")
    ax.set_title("each request's latency, at the time its answer arrived", fontsize=10)
    ax.grid(alpha=0.3)
    _legend(ax)


def _plot_completions(ax, outcomes: list[Outcome]) -> None:
    finished = [o.finished_s for o in outcomes]
    if finished:
        seconds = int(max(finished)) + 1
        ax.hist(finished, bins=range(seconds + 1), color="tab:blue", label="answers")
    ax.set_ylabel("answers per second")
    ax.set_title("completions per second", fontsize=10)
    ax.grid(alpha=0.3)


def _plot_fleet(ax, samples: list[FleetSample]) -> None:
    from matplotlib.ticker import MaxNLocator

    t = [s.offset_s for s in samples]
    for state in ("running", "starting", "pending", "stopping"):
        values = [getattr(s, state) for s in samples]
        if any(v is not None for v in values):
            starting = state == "starting"
            label = "of them starting" if starting else f"{state} workers"
            style = ":" if starting else "-"
            ax.step(t, [v or 0 for v in values], where="post", label=label, linestyle=style)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("instances")
    ax.set_title("fleet and queue (sampled from /status)", fontsize=10)
    ax.grid(alpha=0.3)
    queue = ax.twinx()
    backlog = [(s.visible or 0) + (s.in_flight or 0) for s in samples]
    queue.plot(t, backlog, color="tab:gray", linestyle="--", label="queued + in flight")
    queue.set_ylabel("messages")
    lines, extra = ax.get_legend_handles_labels(), queue.get_legend_handles_labels()
    _legend(ax, lines[0] + extra[0], lines[1] + extra[1])


def _plot_distribution(ax, outcomes: list[Outcome]) -> None:
    latencies = [o.latency_ms / 1000 for o in outcomes if o.ok]
    if latencies:
        ax.hist(latencies, bins=min(40, max(5, len(latencies) // 5)), color="tab:blue")
    ax.set_xlabel("latency (s)")
    ax.set_ylabel("requests")
    ax.set_title("latency distribution (successful requests)", fontsize=10)
    ax.grid(alpha=0.3)


def report_title(summary, plan_text: str) -> str:
    """The run's parameters, and its p50 and p95, for the report's title."""
    lat = summary.latency_ms
    spread = f"p50 {lat.p50 / 1000:.2f} s, p95 {lat.p95 / 1000:.2f} s" if lat else "no answers"
    cached = "" if summary.cached is None else f", {summary.cached} from the cache"
    return f"{plan_text}\n{summary.ok}/{summary.requests} ok, {spread}{cached}"
