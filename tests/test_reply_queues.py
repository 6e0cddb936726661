"""Reply queues against a real moto server: heartbeats keep them, orphans are swept."""

from __future__ import annotations

import logging
from concurrent.futures import TimeoutError as FutureTimeout

import pytest

from runtime.messages import Result
from tests.support.waiting import wait_until
from web.replies import ReplyDispatcher, ReplyQueueJanitor, create_reply_queue


def test_orphans_are_swept_and_live_queues_kept(aws_client):
    sqs = aws_client("sqs")
    now = [1000.0]
    clock = lambda: now[0]  # noqa: E731
    mine = create_reply_queue(sqs, "sweep-reply-", "mine", clock)
    live = create_reply_queue(sqs, "sweep-reply-", "live", clock)
    dead = create_reply_queue(sqs, "sweep-reply-", "dead", clock)
    other = sqs.create_queue(QueueName="unrelated-queue")["QueueUrl"]
    janitor = ReplyQueueJanitor(sqs, "sweep-reply-", mine, max_age_s=60, clock=clock)
    live_janitor = ReplyQueueJanitor(sqs, "sweep-reply-", live, max_age_s=60, clock=clock)
    now[0] += 50
    live_janitor.beat()
    assert janitor.sweep() == []
    now[0] += 20  # dead and mine are 70 s old, live beat 20 s ago
    assert janitor.sweep() == [dead]
    urls = sqs.list_queues().get("QueueUrls", [])
    assert mine in urls and live in urls and other in urls and dead not in urls


def test_duplicate_reply_completes_the_waiter_once(aws_client):
    sqs = aws_client("sqs")
    url = create_reply_queue(sqs, "dup-reply-", "one")
    dispatcher = ReplyDispatcher(sqs, url, wait_s=1).start()
    try:
        future = dispatcher.expect("f" * 32, "1" * 32)
        other = dispatcher.expect("e" * 32, "2" * 32)
        for label in ("first", "second"):
            reply = Result(id="f" * 32, filename="x", label=label, token="1" * 32)
            sqs.send_message(QueueUrl=url, MessageBody=reply.encode())
        # A reply under the waiter's id but without its token is someone else's: dropped.
        forged = Result(id="e" * 32, filename="x", label="forged", token="3" * 32)
        sqs.send_message(QueueUrl=url, MessageBody=forged.encode())
        assert future.result(timeout=10).label in ("first", "second")
        with pytest.raises(FutureTimeout):
            other.result(timeout=2)
        assert dispatcher.waiting == 1  # only the unanswered one is left
    finally:
        dispatcher.stop()


def _empty(sqs, url: str) -> bool:
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return not any(int(attributes[name]) for name in names)


def test_a_crafted_reply_does_not_stop_the_dispatcher(aws_client):
    """Issue 11 finding 4: a reply nested 200k deep killed the thread; every upload then 504."""
    sqs = aws_client("sqs")
    url = create_reply_queue(sqs, "deep-reply-", "one")
    dispatcher = ReplyDispatcher(sqs, url, wait_s=1).start()
    try:
        future = dispatcher.expect("d" * 32, "4" * 32)
        sqs.send_message(QueueUrl=url, MessageBody="[" * 200_000 + "]" * 200_000)
        wait_until(lambda: _empty(sqs, url), "the dispatcher to take the crafted reply first")
        reply = Result(id="d" * 32, filename="x", label="real", token="4" * 32)
        sqs.send_message(QueueUrl=url, MessageBody=reply.encode())
        assert future.result(timeout=20).label == "real"
    finally:
        dispatcher.stop()


class FlakyReceive:
    """A real SQS client whose first receive fails the way a bug would (not an AWS error)."""

    def __init__(self, sqs):
        self._sqs, self.failures = sqs, 0

    def receive_message(self, **kwargs):
        if self.failures == 0:
            self.failures += 1
            raise KeyError("Messages")
        return self._sqs.receive_message(**kwargs)

    def delete_message_batch(self, **kwargs):
        return self._sqs.delete_message_batch(**kwargs)


def test_dispatcher_logs_an_unexpected_error_with_its_traceback_and_goes_on(aws_client, caplog):
    sqs = aws_client("sqs")
    url = create_reply_queue(sqs, "flaky-reply-", "one")
    flaky = FlakyReceive(sqs)
    with caplog.at_level(logging.WARNING, logger="web.replies"):
        dispatcher = ReplyDispatcher(flaky, url, wait_s=1).start()
        try:
            future = dispatcher.expect("a" * 32, "5" * 32)
            reply = Result(id="a" * 32, filename="x", label="ok", token="5" * 32)
            sqs.send_message(QueueUrl=url, MessageBody=reply.encode())
            assert future.result(timeout=20).label == "ok"
        finally:
            dispatcher.stop()
    (record,) = [r for r in caplog.records if r.name == "web.replies"]
    assert "reply queue receive failed unexpectedly (KeyError: 'Messages')" in record.getMessage()
    assert record.exc_info[0] is KeyError and flaky.failures == 1
