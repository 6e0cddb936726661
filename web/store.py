"""Where an upload goes: the input bucket, then a request on the queue; results come back by id."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable

from botocore.exceptions import ClientError

from runtime.failures import is_not_found, log_failure
from runtime.keys import cache_key, result_key, started_key, upload_key
from runtime.messages import MessageError, Request, Result

log = logging.getLogger(__name__)


class Unavailable(RuntimeError):
    """AWS could not take the request; the client may retry later."""


class UploadStore:
    def __init__(
        self,
        *,
        s3,
        sqs,
        input_bucket: str,
        output_bucket: str,
        request_queue_url: str,
        reply_queue_url: str,
        result_timeout_s: float,
        cache_namespace: tuple[str, str] | None = None,
        async_deadline_s: float = 7 * 86400.0,
        uuidgen: Callable[[], uuid.UUID] = uuid.uuid4,
        clock: Callable[[], float] = time.time,
    ):
        self._s3, self._sqs = s3, sqs
        self._input, self._output = input_bucket, output_bucket
        self._request_queue_url = request_queue_url
        self._reply_queue_url = reply_queue_url
        self._timeout_s = result_timeout_s
        self._async_deadline_s = async_deadline_s  # until the stored result would expire
        self._uuidgen, self._clock = uuidgen, clock
        self._cache_namespace = cache_namespace  # (model, preprocess), or None: no cache

    def new_request(
        self, filename: str, request_id: str | None = None, *, reply: bool = True
    ) -> Request:
        """A request answered on this process's reply queue, or (reply=False) only stored."""
        request_id = request_id or self._uuidgen().hex
        if reply:
            deadline = self._clock() + self._timeout_s
            return Request.create(request_id, filename, self._reply_queue_url, deadline)
        return Request.create(request_id, filename, "", self._clock() + self._async_deadline_s)

    def submit(self, request: Request, data: bytes) -> None:
        """Store the bytes, then queue the request; on failure leave nothing half-written."""
        try:
            self._s3.put_object(Bucket=self._input, Key=request.key, Body=data)
        except Exception as error:  # noqa: BLE001 - any AWS failure means "try again later"
            log_failure(log, f"store upload {request.key}", error)
            raise Unavailable(f"could not store the upload: {type(error).__name__}") from error
        try:
            self._sqs.send_message(QueueUrl=self._request_queue_url, MessageBody=request.encode())
        except Exception as error:  # noqa: BLE001
            log_failure(log, f"queue request {request.id}", error)
            self._discard(request.key)
            raise Unavailable(f"could not queue the request: {type(error).__name__}") from error

    def result(self, request_id: str) -> Result | None:
        return self._read(result_key(request_id))

    def state(self, request_id: str) -> str | None:
        """Before its result exists: `in progress` once a worker took it, `queued` while its
        upload waits, None for an id this deployment does not know (or whose upload expired)."""
        if self._exists(self._output, started_key(request_id)):
            return "in progress"
        if self._exists(self._input, upload_key(request_id)):
            return "queued"
        return None

    def _exists(self, bucket: str, key: str) -> bool:
        try:
            self._s3.head_object(Bucket=bucket, Key=key)
        except Exception as error:
            if is_not_found(error):
                return False
            raise
        return True

    def cached(self, sha256: str) -> Result | None:
        """The stored result for the same bytes and model, if the cache is on and has one."""
        if self._cache_namespace is None:
            return None
        try:
            return self._read(cache_key(*self._cache_namespace, sha256))
        except Exception as error:  # noqa: BLE001 - a cache that cannot be read is a miss
            log_failure(log, "read the result cache", error)
            return None

    def remember(self, sha256: str, result: Result) -> None:
        """Fill the cache from a fresh result (the web tier has both the hash and the reply)."""
        if self._cache_namespace is None or not result.ok:
            return
        try:
            self._s3.put_object(
                Bucket=self._output,
                Key=cache_key(*self._cache_namespace, sha256),
                Body=result.encode().encode(),
            )
        except Exception as error:  # noqa: BLE001 - a later miss is the only cost
            log_failure(log, "fill the result cache", error)

    def _read(self, key: str) -> Result | None:
        try:
            body = self._s3.get_object(Bucket=self._output, Key=key)
        except ClientError as error:
            if is_not_found(error):
                return None
            raise
        try:
            return Result.decode(body["Body"].read().decode())
        except (MessageError, UnicodeDecodeError):
            return None

    def ready(self) -> None:
        """Raise unless both buckets and the request queue answer."""
        self._s3.head_bucket(Bucket=self._input)
        self._s3.head_bucket(Bucket=self._output)
        self._sqs.get_queue_attributes(
            QueueUrl=self._request_queue_url, AttributeNames=["QueueArn"]
        )

    def _discard(self, key: str) -> None:
        try:
            self._s3.delete_object(Bucket=self._input, Key=key)
        except Exception as error:  # noqa: BLE001 - best effort; a lifecycle rule is the backstop
            log_failure(log, f"discard {key}", error)
