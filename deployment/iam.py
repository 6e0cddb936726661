"""The stack's IAM policies: least privilege, as CloudFormation expressions, checked by tests.

Three roles for two kinds of host. The web host runs two containers from the web image: the
scaler (host network, so the only process there that reaches instance metadata: the host's
launch template sets IMDSv2 with a hop limit of 1) holds the instance role, and the web tier
(a bridge network, one hop too far for a metadata token) holds the web role's short-lived
credentials, which the scaler obtains with the one AssumeRole below and hands over in a file
(scaler.web_credentials). No other role may assume another:
- worker (the fleet's instance profile): its request queue, uploads and jobs' staged images in
  the input bucket, its result prefixes in the output bucket,
  the reply queues by name prefix, its own metric namespace, pulling its image, and four tags
  (WORKER_TAG_KEYS: ready, under notice, usage, models; on fleet instances: runtime.readiness,
  runtime.usage, runtime.model_versions). No other ec2:.
- scaler (the web host's instance profile): launch only from the fleet's launch template, only
  tagged as the fleet, only of the stack's worker instance types and only with IMDSv2; start,
  stop, terminate and tag only fleet-tagged instances; pass only the worker's role; read the
  queue depth and the throughput metric; read and write its one estimates object in the output
  bucket (keys.SCALER_ESTIMATES); pull the host image; assume the web role (a policy of its own,
  as the web role's trust names the scaler role). No other s3:.
- web (assumable by the scaler role alone, no instance profile): store uploads, queue requests,
  read results, list only under jobs/, own its reply queue, settle dead letters. No ec2:, no
  iam:, no sts:, no ecr: (the host pulls its image with the instance role).

How many instances the scaler may run is not expressible in IAM (RunInstances has no count
condition key): FLEET_MAX in the scaler bounds it, the account's EC2 vCPU quota backs that up.
Nor can IAM pin the user-data of a launch: a request that overrides the template's user-data
still gets the worker role and the pinned type, image, group and tags.
"""

from __future__ import annotations

from runtime import keys
from runtime.cloudwatch import NAMESPACE as METRICS_NAMESPACE
from runtime.resources import FLEET_TAG, SCALER_TAG_KEYS, WORKER_TAG_KEYS

# The names the stack gives what the tiers find by name (Settings derives the DLQ's).
REQUEST_QUEUE = "${AWS::StackName}-requests"
JOB_QUEUE = f"{REQUEST_QUEUE}-jobs"  # Settings.job_queue: the batch-job lane
REPLY_QUEUE_PREFIX = "${AWS::StackName}-reply-"
FLEET_NAME = "${AWS::StackName}-workers"
LAUNCH_TEMPLATE = "${AWS::StackName}-worker"

_ARN = "arn:${AWS::Partition}"
_REGIONAL = "${AWS::Region}:${AWS::AccountId}"


def sub(text: str) -> dict:
    return {"Fn::Sub": text}


def queue_arn(name: str) -> dict:
    return sub(f"{_ARN}:sqs:{_REGIONAL}:{name}")


def bucket_arn(bucket_resource: str, key_pattern: str = "") -> dict:
    return sub(f"{_ARN}:s3:::${{{bucket_resource}}}{'/' + key_pattern if key_pattern else ''}")


def ec2_arn(resource: str) -> dict:
    return sub(f"{_ARN}:ec2:{_REGIONAL}:{resource}")


def repository_arn(repository_parameter: str) -> dict:
    return sub(f"{_ARN}:ecr:{_REGIONAL}:repository/${{{repository_parameter}}}")


def _statement(sid: str, actions: list[str], resources, condition=None) -> dict:
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


def assumed_by_trust_policy(role_resource: str) -> dict:
    """Only that role of this stack may assume this one (no service, no account root)."""
    return _document(
        {
            "Effect": "Allow",
            "Principal": {"AWS": {"Fn::GetAtt": [role_resource, "Arn"]}},
            "Action": "sts:AssumeRole",
        }
    )


def web_handover_policy() -> dict:
    """The scaler role's one right over another role: sessions of the web role, to hand over."""
    return _document(
        _statement("AssumeWebRole", ["sts:AssumeRole"], {"Fn::GetAtt": ["WebRole", "Arn"]})
    )


def pull_statements(repository_parameter: str) -> list[dict]:
    return [
        # GetAuthorizationToken has no resource type: it only yields a login token.
        _statement("EcrLogin", ["ecr:GetAuthorizationToken"], "*"),
        _statement(
            "PullImage",
            ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
            repository_arn(repository_parameter),
        ),
    ]


