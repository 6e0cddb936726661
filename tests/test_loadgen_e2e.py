"""The load generator against the real service: the course's arguments, scored against labels."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

from tests.conftest import IMAGES, ROOT


def test_loadgen_course_arguments_against_the_service(running_service, tmp_path):
    url = running_service.webs[0] + "/upload"
    result = subprocess.run(
        [
            sys.executable, "-m", "loadgen",
            "--num_request", "30",
            "--url", url,
            "--image_folder", str(IMAGES),
            "--expected", str(IMAGES / "labels.json"),
            "--out", str(tmp_path),
            "--json",
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["requests"] == 30
    assert summary["ok"] == 30 and not summary["errors"]
    assert summary["accuracy"] == {"correct": 30, "scored": 30, "ratio": 1.0}
    with open(tmp_path / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 30 and {row["status"] for row in rows} == {"200"}
    assert (tmp_path / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # What the run cost, from /status before and after: here only the web's requests are
    # counted (no scaler, so no images answered by a fleet it knows of).
    cost = summary["cost"]
    assert cost["currency"] == "USD" and cost["requests"] > 0 and cost["images"] == 0
    assert cost["per_1000_images"] is None
