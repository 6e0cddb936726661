"""The three S3 calls the worker makes (get, put, head), in memory, with S3's not-found errors,
for unit tests of worker.pipeline beside tests.support.stub_lanes."""

from __future__ import annotations

import io

from botocore.exceptions import ClientError


class StubS3:
    def __init__(self):
        self.objects: dict[tuple[str, str], bytes] = {}
        self.gets: list[str] = []  # keys read, in order

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        return sorted(k for b, k in self.objects if b == bucket and k.startswith(prefix))

    def get_object(self, *, Bucket: str, Key: str) -> dict:  # noqa: N803 - boto3's names
        self.gets.append(Key)
        if (Bucket, Key) not in self.objects:
            raise ClientError({"Error": {"Code": "NoSuchKey", "Message": Key}}, "GetObject")
        return {"Body": io.BytesIO(self.objects[Bucket, Key])}

    def put_object(self, *, Bucket: str, Key: str, Body: bytes, **_) -> dict:  # noqa: N803
        self.objects[Bucket, Key] = Body
        return {}

    def head_object(self, *, Bucket: str, Key: str) -> dict:  # noqa: N803
        if (Bucket, Key) not in self.objects:
            raise ClientError({"Error": {"Code": "404", "Message": "Not Found"}}, "HeadObject")
        return {"ContentLength": len(self.objects[Bucket, Key])}
