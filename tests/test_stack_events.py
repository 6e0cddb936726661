"""Unit tests of how deploy reports a stack's events: each new event once, failures with their
reason on one line, and a rolled-back deploy as an error. (moto reports no resource events and
never rolls back, so a stand-in for CloudFormation's two read calls plays the stack here.)"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from deployment.stack import DeployError, Stack


def event(n: int, resource: str, status: str, reason: str = "") -> dict:
    return {
        "EventId": f"e{n}",
        "Timestamp": datetime(2026, 1, 1, 12, 0, n, tzinfo=timezone.utc),
        "LogicalResourceId": resource,
        "ResourceStatus": status,
        "ResourceStatusReason": reason,
    }


class Pages:
    def __init__(self, events: list[dict]):
        self._events = events

    def paginate(self, StackName: str):  # noqa: N803 - boto3's spelling
        return [{"StackEvents": list(reversed(self._events))}]  # newest first, as AWS does


class RollingBack:
    """A stack whose update fails on one resource and rolls back, one poll at a time."""

    def __init__(self):
        self.polls = 0
        self.script = [
            ("UPDATE_IN_PROGRESS", [event(1, "stack", "UPDATE_IN_PROGRESS")]),
            (
                "UPDATE_ROLLBACK_IN_PROGRESS",
                [
                    event(2, "WebHost", "UPDATE_FAILED", "Insufficient capacity.\nTry again."),
                    event(3, "stack", "UPDATE_ROLLBACK_IN_PROGRESS", "WebHost failed"),
                ],
            ),
            ("UPDATE_ROLLBACK_COMPLETE", [event(4, "stack", "UPDATE_ROLLBACK_COMPLETE")]),
        ]
        self.events: list[dict] = [event(0, "stack", "CREATE_COMPLETE")]

    def describe_stacks(self, StackName: str):  # noqa: N803
        status, new = self.script[min(self.polls, len(self.script) - 1)]
        if self.polls < len(self.script):
            self.events += new
        self.polls += 1
        return {"Stacks": [{"StackStatus": status, "Parameters": []}]}

    def get_paginator(self, name: str) -> Pages:
        assert name == "describe_stack_events"
        return Pages(self.events)


def test_wait_reports_each_new_event_once_and_failures_on_one_line_with_the_reason():
    lines: list[str] = []
    stack = Stack("s", RollingBack(), None, None, None, lines.append, 0, lambda s: None, "x: 1")

    status = stack.wait({"e0"})

    assert status == "UPDATE_ROLLBACK_COMPLETE"
    assert [line[2:].split()[1:3] for line in lines] == [
        ["stack", "UPDATE_IN_PROGRESS"],
        ["WebHost", "UPDATE_FAILED:"],
        ["stack", "UPDATE_ROLLBACK_IN_PROGRESS:"],
        ["stack", "UPDATE_ROLLBACK_COMPLETE"],
    ]
    failed = lines[1]
    assert failed.startswith("! ") and failed.endswith("Insufficient capacity. Try again.")


def test_a_rolled_back_deploy_is_an_error():
    cloudformation = RollingBack()
    stack = Stack("s", cloudformation, None, None, None, lambda line: None, 0, lambda s: None)
    stack.change_set = lambda given: ("cs", [])
    cloudformation.execute_change_set = lambda ChangeSetName: None  # noqa: N803
    with pytest.raises(DeployError, match="UPDATE_ROLLBACK_COMPLETE"):
        stack.deploy({})
