"""Where an upload goes: the input bucket, then a request on the queue; results are read back by
id, and the result cache by image hash. Replies are web.replies' conversation, not this one."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable

from botocore.exceptions import ClientError

from runtime.failures import is_not_found, is_taken, log_failure
from runtime.keys import JOBS, cache_key, result_key, started_key, upload_key
from runtime.messages import MessageError, Request, Result
from web.errors import RequestIdInUse, Unavailable

log = logging.getLogger(__name__)

# Cache entries belong to no request: whoever hits one gets it under its own id and filename.
_ANONYMOUS = {"id": "0" * 32, "filename": "", "token": "", "timings_ms": {}}
_CLOCK_SKEW_S = 10.0  # between this host and S3's LastModified
_DEADLINE = "deadline"  # an upload's metadata: epoch s until which its id is claimed


class UploadStore:
    def __init__(
        self,
        *,
        s3,
        sqs,
        input_bucket: str,
        output_bucket: str,
        request_queue_url: str,
        result_timeout_s: float,
        cache_preprocess: str | None = None,
        inline_max_bytes: int = 0,
        clock: Callable[[], float] = time.time,
    ):
        self._s3, self._sqs = s3, sqs
        self._input, self._output = input_bucket, output_bucket
        self._request_queue_url = request_queue_url
        self._timeout_s = result_timeout_s  # how long a stored upload may still be waited for
        self._clock = clock
        self._cache_preprocess = cache_preprocess  # PREPROCESS, or None: no cache
        # The version each model last answered with here. The web tier does not read the
        # packages (in compose and on AWS it has none), so a cached result is looked up under
        # the version the newest fresh answer of that model carried; before one, it is a miss.
        self._versions: dict[str, str] = {}
        self._inline_max_bytes = inline_max_bytes

    def submit(self, request: Request, data: bytes) -> None:
        """Store the bytes, then queue the request; on failure leave nothing half-written.

        The upload is written only if its key is new, so a client-chosen id can never replace
        the bytes of another submission that a worker is about to read.
        """
        try:
            self._put_upload(request, data)
        except ClientError as error:
            if is_taken(error):
                raise RequestIdInUse(request.id) from None
            raise Unavailable(f"could not store the upload: {type(error).__name__}") from error
        except RequestIdInUse:
            raise
        except Exception as error:  # noqa: BLE001 - any AWS failure means "try again later"
            log_failure(log, f"store upload {request.key}", error)
            raise Unavailable(f"could not store the upload: {type(error).__name__}") from error
        # Stored first all the same: the input bucket keeps every upload, whatever the message
        # carries.
        message = request.with_inline(data, self._inline_max_bytes)
        try:
            self._sqs.send_message(QueueUrl=self._request_queue_url, MessageBody=message.encode())
        except Exception as error:  # noqa: BLE001
            self._discard(request.key)
            raise Unavailable(f"could not queue the request: {type(error).__name__}") from error

    def _put_upload(self, request: Request, data: bytes) -> None:
        """Write the bytes only if the key is new, or if it belongs to a submission whose
        deadline passed (nobody waits for it any more), so a client may retry under its own id
        after a 504. The deadline is the submission's own, stored with the bytes: an
        asynchronous upload's id stays claimed until its async deadline, not the sync timeout.
        The replacement is conditional on the old object's ETag: of two retries racing for
        it, one wins, the other gets a 409."""
        claim = {"Metadata": {_DEADLINE: f"{request.deadline:.3f}"}}
        try:
            self._s3.put_object(
                Bucket=self._input, Key=request.key, Body=data, IfNoneMatch="*", **claim
            )
            return
        except ClientError as error:
            if not is_taken(error):
                raise
        head = self._s3.head_object(Bucket=self._input, Key=request.key)
        if self._clock() < self._claimed_until(head) + _CLOCK_SKEW_S:
            raise RequestIdInUse(request.id)
        self._s3.put_object(
            Bucket=self._input, Key=request.key, Body=data, IfMatch=head["ETag"], **claim
        )

    def _claimed_until(self, head: dict) -> float:
        try:
            return float(head.get("Metadata", {})[_DEADLINE])
        except (KeyError, ValueError):  # stored before deadlines were: the sync timeout's
            return head["LastModified"].timestamp() + self._timeout_s

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
        except Exception as error:  # noqa: BLE001 - AWS away: a 503 to retry, never a 500
            if is_not_found(error):
                return False
            raise Unavailable(f"could not read the state: {type(error).__name__}") from error
        return True

    def result(self, request_id: str) -> Result | None:
        try:
            return self._read(result_key(request_id))
        except Exception as error:  # noqa: BLE001 - AWS away: a 503 to retry, never a 500
            raise Unavailable(f"could not read results: {type(error).__name__}") from error

    def cached(self, sha256: str, request: Request) -> Result | None:
        """The cached result for the same bytes and model, as the answer to `request`: its own
        id and filename, nothing of whoever uploaded the bytes first."""
        version = self._versions.get(request.model)
        if self._cache_preprocess is None or not version:
            return None
        try:
            hit = self._read(cache_key(request.model, version, self._cache_preprocess, sha256))
        except Exception as error:  # noqa: BLE001 - a cache that cannot be read is a miss
            log_failure(log, "read the result cache", error)
            return None
        if hit is None or not hit.ok:
            return None
        return dataclasses.replace(hit, id=request.id, filename=request.filename, token="")

    def remember(self, result: Result) -> None:
        """Fill the cache from a fresh result, under the hash of the bytes the worker says it
        classified (a result without one is not cached)."""
        if self._cache_preprocess is None or not result.ok or not result.sha256:
            return
        if not result.model or not result.version:
            return  # a model without a version: a retrained one could not be told apart
        self._versions[result.model] = result.version
        self._write(
            cache_key(result.model, result.version, self._cache_preprocess, result.sha256),
            dataclasses.replace(result, **_ANONYMOUS),
        )

    def record(self, result: Result) -> None:
        """Store a cache hit's answer under its own id, so GET /results/<id> finds it; never
        over a result that is already there."""
        self._write(result_key(result.id), result, only_new=True)

    def _write(self, key: str, result: Result, *, only_new: bool = False) -> None:
        condition = {"IfNoneMatch": "*"} if only_new else {}
        try:
            self._s3.put_object(
                Bucket=self._output, Key=key, Body=result.encode().encode(), **condition
            )
        except Exception:  # noqa: BLE001, S110 - a later miss or 404 is the only cost
            pass

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
        # A listing under jobs/, not HeadBucket: the web role may list nowhere else.
        for bucket in (self._input, self._output):
            self._s3.list_objects_v2(Bucket=bucket, Prefix=JOBS, MaxKeys=1)
        self._sqs.get_queue_attributes(
            QueueUrl=self._request_queue_url, AttributeNames=["QueueArn"]
        )

    def _discard(self, key: str) -> None:
        try:
            self._s3.delete_object(Bucket=self._input, Key=key)
        except Exception as error:  # noqa: BLE001 - best effort; a lifecycle rule is the backstop
            log_failure(log, f"discard {key}", error)
