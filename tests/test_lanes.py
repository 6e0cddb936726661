"""The scaler's share of the job lane, table-driven (end to end: test_scaler_service)."""

from __future__ import annotations

import pytest

from scaler.lanes import job_share, per_instance
from scaler.policies import PolicyError


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
