"""The drain policy's live inputs and one live 0 -> N -> 0, against moto over HTTP.

The web tier's per-second upload counts go through CloudWatch to the scaler's arrival rates;
instances' states and start times give their ready times; the stopped ones are the warm pool.
"""

from __future__ import annotations

import time

import pytest

from runtime.cloudwatch import publish_arrivals
from runtime.readiness import announce_ready
from runtime.settings import Settings
from scaler.arrivals import ArrivalGauge, last_arrival_at, lesser_window_rate
from scaler.fleet import Fleet
from scaler.gauges import QueueGauge, ThroughputGauge
from scaler.plan import Instance
from scaler.service import Scaler, ScalerConfig
from tests.support.clock import Clock
from tests.support.fleet import fleet_states, provisioned, send
from web.arrivals import ArrivalCounter


@pytest.fixture
def settings(aws_client):
    return provisioned(
        aws_client, "d", policy="drain", fleet_max=4, warm_pool_max=2, idle_delay_s=2.0
    )


@pytest.mark.parametrize(
    ("counts", "end", "window", "rate"),
    [
        ([(9.0, 5), (10.0, 5)], 10.0, 1.0, 5.0),
        ([(10.0, 100)], 10.0, 1.0, 0.0),  # a burst fills one window only
        ([(9.0, 2), (10.0, 8)], 10.0, 1.0, 2.0),  # the lesser window
        ([(11.0, 50), (9.0, 4), (10.0, 4)], 10.0, 1.0, 4.0),  # later than end: not counted
        ([(float(t), 1) for t in range(60)], 59.0, 30.0, 1.0),
        ([], 10.0, 1.0, 0.0),
    ],
)
def test_lesser_window_rate(counts, end, window, rate):
    assert lesser_window_rate(counts, end, window) == pytest.approx(rate)


@pytest.mark.parametrize(
    ("counts", "end", "last_at"),
    [
        ([(8.0, 2), (9.0, 1)], 10.0, 10.0),  # an upload in second 9 came by 10 at the latest
        ([(8.0, 2), (11.0, 4)], 10.0, 9.0),  # second 11 is not complete yet: not counted
        ([(8.0, 0)], 10.0, None),
        ([], 10.0, None),
    ],
)
def test_last_arrival_is_the_end_of_the_latest_counted_second(counts, end, last_at):
    assert last_arrival_at(counts, end) == last_at


def test_web_counts_reach_the_scaler_as_rates(settings, aws_client):
    cloudwatch = aws_client("cloudwatch")
    now = float(int(time.time()))
    clock = Clock(now - 70)
    counter = ArrivalCounter(cloudwatch, settings.fleet_name, clock=clock)
    # 5 uploads a second for 70 seconds, counted as the web tier counts them.
    while clock.now < now:
        counter.add(5)
        clock.now += 1.0
        counter.flush()
    gauge = ArrivalGauge(cloudwatch, settings.fleet_name, 1.0, clock=lambda: now + 0.5)
    reading = gauge.read()
    assert reading.measured
    assert (reading.rate_img_s, reading.steady_img_s) == (pytest.approx(5.0), pytest.approx(5.0))
    assert reading.last_at == now  # the last second counted, now - 1, ended at now
    # Another fleet's counts are not ours.
    other = ArrivalGauge(cloudwatch, f"{settings.fleet_name}-x", 1.0, clock=lambda: now + 0.5)
    assert other.read().rate_img_s == 0.0


def test_a_burst_reads_as_no_rate(settings, aws_client):
    cloudwatch = aws_client("cloudwatch")
    now = float(int(time.time()))
    publish_arrivals(cloudwatch, settings.fleet_name, {int(now) - 1: 100})
    gauge = ArrivalGauge(cloudwatch, settings.fleet_name, 1.0, clock=lambda: now + 0.5)
    assert gauge.read().rate_img_s == 0.0