def worker_policy() -> dict:
    return _document(
        _statement(
            "ConsumeRequests",
            [
                "sqs:ChangeMessageVisibility",
                "sqs:DeleteMessage",
                "sqs:GetQueueAttributes",
                "sqs:GetQueueUrl",
                "sqs:ReceiveMessage",
            ],
            [queue_arn(REQUEST_QUEUE), queue_arn(JOB_QUEUE)],
        ),
        _statement(
            "ReplyToWebProcesses",
            ["sqs:GetQueueUrl", "sqs:SendMessage"],
            queue_arn(f"{REPLY_QUEUE_PREFIX}*"),
        ),
        # Uploads and jobs' staged images only (keys.staged_key). Prefix jobs (JOB_PREFIXES) are
        # off in this stack: an operator who allows one grants its folder here as well.
        _statement(
            "ReadInputs",
            ["s3:GetObject"],
            [
                bucket_arn("InputBucket", f"{keys.UPLOADS}*"),
                bucket_arn("InputBucket", f"{keys.JOBS}*/{keys.STAGED}*"),
            ],
        ),
        # The model area (MODELS=name=s3://<InputBucket>/models/<name>/<version>/): read only.
        # Nobody in the stack writes it: the operator uploads packages with their own rights.
        _statement("ReadModels", ["s3:GetObject"], bucket_arn("InputBucket", f"{keys.MODELS}*")),
        _statement(
            "WriteResults",
            ["s3:PutObject"],
            [bucket_arn("OutputBucket", f"{p}*") for p in (keys.RESULTS, keys.STARTED, keys.JOBS)],
        ),
        # A job image's stored result means a second delivery is skipped.
        _statement("ReadJobResults", ["s3:GetObject"], bucket_arn("OutputBucket", f"{keys.JOBS}*")),
        _statement(
            "PublishThroughput",
            ["cloudwatch:PutMetricData"],
            "*",  # PutMetricData has no resource type; the namespace condition scopes it
            {"StringEquals": {"cloudwatch:namespace": METRICS_NAMESPACE}},
        ),
        _statement(
            # Once its model is loaded, once it has notice of an interruption, and as it works
            # (what it has used: runtime.usage), a worker says so on its instance
            # (runtime.readiness): only those tag keys, only on fleet instances.
            "TagItsOwnState",
            ["ec2:CreateTags"],
            ec2_arn("instance/*"),
            {
                "StringEquals": {f"aws:ResourceTag/{FLEET_TAG}": sub(FLEET_NAME)},
                "ForAllValues:StringEquals": {"aws:TagKeys": list(WORKER_TAG_KEYS)},
            },
        ),
        *pull_statements("WorkerRepository"),
    )


def scaler_policy() -> dict:
    """A launch request may override a template's values: what it may name is pinned here too
    (type, image, group, IMDSv2; the role by PassRole)."""
    template = ec2_arn("launch-template/${WorkerLaunchTemplate}")
    from_template = {"ArnEquals": {"ec2:LaunchTemplate": template}}
    fleet_resource_tag = {"StringEquals": {f"aws:ResourceTag/{FLEET_TAG}": sub(FLEET_NAME)}}
    return _document(
        _statement(
            "LaunchOnlyFleetInstances",
            ["ec2:RunInstances"],
            ec2_arn("instance/*"),
            {
                "StringEquals": {
                    f"aws:RequestTag/{FLEET_TAG}": sub(FLEET_NAME),
                    # Any of the allowed types (a list in a condition is any of its values).
                    "ec2:InstanceType": {"Fn::Split": [",", {"Ref": "WorkerInstanceTypes"}]},
                    "ec2:MetadataHttpTokens": "required",
                },
                **from_template,
            },
        ),
        _statement(
            # The other resources a launch touches: only as the fleet template prescribes.
            "LaunchFromFleetTemplateOnly",
            ["ec2:RunInstances"],
            [
                template,
                sub(f"{_ARN}:ec2:${{AWS::Region}}::image/${{ImageId}}"),
                ec2_arn("subnet/*"),
                ec2_arn("network-interface/*"),
                ec2_arn("security-group/${WorkerGroup.GroupId}"),
                ec2_arn("volume/*"),
            ],
            from_template,
        ),
        _statement(
            # A Spot launch also creates a Spot request; alone it launches nothing: the instance
            # it asks for still needs every condition above.
            "RequestSpotCapacity",
            ["ec2:RunInstances"],
            ec2_arn("spot-instances-request/*"),
        ),
        _statement(
            "TagAtLaunch",
            ["ec2:CreateTags"],
            [ec2_arn("instance/*"), ec2_arn("volume/*")],
            {"StringEquals": {"ec2:CreateAction": "RunInstances"}},
        ),
        _statement(
            "ManageFleetInstances",
            ["ec2:StartInstances", "ec2:StopInstances", "ec2:TerminateInstances"],
            ec2_arn("instance/*"),
            fleet_resource_tag,
        ),
        _statement(
            "TagFleetInstances",
            ["ec2:CreateTags"],
            ec2_arn("instance/*"),
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
            {"Fn::GetAtt": ["WorkerRole", "Arn"]},
            {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}},
        ),
        _statement(
            "ReadQueueDepth",
            ["sqs:GetQueueAttributes", "sqs:GetQueueUrl"],
            [queue_arn(REQUEST_QUEUE), queue_arn(f"{REQUEST_QUEUE}-dlq"), queue_arn(JOB_QUEUE)],
        ),
        # Metric reads have no resource type.
        _statement("ReadThroughput", ["cloudwatch:GetMetricStatistics"], "*"),
        _statement(
            # What it measured (boot times, throughput): one object, kept across its restarts.
            "KeepEstimates",
            ["s3:GetObject", "s3:PutObject"],
            bucket_arn("OutputBucket", keys.SCALER_ESTIMATES),
        ),
        *pull_statements("WebRepository"),
    )


