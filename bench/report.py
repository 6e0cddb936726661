"""The run's numbers as one flat dict (the JSON line) and as a table for people."""

from __future__ import annotations

import statistics

from bench.client import Batch
from bench.machine import worker_image_mb
from bench.model import ModelTiming
from bench.service import ServiceRun
from bench.worker import Drain, WorkerRun
from runtime.costs import cpu_per_1000_usd
from runtime.prices import DEFAULT_PRICES, MARKETS
from worker.stats import STAGES

# (key, goal, "min" if the value must reach the goal, "max" if it must stay under it)
GOALS = (
    ("worker_efficiency", 0.90, "min"),
    ("e2e_efficiency", 0.50, "min"),
    ("overhead_p50_ms", 30.0, "max"),
    ("burst100_s", 3.0, "max"),
    ("worker_cpu_efficiency", 0.85, "min"),
    ("worker_cpu_efficiency_phone", 0.50, "min"),
    ("worker_overhead_cpu_ms", 4.0, "max"),
    ("service_to_model_cpu", 1.3, "max"),
    ("lane_ratio", 2.0, "max"),
    # Issue 23: the worker's runtime against PyTorch jit, its answers, its start.
    ("model_cpu_ms_ratio", 0.65, "max"),
    ("top1_agreement", 1.0, "min"),
    ("cold_start_s", 2.0, "max"),
    ("worker_image_mb", 700, "max"),
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


def side_by_side(timings: list[ModelTiming]) -> dict[int, float]:
    """Images per second of processes that ran at once, summed per batch size."""
    return {b: sum(t.img_s[b] for t in timings) for b in timings[0].img_s}


def _per_image_ms(cpu_s: dict[str, float], images: int) -> dict[str, float]:
    return {name: round(seconds * 1e3 / images, 1) for name, seconds in cpu_s.items()}


def _worker_cpu_ms(drain: Drain) -> float:
    return drain.cpu.cpu_s["worker"] * 1e3 / drain.images


def _compute_cost(cpu_ms_per_image: float) -> dict:
    """The fed worker's CPU per image as dollars per 1,000 images on the default worker type,
    every vCPU busy (runtime.prices; the S3/SQS requests an image makes are apart: /status)."""
    prices = DEFAULT_PRICES
    return {
        "instance_type": prices.worker_type,
        "cpu_ms_per_img": round(cpu_ms_per_image, 2),
        **{m: round(cpu_per_1000_usd(cpu_ms_per_image, prices, m), 6) for m in MARKETS},
    }


def _stage_ms(drain: Drain) -> dict[str, float]:
    """The worker's CPU ms per image by stage, in pipeline order, and `other`: the rest of its
    process CPU (thread switches, logging, the visibility keeper, garbage collection)."""
    stages = {name: drain.stage_cpu_s.get(name, 0.0) for name in STAGES}
    per_image = {name: round(seconds * 1e3 / drain.images, 2) for name, seconds in stages.items()}
    other_s = drain.cpu.cpu_s["worker"] - sum(stages.values())
    per_image["other"] = round(other_s * 1e3 / drain.images, 2)
    return per_image


def _service_cpu_ms(cpu_s: dict[str, float], images: int) -> float:
    """Web and workers, per image: what the service itself spends (not the emulator, not the
    client)."""
    ours = sum(seconds for name, seconds in cpu_s.items() if name not in ("moto", "client"))
    return round(ours * 1e3 / images, 1)


def _drain(drain: Drain) -> dict:
    return {
        "img_s": round(drain.img_s, 2),
        "images": drain.images,
        "errors": drain.errors,
        "wall_s": round(drain.wall_s, 2),
        "batch_mean": round(drain.batch_mean, 2),
        "model_share": round(drain.model_s / drain.wall_s, 3),
        "cpu_ms_per_img": _per_image_ms(drain.cpu.cpu_s, drain.images),
        "window": drain.cpu.as_dict(),
        "stage_cpu_ms": _stage_ms(drain),
    }


def summarise(
    machine: dict,
    one: ModelTiming,
    two: ModelTiming,
    pair: list[ModelTiming],
    worker: WorkerRun,
    service: ServiceRun,
    runtimes: dict[str, float] | None = None,
) -> dict:
    e2e_img_s = len(service.e2e.outcomes) / service.e2e.wall_s
    pair_img_s = side_by_side(pair)
    pair_best = max(pair_img_s, key=pair_img_s.get)
    seq_p50 = p50_ms(service.seq)
    model_cpu_ms = one.cpu_ms[one.best_batch]
    phone_e2e_img_s = len(service.phone_e2e.outcomes) / service.phone_e2e.wall_s
    service_cpu_ms = _service_cpu_ms(service.cpu.cpu_s, len(service.e2e.outcomes))
    out = {
        "machine": machine,
        "model_img_s": round(one.best_img_s, 2),
        "model_best_batch": one.best_batch,
        "model_img_s_by_batch": {b: round(r, 2) for b, r in one.img_s.items()},
        "model_cpu_ms_per_img": round(model_cpu_ms, 1),
        # The worker's runtime (MODEL_RUNTIME's choice) and the bare model on each runtime.
        "runtime": one.runtime,
        "model_cpu_ms_by_runtime": {r: round(ms, 2) for r, ms in (runtimes or {}).items()},
        "model_cpu_ms_ratio": _runtime_ratio(one, runtimes or {}),
        "top1_agreement": one.top1_agreement,
        "model_bs1_ms": round(one.bs1_ms, 1),
        "decode_cpu_ms_per_img": round(one.decode_cpu_ms, 1),
        "decode_cpu_ms_per_img_phone": round(one.phone_decode_cpu_ms.get("scaled", 0.0), 1),
        "decode_full_cpu_ms_per_img_phone": round(one.phone_decode_cpu_ms.get("full", 0.0), 1),
        "model_2t_img_s": round(two.best_img_s, 2),
        "model_2t_best_batch": two.best_batch,
        "model_2t_img_s_by_batch": {b: round(r, 2) for b, r in two.img_s.items()},
        "model_2x1t_img_s": round(pair_img_s[pair_best], 2),
        "model_2x1t_best_batch": pair_best,
        "worker_img_s": round(worker.full.img_s, 2),
        "worker_efficiency": round(worker.full.img_s / one.best_img_s, 3),
        "worker_images": worker.full.images,
        "worker_errors": worker.full.errors,
        "worker_fed_img_s": round(worker.fed.img_s, 2),
        "worker_fed_efficiency": round(worker.fed.img_s / one.best_img_s, 3),
        "worker_fed_depth": worker.fed_depth,
        "worker_cpu_efficiency": round(model_cpu_ms / _worker_cpu_ms(worker.fed), 3),
        "compute_per_1000_images": _compute_cost(_worker_cpu_ms(worker.fed)),
        "worker_overhead_cpu_ms": round(_worker_cpu_ms(worker.fed) - model_cpu_ms, 1),
        "stage_cpu_ms": _stage_ms(worker.fed),
        "worker_img_s_phone": round(worker.phone_full.img_s, 2),
        "worker_efficiency_phone": round(worker.phone_full.img_s / one.best_img_s, 3),
        "worker_fed_img_s_phone": round(worker.phone_fed.img_s, 2),
        "worker_cpu_efficiency_phone": round(model_cpu_ms / _worker_cpu_ms(worker.phone_fed), 3),
        "worker_overhead_cpu_ms_phone": round(_worker_cpu_ms(worker.phone_fed) - model_cpu_ms, 1),
        "stage_cpu_ms_phone": _stage_ms(worker.phone_fed),
        "worker_full": _drain(worker.full),
        "worker_fed": _drain(worker.fed),
        "worker_phone_full": _drain(worker.phone_full),
        "worker_phone_fed": _drain(worker.phone_fed),
        "cold_start_s": round(worker.cold_start_s, 2),
        "worker_image_mb": worker_image_mb(),
        "e2e_img_s": round(e2e_img_s, 2),
        "e2e_efficiency": round(e2e_img_s / two.best_img_s, 3),
        "e2e_efficiency_2x1t": round(e2e_img_s / pair_img_s[pair_best], 3),
        "e2e_fleet": f"{service.workers} fixed workers, TORCH_THREADS=1 each (no scaler)",
        "e2e_uploads": len(service.e2e.outcomes),
        "e2e_concurrency": service.concurrency,
        "e2e_errors": service.e2e.failed,
        "e2e_wall_s": round(service.e2e.wall_s, 2),
        "e2e_p50_ms": p50_ms(service.e2e),
        "e2e_cpu_ms_per_img": _per_image_ms(service.cpu.cpu_s, len(service.e2e.outcomes)),
        "e2e_window": service.cpu.as_dict(),
        "service_cpu_ms_per_img": service_cpu_ms,
        "service_to_model_cpu": round(service_cpu_ms / model_cpu_ms, 2),
        "e2e_img_s_phone": round(phone_e2e_img_s, 2),
        "e2e_uploads_phone": len(service.phone_e2e.outcomes),
        "e2e_errors_phone": service.phone_e2e.failed,
        "e2e_p50_ms_phone": p50_ms(service.phone_e2e),
        "e2e_cpu_ms_per_img_phone": _per_image_ms(
            service.phone_cpu.cpu_s, len(service.phone_e2e.outcomes)
        ),
        "service_cpu_ms_per_img_phone": _service_cpu_ms(
            service.phone_cpu.cpu_s, len(service.phone_e2e.outcomes)
        ),
        "e2e_window_phone": service.phone_cpu.as_dict(),
        "seq_p50_ms": seq_p50,
        "seq_submit_p50_ms": _timing_p50(service.seq, "submit"),
        "seq_model_p50_ms": _timing_p50(service.seq, "model"),
        "overhead_p50_ms": round(seq_p50 - one.bs1_ms, 1),
        "aws_calls": service.aws_calls,
        "burst100_s": round(service.burst.wall_s, 2),
        "burst_uploads": len(service.burst.outcomes),
        "burst_errors": service.burst.failed,
        "burst_fleet": f"{service.workers} fixed workers (fleet <= 2), warm",
        "cache_hit_p50_ms": p50_ms(service.cache),
        "cache_hits": sum(
            1 for o in service.cache.outcomes if o.body.get("timings_ms", {}).get("cache_hit")
        ),
        "cache_repeats": len(service.cache.outcomes),
        **_lane(service, seq_p50),
    }
    out["goals_met"] = {
        key: out[key] is not None and (out[key] >= goal if kind == "min" else out[key] <= goal)
        for key, goal, kind in GOALS
        if out[key] is not None
    }
    return out


def _cost_cells(cost: dict) -> tuple[str, str]:
    value = f"${cost['on-demand']:.5f} (Spot ${cost['spot']:.5f})"
    return value, f"{cost['instance_type']} at full use, {cost['cpu_ms_per_img']} CPU ms/img"


def _runtime_ratio(one: ModelTiming, runtimes: dict[str, float]) -> float | None:
    """The worker's runtime's CPU ms per image / PyTorch jit's (issue 23's goal: <= 0.65)."""
    if "torch" not in runtimes:
        return None
    return round(one.cpu_ms[one.best_batch] / runtimes["torch"], 3)


def table(r: dict) -> str:
    m = r["machine"]
    goal = {key: (goal, kind) for key, goal, kind in GOALS}
    rows = [
        ("machine", f"{m['nproc']} x {m['cpu_model']}", f"torch {m['torch']}"),
        ("load average at start", f"{m['load_avg_1m']}", "shared machine: expect noise"),
        ("bare model, 1 thread", f"{r['model_img_s']} img/s", _model_note(r)),
        ("  by batch (img/s)", _by_batch(r["model_img_s_by_batch"]), ""),
        ("bare model, batch 1", f"{r['model_bs1_ms']} ms", "1 thread"),
        ("runtime", r["runtime"], "the worker's (MODEL_RUNTIME)"),
        ("  CPU ms/img by runtime", _by_batch(r["model_cpu_ms_by_runtime"]), "1 thread"),
        ("model_cpu_ms_ratio", f"{r['model_cpu_ms_ratio']}", "worker's runtime / PyTorch jit"),
        ("top1_agreement", f"{r['top1_agreement']}", "vs PyTorch fp32, sample + phone photos"),
        ("decode + preprocess", f"{r['decode_cpu_ms_per_img']} CPU ms/img", "the sample photos"),
        (
            "  12 MP phone photo",
            f"{r['decode_cpu_ms_per_img_phone']} CPU ms/img",
            f"decoding every pixel: {r['decode_full_cpu_ms_per_img_phone']} CPU ms/img",
        ),
        ("bare model, 2 threads", f"{r['model_2t_img_s']} img/s", _best(r, "model_2t")),
        ("bare model, 2 x 1 thread", f"{r['model_2x1t_img_s']} img/s", _pair_note(r)),
        ("worker, 1 core", f"{r['worker_img_s']} img/s", _drain_note(r["worker_full"], "full")),
        ("worker_efficiency", f"{r['worker_efficiency']}", "worker / bare model, 1 thread"),
        ("worker, queue kept short", f"{r['worker_fed_img_s']} img/s", _fed_note(r)),
        ("worker_fed_efficiency", f"{r['worker_fed_efficiency']}", "fed worker / bare model"),
        ("worker_cpu_efficiency", f"{r['worker_cpu_efficiency']}", _worker_cpu_note(r)),
        ("worker_overhead_cpu_ms", f"{r['worker_overhead_cpu_ms']}", "fed worker - bare model"),
        ("compute per 1,000 images", *_cost_cells(r["compute_per_1000_images"])),
        ("worker, phone photos", f"{r['worker_img_s_phone']} img/s", _phone_note(r)),
        ("  queue kept short", f"{r['worker_fed_img_s_phone']} img/s", "phone photos"),
        ("worker_cpu_efficiency_phone", f"{r['worker_cpu_efficiency_phone']}", "phone photos"),
        (
            "worker_overhead_cpu_ms_phone",
            f"{r['worker_overhead_cpu_ms_phone']}",
            "fed worker on phone photos - bare model",
        ),
        ("cold_start_s", f"{r['cold_start_s']} s", "process start to first result"),
        ("worker_image_mb", f"{r['worker_image_mb']} MB", "what each new instance pulls"),
        ("end to end", f"{r['e2e_img_s']} img/s", _e2e_note(r)),
        ("e2e_efficiency", f"{r['e2e_efficiency']}", "vs bare model on 2 threads"),
        ("e2e_efficiency_2x1t", f"{r['e2e_efficiency_2x1t']}", "vs 2 bare models x 1 thread"),
        ("end to end, phone photos", f"{r['e2e_img_s_phone']} img/s", _phone_e2e_note(r)),
        ("service CPU per image", f"{r['service_cpu_ms_per_img']} ms", "web + workers, e2e run"),
        ("service_to_model_cpu", f"{r['service_to_model_cpu']}", "service CPU / bare model CPU"),
        ("sequential p50", f"{r['seq_p50_ms']} ms", _seq_note(r)),
        ("overhead_p50_ms", f"{r['overhead_p50_ms']} ms", "sequential p50 - bare batch 1"),
        ("burst100_s", f"{r['burst100_s']} s", f"{r['burst_uploads']} at once, 2 fixed workers"),
        ("cache_hit_p50_ms", f"{r['cache_hit_p50_ms']} ms", _cache_note(r)),
        ("lane_ratio", f"{r['lane_ratio']}", _lane_note(r)),
    ]
    lines = [f"{'metric':<26} {'value':<26} {'goal':<10} note", "-" * 100]
    for name, value, note in rows:
        target = ""
        if name in goal:
            limit, kind = goal[name]
            met = r["goals_met"][name]
            target = f"{'>=' if kind == 'min' else '<='}{limit:g} {'ok' if met else 'MISS'}"
        lines.append(f"{name:<26} {value:<26} {target:<10} {note}".rstrip())
    calls = dict(r["aws_calls"])
    photo_kb = calls.pop("probe_photo_kb")
    lines.append(
        f"AWS emulator, one call at a time (photo {photo_kb} KB): "
        "p50 ms / moto CPU ms / boto3 CPU ms per call"
    )
    lines.append("  " + _aws(calls))
    for name in ("full", "fed", "phone_full", "phone_fed"):
        drain = r[f"worker_{name}"]
        lines.append(_window(f"worker drain ({name})", drain["window"], drain["cpu_ms_per_img"]))
    lines.append(_window("end to end", r["e2e_window"], r["e2e_cpu_ms_per_img"]))
    lines.append(_window("phone e2e", r["e2e_window_phone"], r["e2e_cpu_ms_per_img_phone"]))
    for key, what in (("stage_cpu_ms", "sample photos"), ("stage_cpu_ms_phone", "phone photos")):
        stages = ", ".join(f"{k} {v:g}" for k, v in r[key].items())
        lines.append(f"worker CPU ms per image by stage ({what}, queue kept short): {stages}")
    return "\n".join(lines)


def _lane(service: ServiceRun, seq_p50: float) -> dict:
    """Sequential uploads under a running batch job against the same on an idle fleet."""
    if service.lane is None:
        return {"lane_p50_ms": None, "lane_ratio": None, "lane_job_images": 0, "lane_job_left": 0}
    under = p50_ms(service.lane.under_job)
    return {
        "lane_p50_ms": under,
        "lane_ratio": round(under / seq_p50, 2),
        # The worker's model time for the upload, under the job: CPU shared with the job's work.
        "lane_model_p50_ms": _timing_p50(service.lane.under_job, "model"),
        "lane_job_images": service.lane.job_images,
        "lane_job_left": service.lane.job_left,
        "lane_errors": service.lane.under_job.failed,
    }


def _lane_note(r: dict) -> str:
    return (
        f"sequential p50 {r['lane_p50_ms']} ms under a {r['lane_job_images']}-image job "
        f"({r['lane_job_left']} left at the end) / idle p50; model p50 "
        f"{r['lane_model_p50_ms']} ms under the job, {r['seq_model_p50_ms']} ms idle"
    )


def _by_batch(rates: dict) -> str:
    return " ".join(f"{b}:{rate:g}" for b, rate in rates.items())


def _best(r: dict, prefix: str) -> str:
    return f"best batch {r[f'{prefix}_best_batch']}"


def _model_note(r: dict) -> str:
    return f"best batch {r['model_best_batch']}, {r['model_cpu_ms_per_img']} CPU ms/img"


def _pair_note(r: dict) -> str:
    return f"two processes side by side, one per core, batch {r['model_2x1t_best_batch']}"


def _drain_note(d: dict, how: str) -> str:
    return (
        f"{d['images']} {how}, {d['errors']} errors, mean batch {d['batch_mean']}, "
        f"model {d['model_share']:.0%} of the wall time"
    )


def _phone_note(r: dict) -> str:
    return _drain_note(r["worker_phone_full"], "12 MP queued")


def _phone_e2e_note(r: dict) -> str:
    return (
        f"{r['e2e_uploads_phone']} uploads of 12 MP, {r['e2e_errors_phone']} errors, "
        f"p50 {r['e2e_p50_ms_phone']} ms"
    )


def _fed_note(r: dict) -> str:
    return _drain_note(r["worker_fed"], f"kept {r['worker_fed_depth']} deep")


def _worker_cpu_note(r: dict) -> str:
    worker_ms = r["worker_fed"]["cpu_ms_per_img"]["worker"]
    return f"bare model CPU ms/img / fed worker CPU ms/img ({worker_ms})"


def _e2e_note(r: dict) -> str:
    return (
        f"{r['e2e_uploads']} uploads at {r['e2e_concurrency']}, {r['e2e_errors']} errors, "
        f"p50 {r['e2e_p50_ms']} ms"
    )


def _seq_note(r: dict) -> str:
    return f"submit p50 {r['seq_submit_p50_ms']} ms, worker's model p50 {r['seq_model_p50_ms']} ms"


def _aws(calls: dict) -> str:
    return ", ".join(
        f"{name} {c['p50_ms']:g}/{c['emulator_cpu_ms']:g}/{c['client_cpu_ms']:g}"
        for name, c in calls.items()
    )


def _cache_note(r: dict) -> str:
    return f"{r['cache_hits']} of {r['cache_repeats']} repeats answered from the cache"


def _window(name: str, window: dict, per_image: dict) -> str:
    parts = ", ".join(f"{k} {v:g}" for k, v in per_image.items())
    return (
        f"CPU ms per image in the {name}: {parts}; other people's CPU "
        f"{window['others_cpu_s']:g} s in {window['wall_s']:g} s"
    )
