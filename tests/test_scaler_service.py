"""The scaler end to end: queues and EC2 in moto over HTTP, real worker processes, real HTTP."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import boto3
import pytest
from botocore.config import Config

from runtime.cloudwatch import publish_throughput, read_throughput
from runtime.requests import RequestCounter
from runtime.retry import Backoff
from runtime.settings import Settings
from scaler.fleet import Fleet
from scaler.gauges import QueueGauge, Throughput, ThroughputGauge
from scaler.runners.process import ProcessRunner
from scaler.service import Scaler, ScalerConfig, build_scaler
from scaler.status import StatusServer
from tests.conftest import free_port
from tests.support.clock import Clock
from tests.support.fleet import fleet_states, provisioned, send
from tests.support.stand_in_worker import STAND_IN, marks
from tests.support.waiting import wait_until


@pytest.fixture
def settings(aws_client):
    return provisioned(
        aws_client,
        "s",
        policy="target",  # these tests pin target's rules; the drain tests set their own
        fleet_max=3,
        default_throughput_img_s=1.0,  # 5 s x 1 img/s: 5 messages per instance
        quiet_period_s=0.0,
        warm_pool_max=1,
    )


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as reply:  # noqa: S310 - loopback test URL
        assert reply.headers["Content-Type"] == "application/json"
        return json.loads(reply.read())


def test_tick_moves_the_fleet_and_its_workers_from_zero_to_n_and_back(
    settings, aws_client, tmp_path
):
    ec2, sqs = aws_client("ec2"), aws_client("sqs")
    script, out = tmp_path / "stand_in.py", tmp_path / "out"
    script.write_text(STAND_IN)
    out.mkdir()
    runner = ProcessRunner(dict(os.environ), [sys.executable, str(script), str(out), "drain"])
    scaler = build_scaler(
        settings, ec2=ec2, sqs=sqs, cloudwatch=aws_client("cloudwatch"), runner=runner
    )
    server = StatusServer(scaler.status).start()
    status_url = f"http://127.0.0.1:{server.port}/status"
    try:
        scaler.tick()
        assert fleet_states(ec2, settings) == []

        url = send(sqs, settings, 30)  # 30 / 5 per instance = 6, capped at 3
        scaler.tick()
        assert fleet_states(ec2, settings) == ["running"] * 3
        workers = runner.workers()
        assert len(workers) == 3
        scaler.tick()
        assert runner.workers() == workers  # no second herd, no second worker per instance

        status = get_json(status_url)
        assert status["queue"] == {
            "visible": 30,
            "in_flight": 0,
            "dlq": 0,
            "jobs_visible": 0,
            "jobs_in_flight": 0,
        }
        # The stand-in workers never tag themselves ready: all three are still "starting".
        fleet = {"pending": 0, "running": 3, "stopping": 0, "stopped": 0, "starting": 3}
        assert status["fleet"] == fleet
        assert status["limits"] == {"min": 0, "max": settings.fleet_max}
        assert status["policy"] == "target"
        assert status["throughput_img_s"] == 1.0
        assert any(d["actions"]["launch"] == 3 for d in status["decisions"])
        assert any("launch=3" in d["text"] for d in status["decisions"])

        sqs.purge_queue(QueueUrl=url)
        scaler.tick()  # stops all three: their workers drain
        assert runner.workers() == {}
        scaler.tick()  # only warm_pool_max = 1 stays stopped
        assert fleet_states(ec2, settings) == ["stopped"]
        for iid in workers:
            wait_until(lambda iid=iid: marks(out, iid, "drained"), f"{iid} drained")
        status = get_json(status_url)
        assert status["fleet"]["stopped"] == 1 and status["fleet"]["running"] == 0
        assert any(
            d["actions"]["terminate"] and not d["actions"]["stop"] for d in status["decisions"]
        )

        send(sqs, settings, 3)
        scaler.tick()  # the warm instance comes back before anything is launched
        assert fleet_states(ec2, settings) == ["running"]
        assert set(runner.workers()) <= set(workers) and len(runner.workers()) == 1
    finally:
        server.close()
        runner.close()


def test_scale_in_waits_for_the_quiet_period(settings, aws_client):
    ec2, sqs = aws_client("ec2"), aws_client("sqs")
    clock = Clock(0.0)
    config = ScalerConfig.from_settings(settings)
    config = ScalerConfig(config.policy, config.limits, 5.0, 30.0, config.pool)
    scaler = Scaler(
        config,
        fleet=Fleet(ec2, settings.fleet_name, settings.launch_template),
        queue=QueueGauge(sqs, settings.request_queue, settings.dead_letter_queue),
        throughput=ThroughputGauge(aws_client("cloudwatch"), settings.fleet_name, 1.0),
        clock=clock,
    )
    url = send(sqs, settings, 12)
    scaler.tick()
    assert fleet_states(ec2, settings) == ["running"] * 3
    sqs.purge_queue(QueueUrl=url)
    for clock.now in (2.0, 20.0, 29.0):
        scaler.tick()
        assert fleet_states(ec2, settings) == ["running"] * 3
    clock.now = 31.0
    scaler.tick()
    assert fleet_states(ec2, settings) == ["stopped"] * 3


def test_unreadable_queue_leaves_the_fleet_as_it_is(settings, aws_client):
    ec2 = aws_client("ec2")
    fleet = Fleet(ec2, settings.fleet_name, settings.launch_template)
    send(aws_client("sqs"), settings, 30)
    scaler = build_scaler(
        settings, ec2=ec2, sqs=aws_client("sqs"), cloudwatch=aws_client("cloudwatch")
    )
    scaler.tick()
    assert fleet_states(ec2, settings) == ["running"] * 3

    # Nothing listens on a fresh free port: every SQS call fails to connect.
    dead = boto3.client(
        "sqs",
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}),
    )
    blind = Scaler(
        ScalerConfig.from_settings(settings),
        fleet=fleet,
        queue=QueueGauge(
            dead,
            settings.request_queue,
            settings.dead_letter_queue,
            backoff=Backoff(attempts=2, base_s=0.01),
        ),
        throughput=ThroughputGauge(aws_client("cloudwatch"), settings.fleet_name, 1.0),
    )
    blind.tick()
    assert fleet_states(ec2, settings) == ["running"] * 3
    status = blind.status()
    assert status["fleet"]["running"] == 3
    last = status["decisions"][-1]
    assert (last["ok"], last["code"]) == (False, "sqs-error")
    assert "queue unreadable" in last["reason"] and "fleet stays as it is" in last["text"]


class FlakyThroughput:
    """A throughput gauge whose first reading is a bug (a ValueError), then the default."""

    def __init__(self):
        self.reads = 0

    def read(self) -> Throughput:
        self.reads += 1
        if self.reads == 1:
            raise ValueError("throughput is not a number")
        return Throughput(1.0, measured=False)


class GarbledQueue:
    """SQS that answers, but with a depth that is not a count."""

    def get_queue_url(self, QueueName):  # noqa: N803 - boto3's spelling
        return {"QueueUrl": f"http://sqs/000/{QueueName}"}

    def get_queue_attributes(self, QueueUrl, AttributeNames):  # noqa: N803
        return {"Attributes": dict.fromkeys(AttributeNames, "lots")}


def test_scaler_survives_a_bad_metric_and_scales_on_the_next_tick(settings, aws_client, caplog):
    ec2, sqs = aws_client("ec2"), aws_client("sqs")
    fleet = Fleet(ec2, settings.fleet_name, settings.launch_template)
    send(sqs, settings, 30)
    garbled = Scaler(
        ScalerConfig.from_settings(settings),
        fleet=fleet,
        queue=QueueGauge(GarbledQueue(), settings.request_queue, settings.dead_letter_queue),
        throughput=FlakyThroughput(),
    )
    garbled.tick()
    assert fleet_states(ec2, settings) == []
    garbled_last = garbled.status()["decisions"][-1]
    assert (garbled_last["ok"], garbled_last["code"]) == (False, "sqs-error")
    assert "queue unreadable (QueueAttributeError: " in garbled_last["text"]

    flaky = FlakyThroughput()
    scaler = Scaler(
        ScalerConfig.from_settings(settings),
        fleet=fleet,
        queue=QueueGauge(sqs, settings.request_queue, settings.dead_letter_queue),
        throughput=flaky,
    )
    with caplog.at_level(logging.ERROR, logger="scaler.service"):
        scaler.tick()  # the ValueError is logged, not raised
    assert fleet_states(ec2, settings) == []
    last = scaler.status()["decisions"][-1]
    assert (last["ok"], last["code"]) == (False, "tick-error")
    assert "tick failed (ValueError: throughput is not a number)" in last["text"]
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.exc_info[0] is ValueError  # the traceback, once
    scaler.tick()
    assert flaky.reads == 2
    assert fleet_states(ec2, settings) == ["running"] * 3


def test_measured_throughput_replaces_the_default(settings, aws_client):
    cloudwatch = aws_client("cloudwatch")
    gauge = ThroughputGauge(cloudwatch, settings.fleet_name, 7.0, refresh_s=0.0)
    assert (gauge.read().img_s, gauge.read().measured) == (7.0, False)
    assert read_throughput(cloudwatch, settings.fleet_name) is None
    publish_throughput(cloudwatch, settings.fleet_name, 12.0)
    publish_throughput(cloudwatch, settings.fleet_name, 18.0)
    publish_throughput(cloudwatch, settings.fleet_name, 0.0)  # idle workers report nothing
    publish_throughput(cloudwatch, f"{settings.fleet_name}-other", 1000.0)
    assert read_throughput(cloudwatch, settings.fleet_name) == pytest.approx(15.0)
    reading = gauge.read()
    assert reading.measured and reading.img_s == pytest.approx(15.0)


def test_status_server_answers_only_status():
    server = StatusServer(lambda: {"ok": True}).start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        assert get_json(f"{base}/status") == {"ok": True}
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(f"{base}/other", timeout=10)  # noqa: S310
        assert error.value.code == 404
    finally:
        server.close()


def test_a_stalled_reader_does_not_block_the_status_of_others():
    """Issue 26: one socket that never sends its request held the single-threaded server, and
    every web process then reported the scaler unreachable."""
    server = StatusServer(lambda: {"ok": True}).start()
    stalled = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(3)]
    try:
        stalled[0].sendall(b"GET /sta")  # half a request line, then nothing
        assert get_json(f"http://127.0.0.1:{server.port}/status") == {"ok": True}
    finally:
        for sock in stalled:
            sock.close()
        server.close()


@contextlib.contextmanager
def scaler_process(settings: Settings, port: int, **env: str):
    """`python -m scaler` for these settings, its status on `port`; killed if a test fails."""
    process = subprocess.Popen(
        [sys.executable, "-m", "scaler"],
        env={
            **os.environ,  # the moto endpoint and placeholder credentials, from the fixture
            "REQUEST_QUEUE": settings.request_queue,
            "FLEET_NAME": settings.fleet_name,
            "LAUNCH_TEMPLATE": settings.launch_template,
            "SCALER_TICK_S": "0.2",
            "SCALER_STATUS_PORT": str(port),
            "POLICY": settings.policy,
            **env,
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def status_or_none(port: int) -> dict | None:
    try:
        return get_json(f"http://127.0.0.1:{port}/status")
    except OSError:
        return None


def stop(process) -> str:
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    return output


def test_python_m_scaler_serves_status_and_stops_on_sigterm(settings, aws_client, moto_endpoint):
    port = free_port()
    send(aws_client("sqs"), settings, 5)
    with scaler_process(settings, port, FLEET_MAX="2", RUNNER="none") as process:

        def running_status():
            status = status_or_none(port)
            return status if status and status["fleet"]["running"] == 1 else None

        status = wait_until(running_status, "the scaler to launch one instance", 60)
        assert status["queue"]["visible"] == 5
        assert status["decisions"]
        output = stop(process)
    assert "decision policy=target" in output


@pytest.mark.e2e  # starts processes
def test_help_lists_the_scaler_settings():
    done = subprocess.run(
        [sys.executable, "-m", "scaler", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0
    for name in ("POLICY", "FLEET_MAX", "QUIET_PERIOD_S", "SCALER_STATUS_PORT", "RUNNER"):
        assert name in done.stdout


@pytest.mark.e2e  # starts processes
def test_bad_configuration_fails_with_one_line():
    env = {**os.environ, "POLICY": "fastest"}
    done = subprocess.run(
        [sys.executable, "-m", "scaler"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "POLICY" in done.stderr


def test_python_m_scaler_with_a_local_runner_makes_the_launch_template(settings, aws_client):
    port, template = free_port(), f"{settings.launch_template}-fresh"
    # The request queue is empty: no worker is started.
    with scaler_process(settings, port, LAUNCH_TEMPLATE=template, RUNNER="process") as process:
        status = wait_until(lambda: status_or_none(port), "the scaler's status", 60)
        assert status["fleet"]["running"] == 0
        found = aws_client("ec2").describe_launch_templates(LaunchTemplateNames=[template])
        assert len(found["LaunchTemplates"]) == 1
        stop(process)


def _send(sqs, queue: str, count: int) -> None:
    url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
    for start in range(0, count, 10):
        entries = [{"Id": str(k), "MessageBody": "{}"} for k in range(min(10, count - start))]
        sqs.send_message_batch(QueueUrl=url, Entries=entries)


def _running(ec2, settings: Settings) -> int:
    return sum(1 for s in fleet_states(ec2, settings) if s in ("pending", "running"))


def test_scaler_sizes_the_fleet_from_both_lanes(settings, aws_client):
    """A big job grows the fleet to the job lane's maximum; interactive work on top grows it on."""
    settings = dataclasses.replace(settings, fleet_max=6, job_fleet_max=2)
    ec2, sqs = aws_client("ec2"), aws_client("sqs")
    scaler = build_scaler(settings, ec2=ec2, sqs=sqs, cloudwatch=aws_client("cloudwatch"))
    _send(sqs, settings.job_queue, 200)  # 200 / 5 per instance = 40, capped at the lane's 2
    scaler.tick()
    assert _running(ec2, settings) == 2
    assert scaler.status()["queue"]["jobs_visible"] == 200
    _send(sqs, settings.request_queue, 10)  # 10 interactive = 2 more instances
    scaler.tick()
    assert _running(ec2, settings) == 4


def test_an_idle_scaler_asks_cloudwatch_nothing_and_reads_the_dlq_seldom(settings, aws_client):
    counter = RequestCounter()
    ec2, sqs, cloudwatch = (counter.attach(aws_client(s)) for s in ("ec2", "sqs", "cloudwatch"))
    scaler = build_scaler(settings, ec2=ec2, sqs=sqs, cloudwatch=cloudwatch, requests=counter)
    for _ in range(5):
        scaler.tick()  # nothing queued, nothing running
    sent = counter.counts()
    assert not [op for service, op in sent if service == "cloudwatch"], sent
    # Each tick reads the request and job queues; the dead-letter queue once (DLQ_REFRESH_S).
    assert sent[("sqs", "GetQueueAttributes")] == 5 * 2 + 1
    assert scaler.status()["fleet"]["running"] == 0
    send(sqs, settings, 5)  # work arrives: the arrival rate and throughput are read again
    scaler.tick()
    assert counter.counts().get(("cloudwatch", "GetMetricStatistics"), 0) >= 1
