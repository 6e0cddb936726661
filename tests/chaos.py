"""Chaos with the scaler running (issue 11 item 3): the stack, the load, the faults, the counts.

The stack is real: moto behind a TCP proxy (tests/faults.py) that can cut AWS, two web
processes, the scaler with local worker processes. The load comes in bursts with idle gaps; a
chaos thread meanwhile kills workers with -9, stops and terminates fleet instances behind the
scaler's back, kills and restarts the scaler, restarts a web process, cuts AWS and serves a Spot
interruption notice to the running workers from the tests' metadata stand-in (which every worker
watches). Every request is counted until it has its answer, and every batch job until its
CSV is read.
"""

from __future__ import annotations

import csv
import io
import os
import random
import signal
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import requests

from embedded.stack import python_module, wait_http
from scaler.fleet import FLEET_TAG
from tests.conftest import Service, free_port
from tests.faults import OutageProxy
from tests.http_client import upload
from tests.job_client import post_archive, zip_of
from tests.stand_in.imds import MetadataService


@dataclass
class Tally:
    """What the clients saw, per request id."""

    sent: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # id -> (name, bytes)
    answers: dict[str, list[dict]] = field(default_factory=dict)  # id -> 200 bodies
    statuses: Counter = field(default_factory=Counter)  # every HTTP status or error seen
    # Batch jobs: each client's members, and the CSV rows of its job once done (None: never).
    jobs: list[tuple[list[tuple[str, bytes]], list[dict] | None]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, request_id: str, body: dict) -> None:
        with self.lock:
            self.answers.setdefault(request_id, []).append(body)

    def record_job(self, members: list[tuple[str, bytes]], rows: list[dict] | None) -> None:
        with self.lock:
            self.jobs.append((members, rows))

    def job_counts(self, expected: dict[bytes, str]) -> dict[str, int]:
        """Per job: finished (its CSV read), every member one row in order, each row's label the
        model's; rows that failed are counted apart (a failure must still be a row)."""
        unfinished = sum(1 for _, rows in self.jobs if rows is None)
        finished = [(members, rows) for members, rows in self.jobs if rows is not None]
        missing = duplicated = wrong = failed = 0
        for members, rows in finished:
            names = [row["filename"] for row in rows]
            missing += sum(1 for name, _ in members if name not in names)
            duplicated += len(names) - len(set(names))
            by_name = dict(members)
            for row in rows:
                if row["error"]:
                    failed += 1
                elif row["label"] != expected[by_name[row["filename"]]]:
                    wrong += 1
        return {
            "jobs": len(self.jobs),
            "jobs_unfinished": unfinished,
            "job_rows_missing": missing,
            "job_rows_duplicated": duplicated,
            "job_rows_failed": failed,
            "job_wrong_labels": wrong,
        }

    def counts(self, expected: dict[bytes, str]) -> dict[str, int]:
        lost = [i for i in self.sent if not self.answers.get(i)]
        duplicated = [i for i, bodies in self.answers.items() if len(bodies) > 1]
        misdirected = [
            i
            for i, bodies in self.answers.items()
            if any(b["id"] != i or b["filename"] != self.sent[i][0] for b in bodies)
        ]
        wrong = [
            i
            for i, bodies in self.answers.items()
            if any(b["label"] != expected[self.sent[i][1]] for b in bodies)
        ]
        return {
            "requests": len(self.sent),
            "answered": len(self.sent) - len(lost),
            "lost": len(lost),
            "duplicated": len(duplicated),
            "misdirected": len(misdirected),
            "wrong_labels": len(wrong),
        }