def test_the_counter_keeps_the_current_second_and_failed_publishes():
    class Failing:
        calls = 0

        def put_metric_data(self, **_):
            self.calls += 1
            raise ConnectionError("down")

    clock, cloudwatch = Clock(100.2), Failing()
    counter = ArrivalCounter(cloudwatch, "fleet", clock=clock)
    counter.add()
    counter.flush()
    assert cloudwatch.calls == 0  # second 100 is still being counted
    clock.now = 101.0
    with pytest.raises(ConnectionError):
        counter.flush()
    with pytest.raises(ConnectionError):
        counter.flush()  # kept, tried again
    assert cloudwatch.calls == 2


def test_ready_times_come_from_state_and_start():
    config = ScalerConfig.from_settings(Settings(expected_boot_new_s=40, expected_boot_start_s=10))
    assert config.ready_in_s(Instance("a", "running", 0.0), 100.0) == 0.0
    assert config.ready_in_s(Instance("b", "pending", 90.0), 100.0) == 30.0
    assert config.ready_in_s(Instance("c", "pending", 95.0, restarted=True), 100.0) == 5.0
    assert config.ready_in_s(Instance("d", "pending", 0.0), 100.0) == 0.0  # late: any moment


def live_scaler(settings, aws_client) -> tuple[Scaler, Clock]:
    """The drain scaler on moto, with a clock the test moves."""
    ec2, sqs, cloudwatch = aws_client("ec2"), aws_client("sqs"), aws_client("cloudwatch")
    clock = Clock(float(int(time.time())))  # EC2's launch times: the paid minute is real
    scaler = Scaler(
        ScalerConfig.from_settings(settings),
        fleet=Fleet(ec2, settings.fleet_name, settings.launch_template, clock=clock),
        queue=QueueGauge(sqs, settings.request_queue, settings.dead_letter_queue),
        throughput=ThroughputGauge(cloudwatch, settings.fleet_name, 10.0),
        arrivals=ArrivalGauge(cloudwatch, settings.fleet_name, 1.0, clock=clock),
        clock=clock,
    )
    return scaler, clock


def test_a_counted_upload_keeps_the_worker_that_took_it(settings, aws_client):
    """The worker took the upload as it came, so the queue is empty at the tick; the web tier's
    count of it restarts the idle clock, and the worker stays until nothing has arrived for the
    idle delay."""
    ec2, sqs, cloudwatch = aws_client("ec2"), aws_client("sqs"), aws_client("cloudwatch")
    scaler, clock = live_scaler(settings, aws_client)
    url = send(sqs, settings, 5)
    scaler.tick()
    assert fleet_states(ec2, settings) == ["running"]
    sqs.purge_queue(QueueUrl=url)
    clock.now += 61.0  # past the paid minute: only the idle clock keeps it now
    publish_arrivals(cloudwatch, settings.fleet_name, {int(clock.now) - 2: 1})
    scaler.tick()
    kept = scaler.status()["decisions"][-1]
    assert fleet_states(ec2, settings) == ["running"], kept
    assert kept["code"] == "keep-up" and kept["inputs"]["idle_s"] == pytest.approx(1.0)
    clock.now += 4.0  # nothing more arrived: idle for longer than the 2 s delay
    scaler.tick()
    assert fleet_states(ec2, settings) == ["stopped"]
    assert scaler.status()["decisions"][-1]["code"] == "idle"


