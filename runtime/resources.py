"""What the tiers, the embedded stack and the deployment agree on about AWS resources: tags,
encryption and retention. Defined once here; each side imports it instead of a copy."""

from __future__ import annotations

# EC2 tags. An instance belongs to the fleet only if it carries FLEET_TAG = the fleet's name;
# the scaler's IAM policy allows tagging with these keys and no others.
FLEET_TAG = "elastic-classifier:fleet"
STOPPED_AT_TAG = "elastic-classifier:stopped-at"
STARTED_AT_TAG = "elastic-classifier:started-at"
SCALER_TAG_KEYS = (FLEET_TAG, STOPPED_AT_TAG, STARTED_AT_TAG)
# Set at launch only (no later tag call): a spare, launched to be stopped into the warm pool once
# its worker is ready (scaler.plan); it is a spare until its first stop tag.
SPARE_TAG = "elastic-classifier:spare"
# Set by a worker on its own instance once its model is loaded (runtime.readiness); the worker's
# IAM policy allows these keys (WORKER_TAG_KEYS) and no other, on fleet instances only.
READY_AT_TAG = "elastic-classifier:ready-at"
# Set by a worker on its own instance when the metadata service gives notice (a Spot
# interruption or a rebalance recommendation): the scaler counts the instance as gone.
NOTICE_AT_TAG = "elastic-classifier:notice-at"
# Set by a worker on its own instance as it works: images answered and AWS requests sent during
# this run (runtime.usage); the scaler's fleet listing reads it for the cost figures, free.
USAGE_TAG = "elastic-classifier:usage"
# Set by a worker on its own instance: the model versions it serves (runtime.model_versions),
# for the dashboard's list of workers.
MODELS_TAG = "elastic-classifier:models"
WORKER_TAG_KEYS = (READY_AT_TAG, NOTICE_AT_TAG, USAGE_TAG, MODELS_TAG)

# Every queue is encrypted at rest with SQS-managed keys (the API's string form here;
# CloudFormation takes the same attribute as a boolean).
QUEUE_SSE_ATTRIBUTE = "SqsManagedSseEnabled"
QUEUE_ENCRYPTION = {QUEUE_SSE_ATTRIBUTE: "true"}
DLQ_RETENTION_S = 14 * 24 * 3600  # SQS's longest: time to look at what failed
REPLY_RETENTION_S = 3600  # a reply nobody read within the hour has no waiter left
# What a request leaves (its upload, result, job rows and queued message) is kept
# RESULT_EXPIRY_DAYS, its async deadline: by the buckets' lifecycle rules and by the work
# queues' retention, so nothing expires before its deadline. SQS keeps a message 14 days at most.
MAX_RETENTION_DAYS = 14


def queue_retention_s(days: int) -> int:
    """A work queue's MessageRetentionPeriod for RESULT_EXPIRY_DAYS `days`."""
    return days * 24 * 3600


# Every bucket is encrypted at rest with S3-managed keys (SSE-S3).
BUCKET_SSE_ALGORITHM = "AES256"
BUCKET_ENCRYPTION = {
    "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": BUCKET_SSE_ALGORITHM}}]
}
