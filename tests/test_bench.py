"""The benchmark harness, run end to end with tiny sizes: it starts, measures, stops, reports.

A smoke test only: it checks that every key is there and that the run's counts add up, never
how fast anything was.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from bench.phones import PhonePhotos, with_comment
from bench.photos import Photos
from tests.conftest import ROOT
from worker.stats import STAGES

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
    "worker_overhead_cpu_ms",
    "worker_overhead_cpu_ms_phone",
    "worker_img_s_phone",
    "worker_cpu_efficiency_phone",
    "e2e_img_s_phone",
    "service_cpu_ms_per_img",
    "stage_cpu_ms",
    "decode_cpu_ms_per_img_phone",
    "lane_ratio",
    "lane_p50_ms",
    "runtime",
    "model_cpu_ms_by_runtime",
    "model_cpu_ms_ratio",
    "top1_agreement",
    "compute_per_1000_images",
}


def test_photos_are_distinct_and_the_small_ones_are_64_pixels():
    photos = Photos()
    batch = photos.full(12) + photos.mixed(14)
    assert len({p.sha256 for p in batch}) == len(batch)
    assert Image.open(io.BytesIO(batch[13].data)).size == (64, 64)  # mixed: every second one


@pytest.mark.e2e  # makes 12 MP photos: seconds of CPU
def test_phone_photos_are_12_megapixel_jpegs_each_upload_distinct(tmp_path):
    phones = PhonePhotos(2, tmp_path)
    batch = phones.take(5)  # more uploads than distinct photos: they cycle
    assert len({p.sha256 for p in batch}) == 5
    for photo in batch:
        with Image.open(io.BytesIO(photo.data)) as image:
            assert image.format == "JPEG" and image.width * image.height >= 12_000_000
    # The cache is reused: a second set made from it has the same photos.
    again = PhonePhotos(2, tmp_path).take(1)[0]
    assert again.data == batch[0].data


def test_a_jpeg_comment_changes_the_bytes_not_the_pixels():
    data = (ROOT / "images" / "chelsea.jpg").read_bytes()
    tagged = with_comment(data, "upload 7")
    assert tagged != data
    with Image.open(io.BytesIO(data)) as a, Image.open(io.BytesIO(tagged)) as b:
        assert a.tobytes() == b.tobytes()


@pytest.mark.e2e  # starts processes
def test_quick_run_prints_a_table_and_every_key(tmp_path):
    bench = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench",
            "--quick",
            "--log-dir",
            str(tmp_path),
            "--phone-cache",
            str(tmp_path / "phones"),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stdout, stderr = bench.communicate(timeout=900)  # a busy shared machine is slow
    assert bench.returncode == 0, stderr[-2000:]
    # No web or worker process of the run outlives it (their buckets carry the bench's pid).
    for phase in ("w", "s"):
        assert _processes_with_env(f"INPUT_BUCKET=bench{bench.pid}{phase}-in") == []
    lines = stdout.strip().splitlines()
    result = json.loads(lines[-1])
    assert KEYS <= result.keys()
    assert {"nproc", "cpu_model", "torch"} <= result["machine"].keys()
    assert any(line.startswith("worker_efficiency") for line in lines[:-1])
    # Every runtime installed was timed, the worker's among them, and PyTorch for the ratio.
    assert {"torch", result["runtime"]} <= result["model_cpu_ms_by_runtime"].keys()
    assert result["model_cpu_ms_ratio"] > 0
    assert result["top1_agreement"] == 1.0
    # CI builds the images first (`make images`): the size each new instance pulls is reported.
    assert os.environ.get("CI") != "true" or result["worker_image_mb"] > 0
    # Every upload and queued request was answered, without errors.
    assert result["worker_images"] == 6 and result["worker_errors"] == 0
    assert result["worker_fed"]["images"] == 6 and result["worker_fed"]["errors"] == 0
    assert result["e2e_uploads"] == 6 and result["e2e_errors"] == 0
    for drain in ("worker_phone_full", "worker_phone_fed"):
        assert result[drain]["images"] == 3 and result[drain]["errors"] == 0
    assert result["e2e_uploads_phone"] == 3 and result["e2e_errors_phone"] == 0
    # The worker reported CPU time for every stage a message goes through.
    assert set(result["stage_cpu_ms"]) == {*STAGES, "other"}
    assert result["stage_cpu_ms"]["model"] > 0 and result["stage_cpu_ms_phone"]["decode"] > 0
    assert result["burst_errors"] == 0
    # The worker's CPU per image, priced on the default worker type (runtime.prices).
    cost = result["compute_per_1000_images"]
    assert cost["instance_type"] == "c6i.large" and 0 < cost["spot"] < cost["on-demand"]
    assert any(line.startswith("compute per 1,000 images") and "$" in line for line in lines)
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


@pytest.mark.e2e  # starts the embedded stack
def test_an_idle_stack_asks_cloudwatch_nothing():
    # `python -m bench.idle`, as docs/deploy.md measures an idle day, over a few seconds.
    done = subprocess.run(
        [sys.executable, "-m", "bench.idle", "6"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    idle = json.loads(done.stdout.strip().splitlines()[-1])
    assert idle["requests"].get("sqs", 0) > 0  # it was measuring: the scaler read its queues
    assert not [k for k in idle["requests"] if k.startswith("cloudwatch")], idle
    assert idle["hosts_usd_per_day"] > idle["requests_usd_per_day"] > 0
