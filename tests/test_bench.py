"""The benchmark harness, run end to end with tiny sizes: it starts, measures, stops, reports.

A smoke test only: it checks that every key is there and that the run's counts add up, never
how fast anything was.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

from PIL import Image

from bench.photos import Photos
from tests.conftest import ROOT

KEYS = {
    "machine",
    "model_img_s",
    "model_best_batch",
    "model_bs1_ms",
    "model_2t_img_s",
    "worker_img_s",
    "worker_efficiency",
    "worker_fed_img_s",
    "worker_cpu_efficiency",
    "e2e_img_s",
    "e2e_efficiency",
    "seq_p50_ms",
    "overhead_p50_ms",
    "burst100_s",
    "cache_hit_p50_ms",
    "cold_start_s",
    "lane_ratio",
    "lane_p50_ms",
}


def test_photos_are_distinct_and_the_small_ones_are_64_pixels():
    photos = Photos()
    batch = photos.full(12) + photos.mixed(14)
    assert len({p.sha256 for p in batch}) == len(batch)
    assert Image.open(io.BytesIO(batch[13].data)).size == (64, 64)  # mixed: every second one


def test_quick_run_prints_a_table_and_every_key(tmp_path):
    bench = subprocess.Popen(
        [sys.executable, "-m", "bench", "--quick", "--log-dir", str(tmp_path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stdout, stderr = bench.communicate(timeout=300)
    assert bench.returncode == 0, stderr[-2000:]
    # No web or worker process of the run outlives it (their buckets carry the bench's pid).
    for phase in ("w", "s"):
        assert _processes_with_env(f"INPUT_BUCKET=bench{bench.pid}{phase}-in") == []
    lines = stdout.strip().splitlines()
    result = json.loads(lines[-1])
    assert KEYS <= result.keys()
    assert {"nproc", "cpu_model", "torch"} <= result["machine"].keys()
    assert any(line.startswith("worker_efficiency") for line in lines[:-1])
    # Every upload and queued request was answered, without errors.
    assert result["worker_images"] == 6 and result["worker_errors"] == 0
    assert result["worker_fed"]["images"] == 6 and result["worker_fed"]["errors"] == 0
    assert result["e2e_uploads"] == 6 and result["e2e_errors"] == 0
    assert result["burst_errors"] == 0
    assert result["lane_errors"] == 0 and result["lane_job_images"] == 20
    assert str(result["model_best_batch"]) in result["model_img_s_by_batch"]
    assert {p.name for p in (tmp_path / "service").glob("*.log")} >= {"moto.log", "web.log"}


def _processes_with_env(entry: str) -> list[int]:
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if f"{entry}\0".encode() in environ.read_bytes():
                found.append(int(environ.parent.name))
        except OSError:
            continue
    return found
