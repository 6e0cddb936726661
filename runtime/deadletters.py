"""What becomes of a request that no worker finished: an error where its client looks.

A message is dead-lettered after MAX_RECEIVE_COUNT deliveries without a delete (a worker killed
at each, a model that fails on it every time). Its client must still see an end: a job image
becomes a failed row of its job, an upload an error result at its id (GET /results/<id>). The
same write serves a message that a worker refuses but can identify (runtime.messages.salvage).

The write never replaces a result: a worker may have stored one before it died, and that answer
stands. Whoever drains the dead-letter queue (web.deadletters) calls record() and deletes the
message only once it returns.
"""

from __future__ import annotations

from runtime.failures import is_not_found, is_taken
from runtime.messages import MessageError, Request, Result, salvage, stored_key


def reason(max_receive_count: int) -> str:
    return (
        f"not classified: {max_receive_count} deliveries ended without a result "
        "(the request was dead-lettered)"
    )


def identify(body: str, reply_prefix: str) -> Request | None:
    """The request a dead letter was, as far as it can be told; None when it names nobody."""
    try:
        # No reply check: nothing is sent to reply_to, only the result is stored.
        return Request.decode(body)
    except MessageError:
        return salvage(body, reply_prefix)


def record(s3, bucket: str, request: Request, why: str) -> None:
    """Store `request`'s terminal error unless a result is already there. AWS errors
    propagate: the caller keeps the message and tries again."""
    if request.job and _exists(s3, bucket, stored_key(request, ok=True)):
        return  # classified before its last worker died: the row stands
    failure = Result(id=request.id, filename=request.filename, error=why, token=request.token)
    try:
        s3.put_object(
            Bucket=bucket,
            Key=stored_key(request, ok=False),
            Body=failure.encode().encode(),
            ContentType="application/json",
            IfNoneMatch="*",  # never over a worker's result
        )
    except Exception as error:
        if not is_taken(error):
            raise


def _exists(s3, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except Exception as error:
        if is_not_found(error):
            return False
        raise
    return True
