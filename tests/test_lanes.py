"""Two lanes, unit level: the scaler's share of the job lane, the worker's order of reads."""

from __future__ import annotations

import pytest

from scaler.lanes import job_share, per_instance
from scaler.policies import PolicyError
from worker.lanes import Lanes


@pytest.mark.parametrize(
    ("job_load", "job_fleet_max", "per_instance_load", "counted"),
    [
        (0, 0, 50.0, 0),
        (5000, 0, 50.0, 5000),  # no lane maximum: all of it counts
        (5000, 2, 50.0, 100),  # two instances' worth, no more
        (30, 2, 50.0, 30),  # under the cap: all of it
        (101, 2, 50.5, 101),
        (7, 1, 4.0, 4),
    ],
)
def test_job_share(job_load, job_fleet_max, per_instance_load, counted):
    assert job_share(job_load, job_fleet_max, per_instance_load) == counted


@pytest.mark.parametrize(("load", "fleet_max", "per"), [(-1, 0, 5.0), (1, -1, 5.0), (1, 1, 0.0)])
def test_job_share_refuses_impossible_numbers(load, fleet_max, per):
    with pytest.raises(PolicyError):
        job_share(load, fleet_max, per)


def test_per_instance_follows_the_policy():
    assert per_instance("seed", 5.0, 10.0) == 4.0
    assert per_instance("target", 5.0, 10.0) == 50.0


class StubSqs:
    """Queues as lists of message dicts; records each receive (url, wait)."""

    def __init__(self, queues: dict[str, list]):
        self.queues, self.calls = queues, []

    def receive_message(self, *, QueueUrl, MaxNumberOfMessages, WaitTimeSeconds, **_):  # noqa: N803
        self.calls.append((QueueUrl, WaitTimeSeconds))
        taken = self.queues[QueueUrl][:MaxNumberOfMessages]
        del self.queues[QueueUrl][:MaxNumberOfMessages]
        return {"Messages": taken}


def test_interactive_lane_first_job_lane_only_when_it_is_empty():
    sqs = StubSqs({"i": [{"n": k} for k in range(3)], "j": [{"n": k} for k in range(12)]})
    lanes = Lanes(sqs, "i", "j", wait_s=10)
    assert lanes.receive(10) == ("i", [{"n": 0}, {"n": 1}, {"n": 2}])
    url, batch = lanes.receive(10)
    assert (url, len(batch)) == ("j", 10)
    sqs.queues["i"].append({"n": "late"})  # an upload arrives while the job runs
    assert lanes.receive(10) == ("i", [{"n": "late"}])
    assert lanes.receive(10)[0] == "j"
    sqs.calls.clear()
    assert lanes.receive(10) == ("i", [])  # both empty: a short long-poll of the interactive lane
    assert sqs.calls == [("i", 0), ("j", 0), ("i", 2)]


def test_without_a_job_lane_the_worker_long_polls_as_before():
    sqs = StubSqs({"i": []})
    assert Lanes(sqs, "i", None, wait_s=10).receive(5) == ("i", [])
    assert sqs.calls == [("i", 10)]


def test_job_lane_is_not_read_while_a_batch_waits_and_its_batches_are_small():
    sqs = StubSqs({"i": [], "j": [{"n": k} for k in range(12)]})
    lanes = Lanes(sqs, "i", "j", wait_s=10)
    assert lanes.receive(10, 4, jobs_ok=False) == ("i", [])
    assert sqs.calls == [("i", 0)]  # one short look at the interactive lane, nothing else
    url, batch = lanes.receive(10, 4, jobs_ok=True)
    assert (url, len(batch)) == ("j", 4)
