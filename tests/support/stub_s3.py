"""The S3 calls the worker makes (get, put, head, download), in memory, with S3's not-found
errors and its conditional GET (ETag, If-None-Match: 304), for unit tests of worker.pipeline
beside tests.support.stub_lanes and of the model packages' fetch and pointers."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

from botocore.exceptions import ClientError


class StubS3:
    def __init__(self):
        self.objects: dict[tuple[str, str], bytes] = {}
        self.gets: list[str] = []  # keys read, in order

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        return sorted(k for b, k in self.objects if b == bucket and k.startswith(prefix))

    def get_object(self, *, Bucket: str, Key: str, IfNoneMatch: str = "") -> dict:  # noqa: N803 - boto3's names
        self.gets.append(Key)
        if (Bucket, Key) not in self.objects:
            raise ClientError({"Error": {"Code": "NoSuchKey", "Message": Key}}, "GetObject")
        etag = self.etag(Bucket, Key)
        if IfNoneMatch == etag:  # what boto3 raises for S3's 304
            raise ClientError(
                {
                    "Error": {"Code": "304", "Message": "Not Modified"},
                    "ResponseMetadata": {"HTTPStatusCode": 304},
                },
                "GetObject",
            )
        return {"Body": io.BytesIO(self.objects[Bucket, Key]), "ETag": etag}

    def etag(self, bucket: str, key: str) -> str:
        return f'"{hashlib.md5(self.objects[bucket, key]).hexdigest()}"'  # noqa: S324 - S3's

    def download_file(self, bucket: str, key: str, filename: str) -> None:
        self.gets.append(key)
        if (bucket, key) not in self.objects:
            raise ClientError({"Error": {"Code": "404", "Message": "Not Found"}}, "HeadObject")
        Path(filename).write_bytes(self.objects[bucket, key])

    def put_object(self, *, Bucket: str, Key: str, Body: bytes, **_) -> dict:  # noqa: N803
        self.objects[Bucket, Key] = Body
        return {}

    def head_object(self, *, Bucket: str, Key: str) -> dict:  # noqa: N803
        if (Bucket, Key) not in self.objects:
            raise ClientError({"Error": {"Code": "404", "Message": "Not Found"}}, "HeadObject")
        return {"ContentLength": len(self.objects[Bucket, Key])}
