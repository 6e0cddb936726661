"""Where each MODELS entry's package is now, for the worker's start and its rollout
(worker.served.Rollout): a local path is where its symbolic link points; a versionless S3 entry
`s3://BUCKET/models/NAME/` is the version its pointer `models/NAME/CURRENT` names; a version's
own prefix never changes, so it is not watched.

A pointer is read at most every MODEL_POINTER_CHECK_S (10 s), each read a GET conditional on
the ETag of the last (If-None-Match): unchanged, S3 answers 304 with no body. S3 bills the GET
all the same ($0.0004 per 1,000 in us-east-1), so a worker following one pointer pays 8,640
GETs, $0.0035, a day (docs/models.md).
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Mapping

from botocore.exceptions import ClientError

from runtime.failures import describe, is_not_found
from runtime.keys import (
    followed_model,
    is_model_version,
    model_package_prefix,
    model_pointer_key,
    split_s3_url,
)
from worker.package import PackageError, Unreadable

# A pointer holds one version's name; anything longer is not one, and is not read whole.
POINTER_MAX_BYTES = 256


class Pointer:
    """The version models/NAME/CURRENT names, as the prefix of its package."""

    def __init__(self, s3, bucket: str, name: str, check_s: float, clock=time.monotonic):
        self._s3, self._bucket, self._name = s3, bucket, name
        self._key = model_pointer_key(name)
        self._check_s, self._clock = check_s, clock
        self._read_at = float("-inf")
        self._etag, self._target = "", ""

    @property
    def url(self) -> str:
        return f"s3://{self._bucket}/{self._key}"

    def target(self) -> str:
        """`s3://BUCKET/models/NAME/<version>/`; between reads, the last one read. PackageError
        with one line when the pointer is missing or names no version; Unreadable when S3 does
        not answer. Either way the next read comes only after check_s."""
        if self._target and self._clock() - self._read_at < self._check_s:
            return self._target
        self._read_at = self._clock()
        condition = {"IfNoneMatch": self._etag} if self._target and self._etag else {}
        try:
            got = self._s3.get_object(Bucket=self._bucket, Key=self._key, **condition)
            body = got["Body"].read(POINTER_MAX_BYTES + 1)
        except Exception as error:  # noqa: BLE001 - boto3 raises several kinds
            if _not_modified(error):
                return self._target
            if is_not_found(error):
                raise PackageError(f"{self.url} does not exist") from None
            raise Unreadable(f"{self.url} cannot be read: {describe(error)}") from None
        version = body.decode("utf-8", "replace").strip()
        if len(body) > POINTER_MAX_BYTES or not is_model_version(version):
            raise PackageError(f"{self.url} names no version: {version[:64]!r}")
        self._etag = got.get("ETag", "")
        self._target = f"s3://{self._bucket}/{model_package_prefix(self._name, version)}"
        return self._target


def _not_modified(error: BaseException) -> bool:
    if not isinstance(error, ClientError):
        return False
    code = error.response.get("Error", {}).get("Code")
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code in ("304", "NotModified") or status == 304


def watched(packages: Mapping[str, str], s3, check_s: float) -> dict[str, Callable[[], str]]:
    """For each MODELS entry whose package can change, a call that says where it is now."""
    found: dict[str, Callable[[], str]] = {}
    for name, path in packages.items():
        if split_s3_url(path) is None:
            found[name] = functools.partial(os.path.realpath, path)
        elif (followed := followed_model(path)) is not None:
            found[name] = Pointer(s3, *followed, check_s).target
    return found
