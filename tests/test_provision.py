"""Provisioning against a real moto server (issue 11 finding 9: uploads expire)."""

from __future__ import annotations

from embedded.provision import provision
from runtime.resources import queue_retention_s
from runtime.settings import Settings


def test_uploads_expire_and_provisioning_is_idempotent(aws_client):
    settings = Settings(input_bucket="prov11-in", output_bucket="prov11-out", request_queue="p11")
    s3, sqs = aws_client("s3"), aws_client("sqs")
    for _ in range(2):
        provision(settings, s3, sqs)
    rules = s3.get_bucket_lifecycle_configuration(Bucket="prov11-in")["Rules"]
    (rule,) = [r for r in rules if r["Filter"] == {"Prefix": "uploads/"}]
    assert rule["Status"] == "Enabled"
    # As long as the async deadline (issue 26, finding 12: uploads went after a day).
    assert rule["Expiration"]["Days"] == settings.result_expiry_days
    for queue in (settings.request_queue, settings.job_queue):
        url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        assert int(attributes["MessageRetentionPeriod"]) == queue_retention_s(
            settings.result_expiry_days
        )