class ChaosStack:
    def __init__(self, moto_endpoint: str, log_dir: Path, fleet_max: int = 2, **env: str):
        self.marker = uuid.uuid4().hex[:12]  # in every process's environment: find orphans
        self.proxy = OutageProxy(int(moto_endpoint.rsplit(":", 1)[1]))
        # One metadata service for every local worker: a notice reaches those running at the time.
        self.imds = MetadataService("127.0.0.1", free_port(), "-").start()
        imds_host, imds_port = self.imds._server.server_address[:2]
        self.fleet = f"chaos-{self.marker}"
        self.status_port = free_port()
        self.service = Service(
            moto_endpoint,
            log_dir,
            f"chaos{self.marker[:6]}",
            AWS_ENDPOINT_URL=self.proxy.url,
            CHAOS_MARKER=self.marker,
            FLEET_NAME=self.fleet,
            LAUNCH_TEMPLATE=f"chaos-{self.marker}",
            RUNNER="process",
            FLEET_MAX=str(fleet_max),
            TORCH_THREADS="1",
            SCALER_TICK_S="0.5",
            QUIET_PERIOD_S="6",
            WARM_POOL_MAX="1",
            STOPPED_MAX_AGE_S="20",
            SCALER_STATUS_PORT=str(self.status_port),
            SCALER_STATUS_URL=f"http://127.0.0.1:{self.status_port}/status",
            VISIBILITY_TIMEOUT_S="8",
            MAX_RECEIVE_COUNT="8",
            REPLY_QUEUE_MAX_AGE_S="60",
            INSTANCE_METADATA_URL=f"http://{imds_host}:{imds_port}",
            NOTICE_POLL_S="0.5",
            **env,
        )
        self.ec2 = boto3.client("ec2", endpoint_url=moto_endpoint, region_name="us-east-1")
        self.web_ports: list[int] = []
        self.scaler = None
        self.events: Counter = Counter()

    # The stack -------------------------------------------------------------------------------

    def start(self, webs: int = 2) -> None:
        self.service.provision()
        for _ in range(webs):
            port = free_port()
            self.web_ports.append(port)
            self._start_web(port)
        self.start_scaler()

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.web_ports]

    def _start_web(self, port: int) -> None:
        process = self.service.stack.start(f"web-{port}", python_module("web"), {"PORT": str(port)})
        wait_http(f"http://127.0.0.1:{port}/healthz", 120, process)

    def start_scaler(self) -> None:
        self.scaler = self.service.stack.start("scaler", python_module("scaler"))

    def stop(self) -> None:
        self.service.stop()
        self.proxy.close()
        self.imds.stop()

    # Looking at it ---------------------------------------------------------------------------

    def instances(self, *states: str) -> list[str]:
        filters = [{"Name": f"tag:{FLEET_TAG}", "Values": [self.fleet]}]
        if states:
            filters.append({"Name": "instance-state-name", "Values": list(states)})
        reservations = self.ec2.describe_instances(Filters=filters)["Reservations"]
        return [i["InstanceId"] for r in reservations for i in r["Instances"]]

    def worker_pids(self) -> list[int]:
        """Live worker processes of this run, whoever their parent is (orphans included)."""
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
                environ = (entry / "environ").read_bytes()
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if (
                b"worker" in cmdline
                and f"CHAOS_MARKER={self.marker}".encode() in environ
                and state != "Z"
            ):
                pids.append(int(entry.name))
        return pids

    # The faults ------------------------------------------------------------------------------

    def kill_worker(self, rng: random.Random) -> bool:
        pids = self.worker_pids()
        if not pids:
            return False
        os.kill(rng.choice(pids), signal.SIGKILL)
        return True

    def interrupt_instance(self, rng: random.Random, how: str) -> bool:
        running = self.instances("running")
        if not running:
            return False
        victim = [rng.choice(running)]
        if how == "stop":
            self.ec2.stop_instances(InstanceIds=victim)
        else:
            self.ec2.terminate_instances(InstanceIds=victim)
        return True

    def restart_scaler(self) -> bool:
        self.scaler.send_signal(signal.SIGKILL)
        self.scaler.wait()
        time.sleep(1.0)
        self.start_scaler()
        return True

    def restart_web(self, rng: random.Random) -> bool:
        port = rng.choice(self.web_ports)
        for name, process in self.service.stack.processes:
            if name == f"web-{port}" and process.poll() is None:
                process.send_signal(signal.SIGKILL)
                process.wait()
        self._start_web(port)
        return True

    def spot_notice(self) -> bool:
        """An interruption notice to the workers running now: they drain and leave, the scaler
        replaces their instances."""
        if not self.instances("running"):
            return False
        return self.imds.give_notice() > 0

    def cut_aws(self, seconds: float = 4.0) -> bool:
        self.proxy.outage(seconds)
        return True

    def one_fault(self, rng: random.Random, fault: str) -> bool:
        """Inflict `fault`; False when it could not happen now (no worker or instance running)."""
        done = {
            "kill_worker": lambda: self.kill_worker(rng),
            "stop_instance": lambda: self.interrupt_instance(rng, "stop"),
            "terminate_instance": lambda: self.interrupt_instance(rng, "terminate"),
            "scaler": self.restart_scaler,
            "web": lambda: self.restart_web(rng),
            "aws": self.cut_aws,
            "spot_notice": self.spot_notice,
        }[fault]()
        if done:
            self.events[fault] += 1
        return bool(done)


