"""web.jobs.JobStore's own rules with stub clients (unit level): the CSV it writes, what it
answers when AWS fails, what a failed creation leaves behind."""

from __future__ import annotations

import csv
import io

import pytest

from web.jobs import _csv_line


def _cell(value: str) -> str:
    (row,) = csv.reader(io.StringIO(_csv_line([value]).decode()))
    return row[0]


@pytest.mark.parametrize(
    "name",
    [
        "=1+1",
        "@SUM(A1)",
        "\t=1",
        " =1+1",  # a leading space
        "\u00a0=1+1",  # NBSP
        "\u2003+1",  # an em space
        "\u3000-1",  # the ideographic space
        "\uff1dHYPERLINK(1)",  # full-width '='
        "\u200b\uff20x",  # zero-width space, then full-width '@'
    ],
)
def test_a_name_that_starts_like_a_formula_is_neutralised(name):
    assert _cell(name) == "'" + name


@pytest.mark.parametrize("name", ["cat.jpg", "a=b.jpg", " cat.jpg", "\uff43at.jpg", "", "1-2.jpg"])
def test_other_names_are_left_alone(name):
    assert _cell(name) == name