def web_policy() -> dict:
    return _document(
        _statement(
            # GetObject: HeadObject, to see whether a client's retry may reclaim its own id.
            "StoreUploads",
            ["s3:DeleteObject", "s3:GetObject", "s3:PutObject"],
            [
                bucket_arn("InputBucket", f"{keys.UPLOADS}*"),
                bucket_arn("InputBucket", f"{keys.JOBS}*"),
            ],
        ),
        _statement(
            # PutObject: a cache hit's answer stored under its own id (conditionally, never
            # over a worker's result), so GET /results/<id> finds it.
            "ReadResults",
            ["s3:GetObject", "s3:PutObject"],
            bucket_arn("OutputBucket", f"{keys.RESULTS}*"),
        ),
        # An asynchronous upload a worker has taken is `in progress` (HEAD needs GetObject).
        _statement("ReadStarted", ["s3:GetObject"], bucket_arn("OutputBucket", f"{keys.STARTED}*")),
        _statement(
            # A batch job's manifest and results: written by the web tier (refused images) too,
            # and deleted when the job could not be queued whole (web.jobs.store).
            "JobResults",
            ["s3:DeleteObject", "s3:GetObject", "s3:PutObject"],
            bucket_arn("OutputBucket", f"{keys.JOBS}*"),
        ),
        _statement(
            # The result cache by content hash: the web tier reads it and fills it from replies.
            "ResultCache",
            ["s3:GetObject", "s3:PutObject"],
            bucket_arn("OutputBucket", f"{keys.CACHE}*"),
        ),
        _statement(
            # A job's progress (output) and the discard of a refused job's staging (input) list
            # under jobs/ only; the readiness check lists there too (HeadBucket would need the
            # whole bucket). No other listing: a client never learns another area's key names.
            "ListJobAreas",
            ["s3:ListBucket"],
            [bucket_arn("InputBucket"), bucket_arn("OutputBucket")],
            {"StringLike": {"s3:prefix": [f"{keys.JOBS}*"]}},
        ),
        _statement(
            "QueueRequests",
            ["sqs:GetQueueAttributes", "sqs:GetQueueUrl", "sqs:SendMessage"],
            [queue_arn(REQUEST_QUEUE), queue_arn(JOB_QUEUE)],
        ),
        _statement(
            # Its depth for /status; each dead letter read, stored as its client's error and
            # deleted (web.deadletters).
            "SettleDeadLetters",
            [
                "sqs:DeleteMessage",
                "sqs:GetQueueAttributes",
                "sqs:GetQueueUrl",
                "sqs:ReceiveMessage",
            ],
            queue_arn(f"{REQUEST_QUEUE}-dlq"),
        ),
        _statement(
            "OwnReplyQueue",
            [
                "sqs:CreateQueue",
                "sqs:DeleteMessage",
                "sqs:DeleteQueue",
                "sqs:GetQueueAttributes",
                "sqs:GetQueueUrl",
                "sqs:ListQueueTags",
                "sqs:ReceiveMessage",
                "sqs:TagQueue",
            ],
            queue_arn(f"{REPLY_QUEUE_PREFIX}*"),
        ),
        # The reply-queue janitor lists queues by name prefix; ListQueues has no resource type.
        _statement("FindOrphanReplyQueues", ["sqs:ListQueues"], "*"),
        _statement(
            # Accepted uploads per second: the scaler's arrival rate.
            "PublishArrivals",
            ["cloudwatch:PutMetricData"],
            "*",  # PutMetricData has no resource type; the namespace condition scopes it
            {"StringEquals": {"cloudwatch:namespace": METRICS_NAMESPACE}},
        ),
    )
