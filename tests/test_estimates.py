"""What the scaler learns (scaler.estimates): boot times per instance type and kind, throughput
per model (from the workers' usage tags, else CloudWatch), kept as one S3 object across
restarts; then, against a real moto server and the scaler's own /status, a measured boot time
after one launch that a restarted scaler still has."""

from __future__ import annotations

import json
import logging
import uuid

import pytest

from embedded.provision import provision
from runtime import keys
from runtime.readiness import announce_ready
from runtime.settings import Settings
from runtime.usage import Usage, format_usage
from scaler.estimates import SAMPLES_KEPT, Estimate, Estimates, EstimateStore, reported_rate
from scaler.fleet import ensure_local_launch_template
from scaler.gauges import QueueDepth, Throughput
from scaler.plan import Instance, PoolRules
from scaler.policies import Limits
from scaler.service import Scaler, ScalerConfig, build_scaler
from tests.support.stub_s3 import StubS3


def _ready(iid: str, launched_at: float, boot_s: float, kind: str = "c6i.large", **more):
    return Instance(
        iid,
        "running",
        launched_at,
        ready=True,
        ready_at=launched_at + boot_s,
        instance_type=kind,
        **more,
    )


def test_defaults_until_the_first_measurement_then_the_median_per_type():
    estimates = Estimates(40.0, 10.0)
    assert estimates.boot("new", "c6i.large") == Estimate(40.0, "default")
    found = estimates.observe(
        [
            _ready("a", 100.0, 6.0),
            _ready("b", 100.0, 7.0),
            _ready("c", 100.0, 95.0),  # one slow boot does not move the median far
            _ready("d", 100.0, 3.0, restarted=True),
            Instance("e", "running", 100.0),  # not ready yet: nothing to measure
        ]
    )
    assert sorted(found) == [
        ("c6i.large", "new", 6.0),
        ("c6i.large", "new", 7.0),
        ("c6i.large", "new", 95.0),
        ("c6i.large", "start", 3.0),
    ]
    assert estimates.boot("new", "c6i.large") == Estimate(7.0, "measured", 3)
    assert estimates.boot("start", "c6i.large") == Estimate(3.0, "measured", 1)
    # A type never seen plans with every type's figures; an unknown one ("") too.
    assert estimates.boot("new", "m6i.large").value == 7.0
    assert estimates.boot("new").source == "measured"


def test_each_run_is_measured_once_and_only_the_last_samples_count():
    estimates = Estimates(40.0, 10.0)
    first = _ready("a", 100.0, 5.0)
    assert estimates.observe([first]) and not estimates.observe([first])
    # The same instance started again is a new run (of the other kind).
    assert estimates.observe([_ready("a", 500.0, 2.0, restarted=True)])
    for k in range(SAMPLES_KEPT + 3):
        estimates.observe([_ready(f"n{k}", 1000.0 + k, 20.0)])
    assert estimates.boot("new", "c6i.large") == Estimate(20.0, "measured", SAMPLES_KEPT)
    # Clocks or tags out of step are no boot.
    assert not estimates.observe([_ready("x", 100.0, -3.0), _ready("y", 100.0, 7200.0)])


def test_throughput_is_measured_then_remembered_per_model():
    estimates = Estimates(40.0, 10.0)
    assert estimates.img_s("m", Throughput(10.0, False)) == Estimate(10.0, "default")
    assert estimates.remember_throughput("m", 25.0) is True
    assert estimates.remember_throughput("m", 26.0) is False  # within 10 %: not worth a PUT
    assert estimates.img_s("m", Throughput(27.0, True)) == Estimate(27.0, "measured")
    assert estimates.img_s("m", Throughput(10.0, False)) == Estimate(26.0, "remembered")
    assert estimates.img_s("other", Throughput(10.0, False)).source == "default"


def test_the_store_round_trips_and_survives_a_missing_or_garbled_object():
    s3 = StubS3()
    store = EstimateStore(s3, "out", keys.SCALER_ESTIMATES)
    assert store.load() == {}  # nothing kept yet
    estimates = Estimates(40.0, 10.0)
    estimates.observe([_ready("a", 100.0, 6.0)])
    estimates.remember_throughput("m", 25.0)
    assert store.save(estimates.to_json())
    again = Estimates(40.0, 10.0)
    again.load(store.load())
    assert again.boot("new", "c6i.large") == Estimate(6.0, "measured", 1)
    assert again.img_s("m", Throughput(10.0, False)) == Estimate(25.0, "remembered")
    assert not again.observe([_ready("a", 100.0, 6.0)])  # already counted before the restart
    s3.put_object(Bucket="out", Key=keys.SCALER_ESTIMATES, Body=b"{not json")
    assert store.load() == {}


