"""/status reads AWS at most once per TTL however often it is asked (issue 11 finding 9)."""

from __future__ import annotations

from scaler.status import StatusServer
from tests.conftest import free_port
from web.status import StatusSource


class CountingSqs:
    def __init__(self):
        self.calls = 0

    def get_queue_attributes(self, QueueUrl, AttributeNames):  # noqa: N803 - boto3's names
        self.calls += 1
        return {"Attributes": dict.fromkeys(AttributeNames, str(self.calls))}


def test_snapshots_within_the_ttl_cost_one_read():
    sqs, now = CountingSqs(), [100.0]
    source = StatusSource(
        sqs, "q", "dlq", f"http://127.0.0.1:{free_port()}/status", ttl_s=2, clock=lambda: now[0]
    )
    first = source.snapshot()
    for _ in range(50):
        assert source.snapshot() == first
    assert sqs.calls == 2  # the request queue and the DLQ, once
    now[0] += 2.5
    assert source.snapshot() != first and sqs.calls == 4


def test_with_the_scaler_answering_the_queue_is_its_count_and_sqs_is_not_read():
    sqs = CountingSqs()
    queue = {"visible": 4, "in_flight": 2, "dlq": 1, "jobs_visible": 0, "jobs_in_flight": 0}
    server = StatusServer(lambda: {"queue": queue, "fleet": {"running": 1}}).start()
    try:
        source = StatusSource(sqs, "q", "dlq", f"http://127.0.0.1:{server.port}/status")
        assert source.snapshot()["queue"] == {"visible": 4, "in_flight": 2, "dlq": 1}
    finally:
        server.close()
    assert sqs.calls == 0  # the scaler read them at its tick: no second bill for the same count


def test_the_scalers_list_of_workers_and_their_versions_is_passed_on():
    listed = [{"id": "i-1", "models": [{"name": "efficientnet_lite0", "version": "3f2a"}]}]
    server = StatusServer(lambda: {"fleet": {"running": 1}, "workers": listed}).start()
    try:
        source = StatusSource(CountingSqs(), "q", "dlq", f"http://127.0.0.1:{server.port}/status")
        assert source.snapshot()["workers"] == listed
    finally:
        server.close()
    unreachable = StatusSource(CountingSqs(), "q", "dlq", f"http://127.0.0.1:{free_port()}/s")
    assert unreachable.snapshot()["workers"] == []  # no scaler: no worker known


class Counts:
    """Stands in for runtime.requests.RequestCounter: the requests this process sent so far."""

    def __init__(self):
        self.s3_puts = 0

    def by_class(self) -> dict[str, int]:
        return {"s3-put": self.s3_puts}


def test_this_processs_requests_are_current_in_every_snapshot():
    """Within the TTL the AWS reads are kept, but the web's own request count is not: loadgen
    prices a run of a second or two from the snapshots before and after it (saw 0.0 here)."""
    sqs, counts = CountingSqs(), Counts()
    source = StatusSource(
        sqs, "q", "dlq", f"http://127.0.0.1:{free_port()}/status", ttl_s=60, requests=counts
    )
    before = source.snapshot()["cost"]
    counts.s3_puts += 30
    after = source.snapshot()["cost"]
    assert sqs.calls == 2  # still one read of the queues
    assert after["request_counts"]["s3-put"] == before["request_counts"].get("s3-put", 0) + 30
    assert after["requests"] > before["requests"]


def test_the_estimates_the_scaler_plans_with_reach_the_page_each_with_its_source():
    """What the dashboard's "plans with" tiles read: the scaler's estimates as it reports them,
    and none (not stale ones) when the scaler does not answer."""
    estimates = {
        "boot_new_s": {"value": 4.5, "source": "measured", "samples": 3},
        "boot_start_s": {"value": 10.0, "source": "default", "samples": 0},
        "throughput_img_s": {"value": 31.0, "source": "remembered", "samples": 0},
        "instance_type": "(launch template's)",
    }
    server = StatusServer(lambda: {"fleet": {"running": 0}, "estimates": estimates}).start()
    try:
        source = StatusSource(CountingSqs(), "q", "dlq", f"http://127.0.0.1:{server.port}/status")
        assert source.snapshot()["estimates"] == estimates
    finally:
        server.close()
    unreachable = StatusSource(CountingSqs(), "q", "dlq", f"http://127.0.0.1:{free_port()}/status")
    assert unreachable.snapshot()["estimates"] is None