def test_drain_takes_the_fleet_to_n_and_back_to_zero_with_structured_decisions(
    settings, aws_client
):
    ec2, sqs = aws_client("ec2"), aws_client("sqs")
    scaler, clock = live_scaler(settings, aws_client)
    url = send(sqs, settings, 40)  # four batches: four instances clear it in one round
    scaler.tick()
    assert fleet_states(ec2, settings) == ["running"] * 4
    grow = scaler.status()["decisions"][-1]
    assert (grow["code"], grow["desired"], grow["ok"]) == ("drain-projection", 4, True)
    assert grow["inputs"]["visible"] == 40 and grow["inputs"]["capacity"] == 0
    assert grow["actions"]["launch"] == 4 and grow["facts"]["launches"] == 4

    sqs.purge_queue(QueueUrl=url)  # the workers took everything
    clock.now += 1.0
    scaler.tick()  # nothing waits, but all four are inside EC2's paid minute: all stay
    assert fleet_states(ec2, settings) == ["running"] * 4
    kept = scaler.status()["decisions"][-1]
    assert all(57.0 <= left <= 60.0 for left in kept["inputs"]["paid_left_s"])
    assert kept["facts"]["paid"] == 4 and len(kept["inputs"]["paid_left_s"]) == 4
    clock.now += 1.0
    scaler.tick()  # idle for the delay, still paid for: kept until the paid time runs out
    assert fleet_states(ec2, settings) == ["running"] * 4
    clock.now += 58.0
    scaler.tick()  # the paid minute is up and nothing arrives: to zero
    assert fleet_states(ec2, settings) == ["stopped"] * 4
    codes = [d["code"] for d in scaler.status()["decisions"]]
    assert codes[-2:] == ["keep-up", "idle"]  # a decision is listed when it changes
    clock.now += 2.0
    scaler.tick()  # stopped beyond the warm pool: terminated
    assert fleet_states(ec2, settings) == ["stopped"] * 2
    assert scaler.status()["fleet"]["running"] == 0

    send(sqs, settings, 5)
    clock.now += 2.0
    scaler.tick()  # a small burst: one restart from the warm pool, no launch
    last = scaler.status()["decisions"][-1]
    assert last["inputs"]["warm"] >= 2
    assert len(last["actions"]["start"]) == 1 and last["actions"]["launch"] == 0


def test_a_worker_that_served_its_minute_gets_spares_stopped_into_the_pool(settings, aws_client):
    """WARM_POOL_SPARES: at a steady count, once a ready worker has run a minute, spares are
    launched to fill the pool (no capacity while they boot), and each is stopped into the pool
    once its worker is ready; a surge then restarts them."""
    ec2, sqs, cloudwatch = aws_client("ec2"), aws_client("sqs"), aws_client("cloudwatch")
    scaler, clock = live_scaler(settings, aws_client)
    url = send(sqs, settings, 5)
    scaler.tick()
    (worker,) = Fleet.from_settings(ec2, settings).instances()
    # Ready in this run: no earlier than EC2's launch time, which the test's clock may trail.
    announce_ready(ec2, worker.instance_id, max(clock.now, worker.launched_at))
    sqs.purge_queue(QueueUrl=url)
    for _ in range(30):  # a trickle keeps it busy past its first minute
        clock.now += 2.5
        publish_arrivals(cloudwatch, settings.fleet_name, {int(clock.now) - 2: 1})
        scaler.tick()
    # The worker itself joins the pool when traffic stops: one spare fills the pool of two.
    filled = [d for d in scaler.status()["decisions"] if d["actions"]["spares"]]
    assert [d["actions"]["spares"] for d in filled] == [settings.warm_pool_max - 1], filled
    assert "spares=1" in filled[0]["text"] and filled[0]["inputs"]["capacity"] == 1
    spares = [i for i in Fleet.from_settings(ec2, settings).instances() if i.spare]
    assert len(spares) == 1
    for spare in spares:
        announce_ready(ec2, spare.instance_id, clock.now)
    clock.now += 1.0
    publish_arrivals(cloudwatch, settings.fleet_name, {int(clock.now) - 1: 1})
    scaler.tick()
    assert sorted(fleet_states(ec2, settings)) == ["running", "stopped"]
    stopped = scaler.status()["decisions"][-1]["actions"]["stop"]
    assert set(stopped) == {s.instance_id for s in spares}