@pytest.mark.parametrize(
    "kept",
    [
        {"version": 99, "boot_s": {"t": {"new": [1.0]}}},
        {"version": 1, "boot_s": {"t": {"new": ["x", True, -1, 1e9]}}, "throughput_img_s": []},
        {"version": 1, "boot_s": [], "throughput_img_s": {"m": "fast"}, "recorded": 3},
        {"version": 1, "boot_s": {"t": {"new": 5}}},
        [],
    ],
)
def test_malformed_estimates_are_dropped_not_trusted(kept):
    estimates = Estimates(40.0, 10.0)
    estimates.load(json.loads(json.dumps(kept)))
    assert estimates.boot("new", "t") == Estimate(40.0, "default")
    assert estimates.img_s("m", Throughput(10.0, False)).source == "default"


def _worker(iid: str, images: int, busy_s: float, *, state="running", run=110.0, **more):
    """A fleet instance launched at 100 whose worker (started at `run`) tagged its usage."""
    tag = format_usage(Usage(f"{run:.3f}", images, {"sqs": 3}, busy_s))
    return Instance(iid, state, 100.0, ready=True, ready_at=105.0, usage=tag, **more)


@pytest.mark.parametrize(
    ("fleet", "expected"),
    [
        ([], None),
        ([_worker("a", 20, 2.0)], (10.0, 1)),
        # Two workers: images over busy seconds, each weighed by its busy time.
        ([_worker("a", 20, 2.0), _worker("b", 60, 2.0)], (20.0, 2)),
        ([_worker("a", 20, 2.0), _worker("b", 0, 0.0)], (10.0, 1)),  # b has answered nothing
        ([_worker("a", 20, 2.0, run=90.0)], None),  # the tag of the instance's earlier run
        ([_worker("a", 20, 2.0, state="stopped")], None),  # its run is over: not measured now
        ([_worker("a", 20, 2.0, state="pending")], (10.0, 1)),
        ([Instance("a", "running", 100.0, usage="run=110 images=20 sqs=3")], None),  # no busy_s
        ([Instance("a", "running", 100.0, usage="garbage")], None),
        ([Instance("a", "running", 100.0, usage="run=x images=20 busy_s=2")], None),
        ([Instance("a", "running", 100.0)], None),  # no tag yet
    ],
)
def test_the_rate_the_workers_tell_in_their_usage_tags(fleet, expected):
    found = reported_rate(fleet)
    assert (None if found is None else (found.img_s, found.workers)) == expected, found
    assert found is None or found.measured


class TaggedFleet:
    """The scaler's fleet as listings it is handed: instances() and an apply() that does nothing."""

    def __init__(self, *listings: list[Instance]):
        self.listings = list(listings)

    def instances(self) -> list[Instance]:
        return self.listings[0] if len(self.listings) == 1 else self.listings.pop(0)

    def apply(self, actions) -> list[str]:
        return []


class FixedQueue:
    def __init__(self, visible: int):
        self.depth = QueueDepth(visible, 0, 0)

    def read(self) -> QueueDepth:
        return self.depth


class CountedGauge:
    """The CloudWatch throughput gauge, counting how often it is asked."""

    def __init__(self):
        self.reads = 0
        self.last = Throughput(10.0, measured=False)

    def read(self) -> Throughput:
        self.reads += 1
        return self.last


def _tagged_scaler(fleet, s3, clock):
    config = ScalerConfig(
        policy="drain",
        limits=Limits(0, 2),
        latency_target_s=5.0,
        quiet_period_s=0.0,
        pool=PoolRules(2, 3600.0),
        model="resnet18",
    )
    gauge = CountedGauge()
    store = EstimateStore(s3, "out", keys.SCALER_ESTIMATES)
    scaler = Scaler(
        config,
        fleet=fleet,
        queue=FixedQueue(50),
        throughput=gauge,
        store=store,
        clock=lambda: clock[0],
    )
    return scaler, gauge


def test_a_burst_is_measured_from_the_tags_saved_at_once_and_cloudwatch_is_not_asked(caplog):
    s3, clock = StubS3(), [1000.0]
    fleet = TaggedFleet(
        # Both workers ready (their boots measured and saved), nothing answered yet.
        [_ready(iid, 100.0, 5.0, kind="") for iid in ("a", "b")],
        [_worker("a", 10, 0.8), _worker("b", 20, 1.2)],  # the first batches' tags
    )
    scaler, gauge = _tagged_scaler(fleet, s3, clock)
    scaler.tick()
    assert scaler.status()["estimates"]["throughput_img_s"]["source"] == "default"
    assert gauge.reads == 1  # no worker tells its rate yet: CloudWatch stands in
    clock[0] += 2.0
    with caplog.at_level(logging.DEBUG, logger="scaler.service"):
        scaler.tick()  # the same decision: its line is logged at debug only
    status = scaler.status()
    assert status["estimates"]["throughput_img_s"] == {
        "value": 15.0,
        "source": "measured",
        "samples": 2,
    }
    assert status["throughput_img_s"] == 15.0
    assert gauge.reads == 1  # the tags came with the listing
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("decision")]
    assert "throughput=15.0(measured)" in line and "boot=5.0s(measured)" in line
    # Saved at once, two seconds after the boots were (a changed rate waits its minute).
    kept = json.loads(s3.objects["out", keys.SCALER_ESTIMATES])
    assert kept["throughput_img_s"] == {"resnet18": 15.0}


