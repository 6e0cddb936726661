"""The run's numbers as one flat dict (the JSON line) and as a table for people."""

from __future__ import annotations

import statistics

from bench.client import Batch
from bench.model import ModelTiming
from bench.service import ServiceRun
from bench.worker import WorkerRun

# (key, goal, "min" if the value must reach the goal, "max" if it must stay under it)
GOALS = (
    ("worker_efficiency", 0.90, "min"),
    ("e2e_efficiency", 0.50, "min"),
    ("overhead_p50_ms", 30.0, "max"),
    ("burst100_s", 3.0, "max"),
)


def p50_ms(batch: Batch) -> float:
    latencies = [o.latency_s for o in batch.outcomes if o.ok]
    return round(statistics.median(latencies) * 1e3, 1) if latencies else float("nan")


def _timing_p50(batch: Batch, key: str) -> float | None:
    values = [
        o.body["timings_ms"][key]
        for o in batch.outcomes
        if isinstance(o.body.get("timings_ms"), dict) and key in o.body["timings_ms"]
    ]
    return round(statistics.median(values), 1) if values else None


def summarise(
    machine: dict, one: ModelTiming, two: ModelTiming, worker: WorkerRun, service: ServiceRun
) -> dict:
    e2e_img_s = len(service.e2e.outcomes) / service.e2e.wall_s
    seq_p50 = p50_ms(service.seq)
    out = {
        "machine": machine,
        "model_img_s": round(one.best_img_s, 2),
        "model_best_batch": one.best_batch,
        "model_img_s_by_batch": {b: round(r, 2) for b, r in one.img_s.items()},
        "model_bs1_ms": round(one.bs1_ms, 1),
        "model_2t_img_s": round(two.best_img_s, 2),
        "model_2t_best_batch": two.best_batch,
        "model_2t_img_s_by_batch": {b: round(r, 2) for b, r in two.img_s.items()},
        "worker_img_s": round(worker.img_s, 2),
        "worker_efficiency": round(worker.img_s / one.best_img_s, 3),
        "worker_images": worker.images,
        "worker_errors": worker.errors,
        "worker_drain_s": round(worker.drain_s, 2),
        "worker_batch_mean": round(worker.batch_mean, 2),
        "worker_model_share": round(worker.model_s / worker.drain_s, 3),
        "worker_cpu_s": worker.cpu_s,
        "cold_start_s": round(worker.cold_start_s, 2),
        "e2e_img_s": round(e2e_img_s, 2),
        "e2e_efficiency": round(e2e_img_s / two.best_img_s, 3),
        "e2e_fleet": f"{service.workers} fixed workers, TORCH_THREADS=1 each (no scaler)",
        "e2e_uploads": len(service.e2e.outcomes),
        "e2e_errors": service.e2e.failed,
        "e2e_wall_s": round(service.e2e.wall_s, 2),
        "e2e_p50_ms": p50_ms(service.e2e),
        "e2e_cpu_s": service.cpu_s,
        "seq_p50_ms": seq_p50,
        "seq_submit_p50_ms": _timing_p50(service.seq, "submit"),
        "seq_model_p50_ms": _timing_p50(service.seq, "model"),
        "overhead_p50_ms": round(seq_p50 - one.bs1_ms, 1),
        "burst100_s": round(service.burst.wall_s, 2),
        "burst_uploads": len(service.burst.outcomes),
        "burst_errors": service.burst.failed,
        "cache_hit_p50_ms": p50_ms(service.cache),
        "cache_hits": sum(
            1 for o in service.cache.outcomes if o.body.get("timings_ms", {}).get("cache_hit")
        ),
        "cache_repeats": len(service.cache.outcomes),
    }
    out["goals_met"] = {
        key: (out[key] >= goal if kind == "min" else out[key] <= goal) for key, goal, kind in GOALS
    }
    return out


def table(r: dict) -> str:
    m = r["machine"]
    goal = {key: (goal, kind) for key, goal, kind in GOALS}
    rows = [
        ("machine", f"{m['nproc']} x {m['cpu_model']}, torch {m['torch']}", ""),
        ("load average at start", f"{m['load_avg_1m']}", "(shared machine: noise)"),
        ("bare model, 1 thread", f"{r['model_img_s']} img/s", _best(r, "model")),
        ("  by batch", _by_batch(r["model_img_s_by_batch"]), "img/s"),
        ("bare model, batch 1", f"{r['model_bs1_ms']} ms", "1 thread"),
        ("bare model, 2 threads", f"{r['model_2t_img_s']} img/s", _best(r, "model_2t")),
        ("worker, 1 core", f"{r['worker_img_s']} img/s", _worker_note(r)),
        ("worker_efficiency", f"{r['worker_efficiency']}", ""),
        ("cold start", f"{r['cold_start_s']} s", "process start to first result"),
        ("end to end", f"{r['e2e_img_s']} img/s", _e2e_note(r)),
        ("e2e_efficiency", f"{r['e2e_efficiency']}", "vs bare model on 2 threads"),
        ("sequential p50", f"{r['seq_p50_ms']} ms", f"submit p50 {r['seq_submit_p50_ms']} ms"),
        ("overhead_p50_ms", f"{r['overhead_p50_ms']} ms", "sequential p50 - bare batch 1"),
        ("burst100_s", f"{r['burst100_s']} s", f"{r['burst_uploads']} uploads at once"),
        ("cache_hit_p50_ms", f"{r['cache_hit_p50_ms']} ms", _cache_note(r)),
    ]
    lines = [f"{'metric':<24} {'value':<32} {'goal':<9} note", "-" * 96]
    for name, value, note in rows:
        target = ""
        if name in goal:
            limit, kind = goal[name]
            met = r["goals_met"][name]
            target = f"{'>=' if kind == 'min' else '<='}{limit:g} {'ok' if met else 'MISS'}"
        lines.append(f"{name:<24} {value:<32} {target:<9} {note}")
    lines.append(f"CPU s in the worker drain: {_cpu(r['worker_cpu_s'])}")
    lines.append(f"CPU s in the e2e run:      {_cpu(r['e2e_cpu_s'])}")
    return "\n".join(lines)


def _by_batch(rates: dict) -> str:
    return " ".join(f"{b}:{rate:g}" for b, rate in rates.items())


def _best(r: dict, prefix: str) -> str:
    return f"best batch {r[f'{prefix}_best_batch']}"


def _worker_note(r: dict) -> str:
    return (
        f"{r['worker_images']} queued, {r['worker_errors']} errors, mean batch "
        f"{r['worker_batch_mean']}, model {r['worker_model_share']:.0%} of the time"
    )


def _e2e_note(r: dict) -> str:
    return (
        f"{r['e2e_uploads']} uploads, {r['e2e_errors']} errors, p50 {r['e2e_p50_ms']} ms, "
        f"2 fixed workers"
    )


def _cache_note(r: dict) -> str:
    return f"{r['cache_hits']} of {r['cache_repeats']} repeats answered from the cache"


def _cpu(cpu: dict) -> str:
    return ", ".join(f"{name} {seconds:g}" for name, seconds in cpu.items())
