"""`python -m bench.wake`: how long an idle fleet takes to hear of its first upload.

Starts the embedded stack (`python -m embedded up`: moto, the web tier, the scaler with local
worker processes) on free ports, then, TRIALS times: waits until no worker runs or starts, posts
one photo (async, so the answer does not wait for the worker) and reads the scaler's /status
until a decision starts or launches an instance. The figure is that decision's time (the start
of the tick that acted, and so of its start or launch call) minus the upload's.

`--compose`: the same figure on `docker compose up` (compose.yaml, images already built, as
tests/test_compose_stack.py runs it), read through the web container's /status; each trial is a
fresh stack (up, one upload into its idle fleet, down). `--no-wake` turns the wake off (an
override that empties SCALER_WAKE_TOKEN_FILE): the "before" figure, in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PHOTO = next(
    p for p in sorted((ROOT / "images").iterdir()) if p.suffix.lower() in (".jpg", ".jpeg")
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - our own loopback
        return json.loads(response.read())


def _upload(web: str) -> None:
    boundary = "wakebench"
    body = (
        (
            f"--{boundary}\r\n"
            f"Content-Disposition: form-data; name=myfile; filename={PHOTO.name}\r\n"
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + PHOTO.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(  # noqa: S310 - our own loopback
        f"{web}/upload",
        data=body,
        method="POST",
        headers={
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Prefer": "respond-async",
        },
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        assert response.status == 202, response.status


def _wait(check, what: str, timeout_s: float, every_s: float = 0.02):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            value = check()
        except OSError:
            value = None
        if value:
            return value
        time.sleep(every_s)
    raise SystemExit(f"bench.wake: timed out waiting for {what}")


def _idle(status: dict) -> bool:
    fleet = status.get("fleet", {})
    busy = sum(fleet.get(state, 0) for state in ("running", "pending", "starting", "stopping"))
    queue = status.get("queue", {})
    return busy == 0 and not queue.get("visible") and not queue.get("in_flight")


def _acting(status: dict, after: float) -> dict | None:
    """The first decision after `after` (a tick's start) that starts or launches."""
    for record in status.get("decisions", []):
        actions = record.get("actions") or {}
        if record["at"] > after and (actions.get("launch") or actions.get("start")):
            return record
    return None


_NO_WAKE = """services:
  web: {environment: {SCALER_WAKE_TOKEN_FILE: ""}}
  scaler: {environment: {SCALER_WAKE_TOKEN_FILE: ""}}
"""


def _compose_trial(no_wake: bool) -> tuple[float, str]:
    """One fresh compose stack: up, the first upload into its idle fleet, down."""
    env = {
        **os.environ,
        "WEB_PORT": str(_free_port()),
        "AWS_PORT": str(_free_port()),
        "FLEET_MAX": "1",
    }
    command = ["docker", "compose", "-f", "compose.yaml"]
    if no_wake:
        override = Path(tempfile.mkdtemp(prefix="bench-wake-")) / "no-wake.yaml"
        override.write_text(_NO_WAKE)
        command += ["-f", str(override)]
    web = f"http://127.0.0.1:{env['WEB_PORT']}"

    def compose(*args: str) -> None:
        subprocess.run([*command, *args], cwd=ROOT, env=env, check=True, capture_output=True)

    compose("up", "--detach", "--no-build", "--pull", "never")
    try:
        status = f"{web}/status"
        ready = lambda: (s := _get(status))["scaler"] == "ok" and s["decisions"] and _idle(s)  # noqa: E731
        _wait(ready, "an idle compose fleet", 300, 0.5)
        uploaded = time.time()
        _upload(web)
        record = _wait(lambda: _acting(_get(status), 0.0), "a start or launch", 120)
        return max(0.0, record["at"] - uploaded), record["code"]
    finally:
        compose("down")


def _summary(figures: list[float]) -> dict:
    return {
        "upload_to_start_or_launch_s": [round(f, 2) for f in figures],
        "median_s": round(statistics.median(figures), 2),
        "max_s": round(max(figures), 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.wake", description=__doc__)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--compose", action="store_true", help="on docker compose up")
    parser.add_argument("--no-wake", action="store_true", help="the wake off: the tick decides")
    args = parser.parse_args(argv)
    if args.trials < 1:
        parser.error("--trials must be >= 1")
    if args.compose:
        figures = []
        for trial in range(args.trials):
            figure, code = _compose_trial(args.no_wake)
            figures.append(figure)
            print(f"trial {trial + 1}: {figure:.2f} s ({code})", flush=True)
        print(json.dumps({"wake": not args.no_wake, **_summary(figures)}))
        return 0
    ports = {"PORT": _free_port(), "SCALER_STATUS_PORT": _free_port()}
    aws_port = _free_port()
    log_dir = tempfile.mkdtemp(prefix="bench-wake-")
    env = {**os.environ, **{k: str(v) for k, v in ports.items()}, "FLEET_MAX": "1"}
    if args.no_wake:
        env["SCALER_WAKE_TOKEN_FILE"] = ""
    stack = subprocess.Popen(
        [sys.executable, "-m", "embedded", "up", "--aws-port", str(aws_port), "--log-dir", log_dir],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    web = f"http://127.0.0.1:{ports['PORT']}"
    scaler = f"http://127.0.0.1:{ports['SCALER_STATUS_PORT']}/status"
    figures = []
    last = 0.0  # the last acting decision's time: each trial waits for one after it
    try:
        health = f"{web}/healthz"
        _wait(lambda: urllib.request.urlopen(health, timeout=5), "the web tier", 120, 0.5)  # noqa: S310
        for trial in range(args.trials):
            if trial:  # the last trial's worker runs, then the fleet drains to nothing
                _wait(lambda: not _idle(_get(scaler)), "the last trial's worker", 300, 0.5)
            _wait(lambda: _idle(_get(scaler)), "an idle fleet", 300, 0.5)
            uploaded = time.time()
            _upload(web)
            after = last
            record = _wait(lambda: _acting(_get(scaler), after), "a start or launch", 120)  # noqa: B023
            last = record["at"]
            # A tick that began just before the upload may read the queue just after it.
            figures.append(max(0.0, record["at"] - uploaded))
            print(f"trial {trial + 1}: {figures[-1]:.2f} s ({record['code']})", flush=True)
    finally:
        os.killpg(stack.pid, signal.SIGINT)
        stack.wait(timeout=120)
    print(json.dumps({"wake": not args.no_wake, **_summary(figures)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
