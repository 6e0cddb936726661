"""The deployment's IAM policies, as pure functions of names: least privilege, checked by tests.

Three roles, one per tier:
- worker (instance profile of the fleet): its request queue, its two buckets' object prefixes,
  the reply queues by name prefix, its own metric namespace, and pulling its image from ECR.
  It cannot launch or touch instances.
- scaler: run instances only from the fleet's launch template and only tagged as the fleet;
  start, stop, terminate and tag only instances that carry the fleet tag; pass only the worker's
  role; read the queue depth and the throughput metric. No bucket access at all.
- web (instance profile of the web host): store uploads, queue requests, read results, own its
  reply queue; and assume the scaler role, so the scaler container on the same host runs with
  the scaler's rights alone rather than the host's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from runtime.readiness import READY_AT_TAG
from runtime.settings import Settings

# Must equal scaler.fleet's tags (a test checks): the deployment does not import a tier.
FLEET_TAG = "elastic-classifier:fleet"
SCALER_TAG_KEYS = (FLEET_TAG, "elastic-classifier:stopped-at", "elastic-classifier:started-at")
METRICS_NAMESPACE = "ElasticClassifier"  # runtime.cloudwatch.NAMESPACE
_ECR_IMAGE = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?/"
    r"(?P<repository>[a-z0-9._/-]+?)(?::[\w.-]+|@sha256:[0-9a-f]{64})?$"
)


@dataclass(frozen=True)
class Names:
    """Every name and ARN the policies mention, for one deployment in one account."""

    partition: str
    region: str
    account: str
    deployment: str
    settings: Settings

    def role(self, tier: str) -> str:
        return f"{self.deployment}-{tier}"

    def role_arn(self, tier: str) -> str:
        return f"arn:{self.partition}:iam::{self.account}:role/{self.role(tier)}"

    def queue_arn(self, name: str) -> str:
        return f"arn:{self.partition}:sqs:{self.region}:{self.account}:{name}"

    def bucket_arn(self, bucket: str, key_pattern: str = "") -> str:
        return f"arn:{self.partition}:s3:::{bucket}{'/' + key_pattern if key_pattern else ''}"

    def ec2_arn(self, resource: str, owner: str | None = None) -> str:
        account = self.account if owner is None else owner
        return f"arn:{self.partition}:ec2:{self.region}:{account}:{resource}"

    def launch_template_arn(self, template_id: str) -> str:
        return self.ec2_arn(f"launch-template/{template_id}")


def _statement(sid: str, actions: list[str], resources: list[str] | str, condition=None) -> dict:
    statement = {"Sid": sid, "Effect": "Allow", "Action": sorted(actions), "Resource": resources}
    if condition:
        statement["Condition"] = condition
    return statement


def _document(*statements: dict) -> dict:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def ec2_trust_policy() -> dict:
    return _document(
        {
            "Effect": "Allow",
            "Principal": {"Service": "ec2.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    )


def role_trust_policy(role_arn: str) -> dict:
    """Only the given role (the web host's) may assume this one."""
    return _document(
        {"Effect": "Allow", "Principal": {"AWS": role_arn}, "Action": "sts:AssumeRole"}
    )


def ecr_repository(image: str) -> tuple[str, str, str] | None:
    """(account, region, repository) when the image lives in ECR, else None."""
    match = _ECR_IMAGE.match(image)
    if match is None:
        return None
    return match["account"], match["region"], match["repository"]


def ecr_pull_statements(names: Names, image: str) -> list[dict]:
    """Pulling `image` when it lives in ECR (nothing otherwise: another registry is public)."""
    ecr = ecr_repository(image)
    if ecr is None:
        return []
    account, region, repository = ecr
    return [
        # GetAuthorizationToken has no resource type: it only yields a login token.
        _statement("EcrLogin", ["ecr:GetAuthorizationToken"], "*"),
        _statement(
            "PullImage",
            ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
            f"arn:{names.partition}:ecr:{region}:{account}:repository/{repository}",
        ),
    ]


def worker_policy(names: Names) -> dict:
    s = names.settings
    statements = [
        _statement(
            "ConsumeRequests",
            [
                "sqs:ChangeMessageVisibility",
                "sqs:DeleteMessage",
                "sqs:GetQueueAttributes",
                "sqs:GetQueueUrl",
                "sqs:ReceiveMessage",
            ],
            names.queue_arn(s.request_queue),
        ),
        _statement(
            "ReplyToWebProcesses",
            ["sqs:GetQueueUrl", "sqs:SendMessage"],
            names.queue_arn(f"{s.reply_queue_prefix}*"),
        ),
        _statement("ReadUploads", ["s3:GetObject"], names.bucket_arn(s.input_bucket, "uploads/*")),
        _statement(
            "WriteResults", ["s3:PutObject"], names.bucket_arn(s.output_bucket, "results/*")
        ),
        _statement(
            "PublishThroughput",
            ["cloudwatch:PutMetricData"],
            "*",  # PutMetricData has no resource type; the namespace condition scopes it
            {"StringEquals": {"cloudwatch:namespace": METRICS_NAMESPACE}},
        ),
        _statement(
            # Once its model is loaded, a worker says so on its instance (runtime.readiness):
            # only that one tag key, only on fleet instances.
            "TagItselfReady",
            ["ec2:CreateTags"],
            names.ec2_arn("instance/*"),
            {
                "StringEquals": {f"aws:ResourceTag/{FLEET_TAG}": s.fleet_name},
                "ForAllValues:StringEquals": {"aws:TagKeys": [READY_AT_TAG]},
            },
        ),
    ]
    statements += ecr_pull_statements(names, s.worker_image)
    return _document(*statements)


def scaler_policy(
    names: Names, launch_template_id: str, security_group_id: str, image_id: str
) -> dict:
    """A request may override a template's values: the image, security group and role it can
    name are pinned here too (the role by PassRole)."""
    s = names.settings
    template = names.launch_template_arn(launch_template_id)
    fleet_request_tag = {"StringEquals": {f"aws:RequestTag/{FLEET_TAG}": s.fleet_name}}
    fleet_resource_tag = {"StringEquals": {f"aws:ResourceTag/{FLEET_TAG}": s.fleet_name}}
    from_template = {"ArnEquals": {"ec2:LaunchTemplate": template}}
    return _document(
        _statement(
            "LaunchOnlyFleetInstances",
            ["ec2:RunInstances"],
            names.ec2_arn("instance/*"),
            {**fleet_request_tag, **from_template},
        ),
        _statement(
            # The other resources a launch touches: only as the fleet template prescribes.
            "LaunchFromFleetTemplateOnly",
            ["ec2:RunInstances"],
            [
                template,
                names.ec2_arn(f"image/{image_id}", owner=""),
                names.ec2_arn("subnet/*"),
                names.ec2_arn("network-interface/*"),
                names.ec2_arn(f"security-group/{security_group_id}"),
                names.ec2_arn("volume/*"),
            ],
            from_template,
        ),
        _statement(
            "TagAtLaunch",
            ["ec2:CreateTags"],
            [names.ec2_arn("instance/*"), names.ec2_arn("volume/*")],
            {"StringEquals": {"ec2:CreateAction": "RunInstances"}},
        ),
        _statement(
            "ManageFleetInstances",
            ["ec2:StartInstances", "ec2:StopInstances", "ec2:TerminateInstances"],
            names.ec2_arn("instance/*"),
            fleet_resource_tag,
        ),
        _statement(
            "TagFleetInstances",
            ["ec2:CreateTags"],
            names.ec2_arn("instance/*"),
            {
                **fleet_resource_tag,
                "ForAllValues:StringEquals": {"aws:TagKeys": list(SCALER_TAG_KEYS)},
            },
        ),
        _statement(
            # Describe calls have no resource-level permissions in EC2.
            "DescribeFleet",
            [
                "ec2:DescribeInstanceStatus",
                "ec2:DescribeInstances",
                "ec2:DescribeLaunchTemplateVersions",
                "ec2:DescribeLaunchTemplates",
            ],
            "*",
        ),
        _statement(
            "PassOnlyWorkerRole",
            ["iam:PassRole"],
            names.role_arn("worker"),
            {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}},
        ),
        _statement(
            "ReadQueueDepth",
            ["sqs:GetQueueAttributes", "sqs:GetQueueUrl"],
            [names.queue_arn(s.request_queue), names.queue_arn(s.dead_letter_queue)],
        ),
        _statement(
            # Metric reads have no resource type.
            "ReadThroughput",
            ["cloudwatch:GetMetricStatistics"],
            "*",
        ),
    )


