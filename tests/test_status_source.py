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
