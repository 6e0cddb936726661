"""UploadStore against moto in this process: what the web tier writes for each upload."""

from __future__ import annotations

import pytest

from embedded.provision import provision
from runtime.messages import Request, new_request_id
from runtime.settings import Settings
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


def make_store(aws, inline_max_bytes: int) -> UploadStore:
    settings, s3, sqs, request_url, _ = aws
    return UploadStore(
        s3=s3,
        sqs=sqs,
        input_bucket=settings.input_bucket,
        output_bucket=settings.output_bucket,
        request_queue_url=request_url,
        result_timeout_s=60,
        inline_max_bytes=inline_max_bytes,
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
    store = make_store(aws, inline_max_bytes)
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