def web_policy(names: Names, web_image: str = "") -> dict:
    """web_image: the image the web host pulls for its web and scaler containers."""
    s = names.settings
    statements = [
        _statement(
            "StoreUploads",
            ["s3:DeleteObject", "s3:PutObject"],
            names.bucket_arn(s.input_bucket, "uploads/*"),
        ),
        _statement("ReadResults", ["s3:GetObject"], names.bucket_arn(s.output_bucket, "results/*")),
        _statement(
            # The result cache by content hash: the web tier reads it and fills it from replies.
            "ResultCache",
            ["s3:GetObject", "s3:PutObject"],
            names.bucket_arn(s.output_bucket, "cache/*"),
        ),
        _statement(
            # HeadBucket (the readiness check) needs ListBucket on the bucket itself.
            "CheckBuckets",
            ["s3:ListBucket"],
            [names.bucket_arn(s.input_bucket), names.bucket_arn(s.output_bucket)],
        ),
        _statement(
            "QueueRequests",
            ["sqs:GetQueueAttributes", "sqs:GetQueueUrl", "sqs:SendMessage"],
            names.queue_arn(s.request_queue),
        ),
        _statement(
            "ReadDeadLetterDepth",
            ["sqs:GetQueueAttributes", "sqs:GetQueueUrl"],
            names.queue_arn(s.dead_letter_queue),
        ),
        _statement(
            "OwnReplyQueue",
            [
                "sqs:CreateQueue",
                "sqs:DeleteMessage",
                "sqs:DeleteQueue",
                "sqs:GetQueueAttributes",
                "sqs:GetQueueUrl",
                "sqs:ReceiveMessage",
                "sqs:TagQueue",
            ],
            names.queue_arn(f"{s.reply_queue_prefix}*"),
        ),
        _statement("RunScaler", ["sts:AssumeRole"], names.role_arn("scaler")),
    ]
    return _document(*statements, *ecr_pull_statements(names, web_image))
