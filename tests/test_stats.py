"""The one nearest-rank percentile behind /status, the simulator and the load generator."""

from __future__ import annotations

import pytest

from runtime.stats import percentile

HUNDRED = [float(v) for v in range(1, 101)]


@pytest.mark.parametrize(
    ("values", "p", "want"),
    [
        ([5.0], 50, 5.0),
        ([3.0], 95, 3.0),
        ([1.0, 2.0, 3.0, 4.0], 50, 2.0),
        ([1.0, 2.0, 3.0, 4.0], 95, 4.0),
        ([1.0, 2.0, 3.0, 4.0], 100, 4.0),
        ([1.0, 2.0, 3.0, 4.0], 1, 1.0),
        (HUNDRED, 50, 50.0),
        (HUNDRED, 95, 95.0),
        (HUNDRED, 99, 99.0),
        ([0.001 * v for v in range(1, 21)], 95, 0.019),  # 19th of 20
    ],
)
def test_nearest_rank_is_an_observed_value(values, p, want):
    assert percentile(values, p) == want
    assert percentile(values, p) in values


def test_nothing_observed_has_no_percentile():
    assert percentile([], 50) is None
