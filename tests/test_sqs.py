"""runtime.sqs and runtime.failures: queue depths parsed by a table (as KEDA's SQS scaler tests
them), batches of ten, best-effort calls that log what failed, and the backoff streak."""

from __future__ import annotations

import logging

import boto3
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from moto import mock_aws

from runtime import sqs
from runtime.failures import describe, log_failure
from runtime.retry import Backoff, Streak

V, F = sqs.VISIBLE, sqs.IN_FLIGHT


@pytest.mark.parametrize(
    ("attributes", "want"),
    [
        ({V: "0", F: "0"}, sqs.Depth(0, 0)),
        ({V: "7", F: "3"}, sqs.Depth(7, 3)),
        ({V: str(sqs.MAX_COUNT), F: "0"}, sqs.Depth(sqs.MAX_COUNT, 0)),
        ({V: "12", F: "1", "QueueArn": "arn:x"}, sqs.Depth(12, 1)),
    ],
)
def test_depth_parses(attributes, want):
    assert sqs.parse_depth(attributes) == want
    assert want.total == want.visible + want.in_flight


@pytest.mark.parametrize(
    ("attributes", "reason"),
    [
        (None, "missing"),
        ({}, "missing"),
        ({V: "5"}, "missing"),  # in flight missing
        ({F: "5"}, "missing"),
        ({V: "", F: "0"}, "not a count"),
        ({V: "five", F: "0"}, "not a count"),
        ({V: "1.5", F: "0"}, "not a count"),
        ({V: "-1", F: "0"}, "not a count"),
        ({V: " 4", F: "0"}, "not a count"),
        ({V: "1_000", F: "0"}, "not a count"),
        ({V: "٣", F: "0"}, "not a count"),  # a digit to int(), not to SQS
        ({V: str(sqs.MAX_COUNT + 1), F: "0"}, "not a count"),
        ({V: "9223372036854775808", F: "0"}, "not a count"),  # int64 overflow
        ({V: "9" * 400, F: "0"}, "not a count"),
        ({V: 5, F: "0"}, "not a count"),  # an int where SQS sends a string
    ],
)
def test_bad_depth_is_an_error_never_a_number(attributes, reason):
    with pytest.raises(sqs.QueueAttributeError, match=reason):
        sqs.parse_depth(attributes)


def test_chunks_of_ten():
    assert [len(c) for c in sqs.chunks(list(range(23)))] == [10, 10, 3]
    assert list(sqs.chunks([])) == []


def test_batch_calls_go_in_tens_and_log_the_aws_error(caplog):
    with mock_aws():
        client = boto3.client("sqs", region_name="us-east-1")
        url = client.create_queue(QueueName="q")["QueueUrl"]
        assert sqs.send_batch(client, url, [f"m{i}" for i in range(23)], "send") == 0
        assert sqs.read_depth(client, url) == sqs.Depth(23, 0)
        received = []
        while batch := client.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages"):
            received += batch
        assert sqs.read_depth(client, url) == sqs.Depth(0, 23)
        receipts = [m["ReceiptHandle"] for m in received]
        assert sqs.change_visibility_batch(client, url, receipts, 0, "release") == 0
        assert sqs.read_visible(client, url) == 23
        assert sqs.delete_batch(client, url, receipts, "delete") == 0

        with caplog.at_level(logging.WARNING, logger="runtime.sqs"):
            missing = url + "-gone"
            assert sqs.delete_batch(client, missing, receipts[:12], "delete replies") == 12
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2  # one per batch of ten
    assert "delete replies failed (DeleteMessageBatch: " in lines[0]
    assert "NonExistentQueue" in lines[0]


def test_describe_names_operation_code_and_message():
    error = ClientError(
        {"Error": {"Code": "AccessDenied", "Message": "not allowed"}}, "SendMessageBatch"
    )
    assert describe(error) == "SendMessageBatch: AccessDenied: not allowed"
    lost = EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
    assert describe(lost).startswith("EndpointConnectionError: Could not connect")
    assert describe(KeyError()) == "KeyError"


def test_log_failure_keeps_the_traceback_only_for_the_unexpected(caplog):
    log = logging.getLogger("failing")
    aws = ClientError({"Error": {"Code": "Throttling", "Message": "slow down"}}, "ReceiveMessage")
    with caplog.at_level(logging.WARNING, logger="failing"):
        log_failure(log, "receive", aws, "retry in 1.0 s")
        try:
            raise ValueError("a bug")
        except ValueError as bug:
            log_failure(log, "receive", bug)
    aws_record, bug_record = caplog.records
    assert aws_record.getMessage() == (
        "receive failed (ReceiveMessage: Throttling: slow down); retry in 1.0 s"
    )
    assert aws_record.levelno == logging.WARNING and aws_record.exc_info is None
    assert bug_record.levelno == logging.ERROR and bug_record.exc_info[0] is ValueError


def test_streak_doubles_to_its_cap_and_starts_over_after_a_success():
    streak = Streak(Backoff(base_s=0.5, max_s=5.0))
    assert [streak.failed() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    streak.succeeded()
    assert streak.failed() == 0.5
    delays = [streak.failed() for _ in range(5000)]  # a long outage must not overflow the delay
    assert delays[:3] == [1.0, 2.0, 4.0] and set(delays[3:]) == {5.0}