def test_a_changed_rate_is_saved_when_its_minute_is_up_even_once_the_fleet_is_idle():
    s3, clock = StubS3(), [1000.0]
    fleet = TaggedFleet([_worker("a", 10, 1.0)], [_worker("a", 100, 5.0)], [])
    scaler, _ = _tagged_scaler(fleet, s3, clock)
    scaler.tick()  # 10 img/s, the model's first: saved at once
    clock[0] += 5.0
    scaler.tick()  # 20 img/s: changed, but within the minute of the last save
    assert json.loads(s3.objects["out", keys.SCALER_ESTIMATES])["throughput_img_s"] == {
        "resnet18": 10.0
    }
    clock[0] += 60.0
    scaler.tick()  # the workers have stopped; what they did is kept
    assert json.loads(s3.objects["out", keys.SCALER_ESTIMATES])["throughput_img_s"] == {
        "resnet18": 20.0
    }
    assert scaler.status()["estimates"]["throughput_img_s"]["source"] == "remembered"


# ---- a real moto server over HTTP ----------------------------------------------------------------


def test_after_one_launch_status_shows_a_measured_boot_that_a_restart_keeps(aws_client):
    ec2, s3, sqs = aws_client("ec2"), aws_client("s3"), aws_client("sqs")
    name = f"e{uuid.uuid4().hex[:8]}"
    settings = Settings(
        fleet_name=f"{name}-fleet",
        launch_template=f"{name}-lt",
        fleet_min=1,
        input_bucket=f"{name}-in",
        output_bucket=f"{name}-out",
        request_queue=f"{name}-q",
    )
    provision(settings, s3, sqs)  # the buckets and queues, as the embedded stack makes them
    ensure_local_launch_template(ec2, settings)
    clients = {"ec2": ec2, "sqs": sqs, "cloudwatch": aws_client("cloudwatch"), "s3": s3}

    scaler = build_scaler(settings, **clients)
    scaler.tick()  # FLEET_MIN 1: one launch
    status = scaler.status()
    assert status["estimates"]["boot_new_s"] == {"value": 40.0, "source": "default", "samples": 0}
    (launched,) = [
        i
        for r in ec2.describe_instances(
            Filters=[{"Name": "tag:elastic-classifier:fleet", "Values": [settings.fleet_name]}]
        )["Reservations"]
        for i in r["Instances"]
    ]
    # The worker's own report: its model loaded 4.5 s after the launch.
    assert announce_ready(ec2, launched["InstanceId"], launched["LaunchTime"].timestamp() + 4.5)
    scaler.tick()
    measured = scaler.status()["estimates"]["boot_new_s"]
    assert measured == {"value": 4.5, "source": "measured", "samples": 1}
    last = scaler.status()["decisions"][-1]
    assert "boot=4.5s(measured)/10.0s(default)" in last["text"]
    assert last["estimates"]["boot_new_s"]["source"] == "measured"
    # A new scaler (a restart, a new host) reads what the first one measured.
    restarted = build_scaler(settings, **clients)
    restarted.tick()
    assert restarted.status()["estimates"]["boot_new_s"] == measured


def test_a_real_launch_is_measured_and_shown_on_both_status_pages(moto_endpoint, tmp_path):
    """The whole stack: one upload launches a worker, its ready tag ends the measured boot, and
    the scaler's /status and the web's show it; a scaler killed and restarted still has it."""
    import requests

    from tests.chaos import ChaosStack
    from tests.http_client import upload, variants
    from tests.support.waiting import wait_until

    stack = ChaosStack(moto_endpoint, tmp_path)
    scaler_status = f"http://127.0.0.1:{stack.status_port}/status"

    def boot_new() -> dict | None:
        try:
            found = requests.get(scaler_status, timeout=10).json()["estimates"]["boot_new_s"]
        except (requests.RequestException, ValueError, KeyError, TypeError):
            return None
        return found if found["source"] == "measured" else None

    try:
        stack.start(webs=1)
        ((name, data),) = variants(1)
        assert upload(stack.urls[0], data, name, timeout=120).status_code == 200
        measured = wait_until(boot_new, "a measured boot on the scaler's /status", 60)

        def on_the_page() -> bool:  # the web tier keeps its snapshot a moment
            page = requests.get(f"{stack.urls[0]}/status", timeout=30).json()
            return (page.get("estimates") or {}).get("boot_new_s") == measured

        wait_until(on_the_page, "the measured boot on the web's /status", 30)
        print("measured boot:", measured)
        stack.scaler.kill()
        stack.scaler.wait()
        stack.start_scaler()
        assert wait_until(boot_new, "the restarted scaler's estimates", 60) == measured
    finally:
        stack.stop()
