"""UploadStore against moto in this process: what the web tier writes for each upload."""

from __future__ import annotations

import time

import boto3
import pytest
from botocore.config import Config

from embedded.provision import provision
from runtime.messages import Request, new_request_id
from runtime.settings import Settings
from web.errors import RequestIdInUse, Unavailable
from web.store import UploadStore

SMALL, LARGE = b"\xff\xd8\xff" + b"s" * 1000, b"\xff\xd8\xff" + b"L" * 5000


@pytest.fixture
def aws(in_process_aws):
    settings = Settings(
        input_bucket="store-in",
        output_bucket="store-out",
        request_queue="store-requests",
        reply_queue_prefix="store-reply-",
    )
    s3, sqs = in_process_aws("s3"), in_process_aws("sqs")
    urls = provision(settings, s3, sqs)
    reply_url = sqs.create_queue(QueueName="store-reply-1")["QueueUrl"]
    return settings, s3, sqs, urls["request_queue_url"], reply_url


def make_store(aws, **options) -> UploadStore:
    """The store on the test's buckets and queue; `options` (s3, clock, inline_max_bytes...)
    replace the defaults."""
    settings, s3, sqs, request_url, _ = aws
    return UploadStore(
        **{
            "s3": s3,
            "sqs": sqs,
            "input_bucket": settings.input_bucket,
            "output_bucket": settings.output_bucket,
            "request_queue_url": request_url,
            "result_timeout_s": 60,
            **options,
        }
    )


def queued(aws) -> dict[str, Request]:
    _, _, sqs, request_url, _ = aws
    messages = sqs.receive_message(QueueUrl=request_url, MaxNumberOfMessages=10)["Messages"]
    return {r.id: r for r in (Request.decode(m["Body"]) for m in messages)}


@pytest.mark.parametrize("inline_max_bytes", [0, len(SMALL), 4096])
def test_uploads_up_to_the_inline_limit_ride_in_their_message_and_all_are_stored(
    aws, inline_max_bytes
):
    settings, s3, *_ = aws
    store = make_store(aws, inline_max_bytes=inline_max_bytes)
    small, large = (Request.create(new_request_id(), name, "", 0) for name in ("s.jpg", "l.jpg"))
    store.submit(small, SMALL)
    store.submit(large, LARGE)
    messages = queued(aws)
    expected = SMALL if inline_max_bytes >= len(SMALL) else None
    assert messages[small.id].inline_bytes() == expected
    assert messages[large.id].inline_bytes() is None
    for request, data in ((small, SMALL), (large, LARGE)):  # the input bucket keeps every upload
        stored = s3.get_object(Bucket=settings.input_bucket, Key=request.key)["Body"].read()
        assert stored == data


def test_an_async_uploads_id_stays_claimed_until_its_own_deadline(aws):
    """Round three's finding 8: 70 s after an async upload was stored (the sync timeout), any
    client could take its id over; its GET /results/<id> then showed the other's image."""
    settings, s3, sqs, request_url, reply_url = aws
    now = [time.time()]
    store = make_store(aws, clock=lambda: now[0])
    victim_id = new_request_id()
    week = 7 * 86400.0
    store.submit(Request.create(victim_id, "victim.jpg", "", now[0] + week), SMALL)

    now[0] += 3600  # an hour on: far past the sync timeout, well within the async deadline
    for reply_to in (reply_url, ""):  # a synchronous or an asynchronous taker
        taker = Request.create(victim_id, "taker.jpg", reply_to, now[0] + 60)
        with pytest.raises(RequestIdInUse):
            store.submit(taker, LARGE)
    key = {"Bucket": settings.input_bucket, "Key": Request.create(victim_id, "", "", 0).key}
    assert s3.get_object(**key)["Body"].read() == SMALL

    now[0] += week  # past the async deadline: its own client may reuse the id
    store.submit(Request.create(victim_id, "again.jpg", "", now[0] + week), LARGE)
    assert s3.get_object(**key)["Body"].read() == LARGE


def test_a_sync_uploads_id_may_be_retried_once_its_deadline_passed(aws):
    settings, s3, sqs, request_url, reply_url = aws
    now = [time.time()]
    store = make_store(aws, clock=lambda: now[0])
    request_id = new_request_id()
    store.submit(Request.create(request_id, "a.jpg", reply_url, now[0] + 60), SMALL)
    with pytest.raises(RequestIdInUse):
        store.submit(Request.create(request_id, "a.jpg", reply_url, now[0] + 60), SMALL)
    now[0] += 120
    store.submit(Request.create(request_id, "a.jpg", reply_url, now[0] + 60), SMALL)


def test_aws_away_while_reading_a_state_is_unavailable_not_a_crash(aws):
    """Seen in the chaos test: GET /results/<id> during an S3 outage answered 500."""
    unreachable = boto3.client(
        "s3",
        endpoint_url="http://127.0.0.1:9",  # nothing listens: every call fails to connect
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}, connect_timeout=1),
    )
    store = make_store(aws, s3=unreachable)
    with pytest.raises(Unavailable, match="could not read the state: EndpointConnectionError"):
        store.state(new_request_id())
