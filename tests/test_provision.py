"""Provisioning against a real moto server (issue 11 finding 9: uploads expire)."""

from __future__ import annotations

from embedded.provision import UPLOADS_EXPIRE_DAYS, provision
from runtime.settings import Settings


def test_uploads_expire_and_provisioning_is_idempotent(aws_client):
    settings = Settings(input_bucket="prov11-in", output_bucket="prov11-out", request_queue="p11")
    s3, sqs = aws_client("s3"), aws_client("sqs")
    for _ in range(2):
        provision(settings, s3, sqs)
    rules = s3.get_bucket_lifecycle_configuration(Bucket="prov11-in")["Rules"]
    (rule,) = [r for r in rules if r["Filter"] == {"Prefix": "uploads/"}]
    assert rule["Status"] == "Enabled"
    assert rule["Expiration"]["Days"] == UPLOADS_EXPIRE_DAYS
