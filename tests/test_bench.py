"""The benchmark harness, run end to end with tiny sizes: it starts, measures, stops, reports.

A smoke test only: it checks that every key is there and that the run's counts add up, never
how fast anything was.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys

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
    "e2e_img_s",
    "e2e_efficiency",
    "seq_p50_ms",
    "overhead_p50_ms",
    "burst100_s",
    "cache_hit_p50_ms",
    "cold_start_s",
}


def test_photos_are_distinct_and_the_small_ones_are_64_pixels():
    photos = Photos()
    batch = photos.full(12) + photos.small(12) + photos.mixed(4)
    assert len({p.sha256 for p in batch}) == len(batch)
    assert Image.open(io.BytesIO(batch[12].data)).size == (64, 64)


def test_quick_run_prints_a_table_and_every_key(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--log-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    assert KEYS <= result.keys()
    assert {"nproc", "cpu_model", "torch"} <= result["machine"].keys()
    assert any(line.startswith("worker_efficiency") for line in lines[:-1])
    # Every upload and queued request was answered, without errors.
    assert result["worker_images"] == 6 and result["worker_errors"] == 0
    assert result["e2e_uploads"] == 6 and result["e2e_errors"] == 0
    assert result["burst_errors"] == 0
    assert (
        result["model_best_batch"] in result["model_img_s_by_batch"]
        or str(result["model_best_batch"]) in result["model_img_s_by_batch"]
    )
    assert not list((tmp_path / "worker").glob("*.log")) == []
