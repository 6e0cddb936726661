"""Idempotent provisioning of the buckets and queues, the same against moto, LocalStack and AWS."""

from __future__ import annotations

import json
import logging

from botocore.exceptions import ClientError

from runtime import keys
from runtime.resources import (
    BUCKET_ENCRYPTION,
    DLQ_RETENTION_S,
    QUEUE_ENCRYPTION,
    queue_retention_s,
)
from runtime.settings import Settings

log = logging.getLogger(__name__)

_OWNED_BUCKET_ERRORS = {"BucketAlreadyOwnedByYou"}


def provision(settings: Settings, s3, sqs, tags: dict[str, str] | None = None) -> dict:
    """Create (or confirm) both buckets and the request queue with its DLQ; return their ids."""
    tags = tags or {}
    for bucket in (settings.input_bucket, settings.output_bucket):
        ensure_private_bucket(s3, bucket, settings.aws_region, tags)
    days = settings.result_expiry_days
    ensure_expiry(s3, settings.input_bucket, dict.fromkeys(keys.EXPIRING_INPUTS, days))
    ensure_expiry(s3, settings.output_bucket, dict.fromkeys(keys.EXPIRING_OUTPUTS, days))
    dlq_url = ensure_queue(
        sqs, settings.dead_letter_queue, {"MessageRetentionPeriod": str(DLQ_RETENTION_S)}, tags
    )
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(settings.max_receive_count)}
    work = {
        "VisibilityTimeout": str(settings.visibility_timeout_s),
        "RedrivePolicy": json.dumps(redrive),
        "MessageRetentionPeriod": str(queue_retention_s(days)),
    }
    request_url = ensure_queue(sqs, settings.request_queue, work, tags)
    # Batch-job images: their own lane (workers serve it only when no upload waits).
    job_url = ensure_queue(sqs, settings.job_queue, work, tags)
    return {
        "request_queue_url": request_url,
        "job_queue_url": job_url,
        "dead_letter_queue_url": dlq_url,
    }


# What this service writes expires after RESULT_EXPIRY_DAYS, the async deadline (an upload
# queued that long must still be there to classify); the cache and anything else a user put in
# the buckets (the prefixes batch jobs read) stay. The web tier deletes only the uploads it failed
# to queue, so a lifecycle rule is what removes the rest.


def ensure_expiry(s3, bucket: str, days_by_prefix: dict[str, int]) -> None:
    """Lifecycle rules (they replace the bucket's): each prefix expires after its days."""
    rules = [
        {
            "ID": f"expire-{prefix.rstrip('/')}",
            "Filter": {"Prefix": prefix},
            "Status": "Enabled",
            "Expiration": {"Days": days},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
        }
        for prefix, days in days_by_prefix.items()
    ]
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": rules})


def ensure_private_bucket(s3, name: str, region: str, tags: dict[str, str]) -> None:
    kwargs = {"Bucket": name}
    if region != "us-east-1":  # S3 rejects an explicit us-east-1 constraint
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        s3.create_bucket(**kwargs)
        log.info("created bucket %s", name)
    except ClientError as error:
        if error.response["Error"]["Code"] not in _OWNED_BUCKET_ERRORS:
            raise
    s3.put_public_access_block(
        Bucket=name,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )
    s3.put_bucket_encryption(
        Bucket=name,
        ServerSideEncryptionConfiguration=BUCKET_ENCRYPTION,
    )
    if tags:
        s3.put_bucket_tagging(
            Bucket=name, Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in tags.items()]}
        )


def ensure_queue(sqs, name: str, attributes: dict[str, str], tags: dict[str, str]) -> str:
    """Create the queue, or bring an existing one's attributes to what we want."""
    wanted = {**QUEUE_ENCRYPTION, **attributes}
    try:
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    except ClientError as error:
        if error.response["Error"]["Code"] not in (
            "AWS.SimpleQueueService.NonExistentQueue",
            "QueueDoesNotExist",
        ):
            raise
        kwargs = {"QueueName": name, "Attributes": wanted}
        if tags:
            kwargs["tags"] = tags
        url = sqs.create_queue(**kwargs)["QueueUrl"]
        log.info("created queue %s", name)
        return url
    sqs.set_queue_attributes(QueueUrl=url, Attributes=wanted)
    return url
