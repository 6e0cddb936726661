"""The walk-through in docs/development.md is the path one upload really takes: the real web and
worker processes run under a file tracer (tests/support/file_trace.py) while one photo is
classified, and the project files whose code ran are the ones the walk-through lists."""

from __future__ import annotations

import json
import re
import signal
import sys
from pathlib import Path

import pytest

from tests.conftest import IMAGES, free_port
from tests.http_client import upload
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

WALK_THROUGH = Path(__file__).resolve().parents[1] / "docs" / "development.md"
# The threads that carry an upload; the others (status history, reports, sweeps) run on timers.
CARRIERS = {
    "web": re.compile(r"MainThread|waitress-\d+|reply-dispatcher|cache_\d+"),
    "worker": re.compile(r"MainThread|intake|io_\d+|finish_\d+"),
}
# Generic helpers every tier shares, and the observers that only count the upload.
SET_ASIDE = {
    *(f"runtime/{name}.py" for name in ("sqs", "logs", "failures", "retry", "budget")),
    *(f"runtime/{name}.py" for name in ("pixels", "requests")),
    "web/metrics.py",
    "web/arrivals.py",
    "worker/stats.py",
}


def walk_through() -> tuple[list[str], str]:
    """(the numbered steps' files in order, the text before them) of the doc's upload section."""
    text = WALK_THROUGH.read_text()
    section = text[text.index("## One upload, from") :]
    section = section[: section.index("\n## ", 1)] if "\n## " in section[1:] else section
    intro, _, rest = section.partition("\n1. ")
    steps = re.findall(r"^\d+\. `([\w/]+\.py)`", "1. " + rest, flags=re.M)
    return steps, intro


def traced(service, name: str, module: str, out, extra: dict[str, str]):
    args = [sys.executable, "-m", "tests.support.file_trace", module]
    return service.stack.start(name, args, {"FILE_TRACE_OUT": str(out), **extra})


def test_one_upload_runs_in_the_files_the_walk_through_lists(service_factory, tmp_path):
    service = service_factory()
    port = free_port()
    worker = traced(service, "worker-0", "worker", tmp_path / "worker.json", {"INSTANCE_ID": "t-0"})
    web = traced(service, "web-0", "web", tmp_path / "web.json", {"PORT": str(port)})
    url = f"http://127.0.0.1:{port}"
    # The first upload pays for what runs once (clients, the model's first pass); the traced
    # one is a different photo, so no cache answers it.
    wait_until(
        lambda: upload(url, (IMAGES / "coffee.jpg").read_bytes(), "coffee.jpg").ok,
        "a first answer",
        timeout_s=120,
        ignoring=(OSError,),
    )
    for process in (web, worker):
        process.send_signal(signal.SIGUSR1)
    answer = upload(url, (IMAGES / "chelsea.jpg").read_bytes(), "chelsea.jpg")
    for process in (web, worker):
        process.send_signal(signal.SIGUSR2)
    assert answer.status_code == 200, answer.text
    traces = {
        name: wait_until(
            lambda out=tmp_path / f"{name}.json": out.exists() and json.loads(out.read_text()),
            f"the {name}'s trace",
            ignoring=(ValueError,),
        )
        for name in ("web", "worker")
    }
    ran = {
        path
        for name, threads in traces.items()
        for thread, paths in threads.items()
        if CARRIERS[name].fullmatch(thread)
        for path in paths
        if path.split("/")[0] in ("web", "worker", "runtime")
    }
    steps, intro = walk_through()
    assert len(steps) <= 12, steps  # issue 21: one upload crosses at most 12 files
    assert ran - SET_ASIDE == set(steps), (sorted(ran - SET_ASIDE), steps)
    # What is set aside is said, and so is every set-aside file that ran.
    assert all(path.split("/")[-1] in intro for path in SET_ASIDE & ran), sorted(SET_ASIDE & ran)
