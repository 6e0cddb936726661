"""`python -m bench.idle [SECONDS]`: what an idle `python -m embedded up` stack costs a day.

Starts the stack on free ports, waits past its start, reads the requests `/status` counts (the
scaler's and the web's own; no worker runs) twice SECONDS apart (default 60), and prints them
and their price extrapolated to a day, beside the hosts' (docs/deploy.md, "What an idle day
costs"). Nothing is uploaded.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from runtime.costs import requests_usd
from runtime.prices import DEFAULT_PRICES

SETTLE_S = 10.0  # past the start-up calls (provisioning, queue lookups)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _counts(url: str) -> dict[str, int]:
    with urllib.request.urlopen(url, timeout=30) as reply:  # noqa: S310 - our loopback stack
        return json.loads(reply.read())["cost"]["request_counts"]


def _wait(url: str, process: subprocess.Popen, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        try:
            _counts(url)
            return
        except OSError:
            time.sleep(1)
    raise SystemExit("bench.idle: the stack did not answer /status")


def measure(span_s: float, log_dir: str) -> dict:
    web, aws = _free_port(), _free_port()
    env = {**os.environ, "PORT": str(web), "SCALER_STATUS_PORT": str(_free_port())}
    for key in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        env.pop(key, None)  # the embedded stack sets its own
    command = [sys.executable, "-m", "embedded", "up", "--aws-port", str(aws), "--log-dir", log_dir]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{web}/status"
    try:
        _wait(url, process)
        time.sleep(SETTLE_S)
        before = _counts(url)
        time.sleep(span_s)
        after = _counts(url)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=120)
    sent = {k: n - before.get(k, 0) for k, n in after.items() if n - before.get(k, 0)}
    day = 86400 / span_s
    return {
        "span_s": span_s,
        "requests": sent,
        "per_day": {k: round(n * day) for k, n in sent.items()},
        "requests_usd_per_day": round(requests_usd(sent, DEFAULT_PRICES) * day, 4),
        "hosts_usd_per_day": round(DEFAULT_PRICES.fixed_hourly * 24, 4),
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    span_s = float(argv[0]) if argv else 60.0
    with tempfile.TemporaryDirectory() as log_dir:
        print(json.dumps(measure(span_s, log_dir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
