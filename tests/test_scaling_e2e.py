"""`make up`'s stack for real (python -m embedded up): the fleet follows a burst 0 -> 2 -> 0.

The default policy (drain) sees the web tier's upload counts through CloudWatch and takes the
fleet to zero once nothing has waited for IDLE_DELAY_S.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest
import requests

from embedded.stack import PLACEHOLDER_CREDENTIALS, wait_http
from runtime.cloudwatch import read_arrivals
from runtime.costs import MINIMUM_BILLED_S
from runtime.settings import Settings
from tests.conftest import ROOT, free_port
from tests.http_client import stem, stem_and_label, upload, variants
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e  # starts processes (or containers)

IDLE_DELAY_S = 2.0
TICK_S = 0.5


@pytest.fixture
def embedded(tmp_path):
    aws_port, web_port, status_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "PORT": str(web_port),
        "FLEET_MAX": "2",
        "IDLE_DELAY_S": str(IDLE_DELAY_S),
        "SCALER_TICK_S": str(TICK_S),
        "SCALER_STATUS_PORT": str(status_port),
        "RECEIVE_WAIT_S": "2",
        "WARM_POOL_MAX": "2",
    }
    for key in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        env.pop(key, None)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "embedded",
            "up",
            "--aws-port",
            str(aws_port),
            "--log-dir",
            str(tmp_path),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{web_port}"
    wait_http(f"{url}/healthz", 90, process)

    def client(service: str):
        return boto3.client(
            service,
            endpoint_url=f"http://127.0.0.1:{aws_port}",
            region_name="us-east-1",
            aws_access_key_id=PLACEHOLDER_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=PLACEHOLDER_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )

    yield {
        "url": url,
        "process": process,
        "ports": (aws_port, web_port, status_port),
        "ec2": client("ec2"),
        "cloudwatch": client("cloudwatch"),
    }
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=120)


def _fleet(url: str) -> dict:
    # Generous: on a loaded machine /status (SQS counts plus the scaler's) can take seconds.
    return requests.get(f"{url}/status", timeout=30).json()


class FleetWatch:
    """Polls /status in the background and keeps what it saw."""

    def __init__(self, url: str):
        self.url, self.samples, self._stop = url, [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(0.25):
            try:
                status = _fleet(self.url)
            except requests.RequestException:
                continue
            self.samples.append((time.monotonic(), status))

    def stop(self):
        self._stop.set()
        self._thread.join()


def _burst(url: str, images):
    with ThreadPoolExecutor(max_workers=len(images)) as pool:
        return list(pool.map(lambda item: upload(url, item[1], item[0]), images))


def test_burst_takes_fleet_from_zero_to_max_and_back(embedded, tmp_path):
    url = embedded["url"]
    assert _fleet(url)["fleet"]["running"] == 0
    watch = FleetWatch(url)
    images = variants(100)
    answers = _burst(url, images)
    drained_at = time.monotonic()
    for (name, _), response in zip(images, answers, strict=True):
        assert response.status_code == 200, response.text
        assert stem_and_label(response.text)[0] == stem(name)
    # The workers' rate, measured from this burst's work (their usage tags), not the default;
    # CloudWatch's one-a-minute reading carries no worker count.
    rate = wait_until(
        lambda: (r := _fleet(url)["estimates"]["throughput_img_s"])["samples"] >= 1 and r,
        "a throughput measured from the workers' usage tags",
        30,
    )
    print("throughput after the burst:", rate)
    assert rate["source"] == "measured" and 0 < rate["value"] < 10_000, rate
    # Back to zero running once the workers' paid minute (EC2 bills each start at least 60 s)
    # and the idle delay are over, with generous slack for a busy machine.
    deadline = drained_at + MINIMUM_BILLED_S + IDLE_DELAY_S + 30.0
    while time.monotonic() < deadline and _fleet(url)["fleet"]["running"] > 0:
        time.sleep(0.2)
    idle = _fleet(url)
    watch.stop()
    assert idle["fleet"]["running"] == 0, idle
    peak = max(
        status["fleet"]["running"] + status["fleet"]["pending"] for _, status in watch.samples
    )
    assert peak == 2
    assert idle["policy"] == "drain"
    # The dashboard's list of workers: each running one says which model version it serves,
    # from the tag its worker process wrote on its (moto) instance.
    shown = {w["id"]: w["models"] for _, status in watch.samples for w in status["workers"]}
    served = [models for models in shown.values() if models]
    assert served and all(iid.startswith("i-") for iid in shown), shown
    assert all([m["name"] for m in models] == [idle["model"]] for models in served), shown
    assert all(models[0]["version"] not in ("", "?") for models in served), shown
    decisions = idle["decisions"]
    # In order: the fleet grew on a projection, and the last decision took it to zero because
    # nothing had waited for the idle delay (measured by the scaler from its last busy tick).
    grew = next(i for i, d in enumerate(decisions) if d["actions"] and d["actions"]["launch"])
    # A projection, or (when the burst's first second arrives faster than the whole fleet could
    # answer) "overloaded": the most either way.
    assert decisions[grew]["code"] in ("drain-projection", "overloaded"), decisions[grew]
    assert decisions[grew]["desired"] == 2
    # The decision that stopped the last workers: nothing waiting for the idle delay (the
    # scaler counts from its last tick that saw work waiting) and their paid minute used up.
    stopped = [i for i, d in enumerate(decisions) if d["actions"] and d["actions"]["stop"]]
    last = decisions[stopped[-1]]
    assert stopped[-1] > grew
    assert (last["code"], last["desired"], last["inputs"]["visible"]) == ("idle", 0, 0), last
    assert IDLE_DELAY_S <= last["inputs"]["idle_s"] <= MINIMUM_BILLED_S + 10 * TICK_S, last
    assert last["facts"]["paid"] == 0 and not any(last["inputs"]["paid_left_s"]), last
    assert all(d["desired"] == 0 for d in decisions[stopped[-1] :])
    # The decision that stopped them planned with the measured rate, and its line says so.
    planned = last["estimates"]["throughput_img_s"]
    assert planned["source"] == "measured" and planned["samples"] >= 1, last
    assert f"throughput={planned['value']:.1f}(measured)" in last["text"], last
    # Remembered as make up remembers it: in the run directory's estimates.json.
    kept = wait_until(
        lambda: (
            (tmp_path / "estimates.json").is_file()
            and json.loads((tmp_path / "estimates.json").read_text())["throughput_img_s"]
        ),
        "the measured throughput kept in the run directory",
        30,
    )
    assert kept.get(idle["model"], 0) > 0, kept
    # The web tier counted every accepted upload for the scaler's arrival rate.
    counts = read_arrivals(embedded["cloudwatch"], Settings().fleet_name, 600)
    assert sum(n for _, n in counts) == len(images)
    # No decision between the growth and the stop shrank the fleet to zero while work waited.
    assert all(d["desired"] > 0 for d in decisions[grew:] if d["inputs"]["visible"] > 0)
    # What it cost: the stopped workers' last usage tags carry every image they answered.
    cost = wait_until(
        lambda: (c := _fleet(url)["cost"])["images"] == len(images) and c,
        "the workers' usage in /status",
        30,
    )
    print("cost of the burst:", cost)
    assert cost["currency"] == "USD" and cost["fixed"] > 0
    assert cost["compute"] >= 2 * 60 * 0.0416 / 3600 * 0.999  # two runs, a paid minute each
    counts = cost["request_counts"]
    assert counts["s3-put"] >= 2 * len(images)  # the uploads and the results, at least
    parts = cost["compute"] + cost["requests"]
    assert cost["per_1000_images"] == pytest.approx(parts * 1000 / len(images), rel=1e-3)


def test_stopping_a_busy_instance_loses_no_request(embedded):
    url, ec2 = embedded["url"], embedded["ec2"]
    # Enough work that the first worker is still busy when it is stopped, however fast it is.
    images = variants(240)
    with ThreadPoolExecutor(max_workers=60) as pool:
        futures = [pool.submit(upload, url, data, name) for name, data in images]

        def busy_instance() -> str | None:
            # The event the test names: a running instance while requests are in flight.
            if _fleet(url)["queue"]["in_flight"] <= 0:
                return None
            running = ec2.describe_instances(
                Filters=[{"Name": "instance-state-name", "Values": ["running"]}]
            )["Reservations"]
            return running[0]["Instances"][0]["InstanceId"] if running else None

        victim = wait_until(busy_instance, "a running instance with requests in flight", 120, 0.1)
        ec2.stop_instances(InstanceIds=[victim])
        answers = [future.result() for future in futures]
    for (name, _), response in zip(images, answers, strict=True):
        assert response.status_code == 200, response.text
        assert stem_and_label(response.text)[0] == stem(name)


def test_ctrl_c_stops_everything(embedded):
    process = embedded["process"]
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=120) == 0
    for port in embedded["ports"]:
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still listening"