FAULTS = (
    "kill_worker",
    "stop_instance",
    "terminate_instance",
    "scaler",
    "web",
    "aws",
    "spot_notice",
)


def ask(urls: list[str], request_id: str, name: str, data: bytes, tally: Tally, until: float):
    """One client's request: retried with its own id (on another web, after a pause) until it
    has an answer; a 409 means it is still in progress under that id."""
    attempt = 0
    while time.monotonic() < until:
        url = urls[attempt % len(urls)]
        attempt += 1
        try:
            response = upload(
                url, data, name, accept="application/json", request_id=request_id, timeout=90
            )
        except requests.RequestException as error:
            with tally.lock:
                tally.statuses[type(error).__name__] += 1
            time.sleep(1.0)
            continue
        with tally.lock:
            tally.statuses[response.status_code] += 1
        if response.status_code == 200:
            tally.record(request_id, response.json())
            return
        time.sleep(2.0 if response.status_code in (409, 503, 504) else 0.2)


def ask_job(urls: list[str], members: list[tuple[str, bytes]], tally: Tally, until: float):
    """One batch job's client: post a zip of `members` to any web until one takes it (202), then
    read its progress from any web until it is done, and its CSV."""
    body, attempt, job_id = zip_of(members), 0, None
    while time.monotonic() < until:
        url = urls[attempt % len(urls)]
        attempt += 1
        try:
            if job_id is None:
                response = post_archive(url, body)
                if response.status_code == 202:
                    job_id = response.json()["id"]
            else:
                response = requests.get(f"{url}/jobs/{job_id}", timeout=30)
                if response.status_code == 200 and response.json()["state"] == "done":
                    rows = requests.get(f"{url}/jobs/{job_id}/results.csv", timeout=60)
                    if rows.status_code == 200:
                        tally.record_job(members, list(csv.DictReader(io.StringIO(rows.text))))
                        return
        except requests.RequestException as error:
            with tally.lock:
                tally.statuses[f"job {type(error).__name__}"] += 1
            time.sleep(1.0)
            continue
        with tally.lock:
            tally.statuses[f"job {response.status_code}"] += 1
        time.sleep(1.0)
    tally.record_job(members, None)


def ask_async(urls: list[str], request_id: str, name: str, data: bytes, tally: Tally, until: float):
    """One asynchronous client (Prefer: respond-async): queue the upload under its own id until a
    web process takes it (202), then read GET /results/<id> from any web until it is there."""
    attempt, queued = 0, False
    while time.monotonic() < until:
        url = urls[attempt % len(urls)]
        attempt += 1
        try:
            if not queued:
                response = requests.post(
                    f"{url}/upload",
                    files={"myfile": (name, data, "application/octet-stream")},
                    headers={"Prefer": "respond-async", "X-Request-Id": request_id},
                    timeout=90,
                )
                queued = response.status_code == 202
            else:
                response = requests.get(f"{url}/results/{request_id}", timeout=30)
        except requests.RequestException as error:
            with tally.lock:
                tally.statuses[f"async {type(error).__name__}"] += 1
            time.sleep(1.0)
            continue
        with tally.lock:
            tally.statuses[f"async {response.status_code}"] += 1
        if queued and response.status_code == 200:
            tally.record(request_id, response.json())
            return
        time.sleep(1.0)
