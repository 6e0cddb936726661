"""The CloudFormation template of the whole deployment, generated from the code it must agree with.

`python -m deployment template` writes deployment/template.yaml, which is committed and reviewed
like code; a test fails when the file differs from what this module generates, so the template's
user-data and policies cannot drift from docker/host-user-data.sh and deployment/iam.py.

Two kinds of host: the workers (launched by the scaler from the launch template, under the worker
role) and one web host running two containers of the web image. There the scaler, on the host
network, holds the instance role (the scaler role: it must launch instances); the web tier, on a
bridge network, cannot get a metadata token (IMDSv2 with a hop limit of 1) and works with the web
role's short-lived credentials, which the scaler assumes and hands over (runtime.web_credentials),
so the internet-facing process never holds, or can obtain, the right to launch instances.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from deployment import iam, userdata
from runtime import keys
from runtime.resources import (
    BUCKET_SSE_ALGORITHM,
    DLQ_RETENTION_S,
    QUEUE_SSE_ATTRIBUTE,
    queue_retention_s,
)
from runtime.settings import DEAD_LETTER_SUFFIX, DEFAULT_POLICY, MARKETS, POLICIES, Settings

PATH = Path(__file__).resolve().parent / "template.yaml"
DEPLOYMENT_TAG = "elastic-classifier:deployment"
AL2023 = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
SCALER_STOP_TIMEOUT_S = 30
_REGISTRY = "${AWS::AccountId}.dkr.ecr.${AWS::Region}.amazonaws.com"
_NAME_PATTERN = r"^[A-Za-z0-9_.-]+$"  # no quote, space or `$`: values go into user-data quoted
# In the cloud Spot is 60-90 % cheaper and a refusal falls back to on-demand (docs/scaling.md).
CLOUD_MARKET = "spot-with-fallback"
# Several types, so Spot capacity is found in one of them; the first is the template's.
WORKER_TYPES = "c6i.large,c7i.large,m6i.large"
# A package of the stack's model area: NAME=s3://<InputBucket>/models/NAME/VERSION/, or without
# the version (NAME=s3://<InputBucket>/models/NAME/: workers follow models/NAME/CURRENT), the
# name twice alike (the \N back-reference; CloudFormation's Java patterns have them too). Bucket
# and version take no quote, space or `$`, as the value goes into user-data quoted.
_MODEL = r"[a-z0-9][a-z0-9._-]{0,63}"  # runtime.messages.MODEL_NAME
_BUCKET_NAME = r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]"
_VERSION = r"[A-Za-z0-9_-][A-Za-z0-9._-]*"  # runtime.keys.MODEL_VERSION: never `..`


def _model_entry(group: int) -> str:
    return rf"({_MODEL})=s3://{_BUCKET_NAME}/{keys.MODELS}\{group}/(?:{_VERSION}/)?"


MODELS_PATTERN = rf"^(?:{_model_entry(1)}(?:,{_model_entry(2)})*)?$"


def worker_types() -> dict:
    """The allowed worker types as a list, from the comma-separated parameter."""
    return {"Fn::Split": [",", ref("WorkerInstanceTypes")]}


def ref(name: str) -> dict:
    return {"Ref": name}


def get_att(resource: str, attribute: str) -> dict:
    return {"Fn::GetAtt": [resource, attribute]}


def image(repository_parameter: str) -> dict:
    return iam.sub(f"{_REGISTRY}/${{{repository_parameter}}}:${{ImageTag}}")


def _skip(*checks: tuple[str, str]) -> dict:
    """Checkov checks that do not apply here, each with its reason, kept beside the resource."""
    return {"checkov": {"skip": [{"id": check, "comment": why} for check, why in checks]}}


def parameters() -> dict:
    def text(description: str, default: str | None = None, pattern: str = _NAME_PATTERN) -> dict:
        spec = {"Type": "String", "Description": description, "AllowedPattern": pattern}
        return spec if default is None else {**spec, "Default": default}

    repository = r"^[a-z0-9]+(?:[._/-][a-z0-9]+)*$"
    instance_type = r"^[a-z0-9-]+\.[a-z0-9]+$"
    return {
        "ImageTag": text(
            "tag of both images in this account's ECR", pattern=r"^[\w][\w.-]{0,127}$"
        ),
        "WorkerRepository": text(
            "ECR repository of the worker image", "elastic-classifier-worker", repository
        ),
        "WebRepository": text(
            "ECR repository of the web image (runs the web tier and the scaler)",
            "elastic-classifier-web",
            repository,
        ),
        "WebCidr": text(
            "addresses that may reach the upload page, e.g. 203.0.113.0/24",
            pattern=r"^\d{1,3}(\.\d{1,3}){3}/\d{1,2}$",
        ),
        "WorkerInstanceTypes": text(
            "the workers' instance types, comma-separated, tried in order (the scaler may"
            " launch no other; the first is the launch template's)",
            WORKER_TYPES,
            rf"{instance_type[:-1]}(,{instance_type[1:-1]})*$",
        ),
        "FleetMarket": {
            "Type": "String",
            "Description": "how workers are bought (FLEET_MARKET)",
            "Default": CLOUD_MARKET,
            "AllowedValues": list(MARKETS),
        },
        "WebInstanceType": text(
            "the web host's instance type (it runs the web tier and the scaler)",
            "t3.small",
            instance_type,
        ),
        "FleetMax": {
            "Type": "Number",
            "Description": "most running workers (FLEET_MAX)",
            "Default": 8,
            "MinValue": 1,
            "MaxValue": 100,
        },
        "Policy": {
            "Type": "String",
            "Description": "scaling policy (POLICY)",
            "Default": DEFAULT_POLICY,
            "AllowedValues": list(POLICIES),
        },
        "Model": text("classifier the workers run (MODEL)", Settings.model),
        "Models": text(
            "packages served beside Model (MODELS), comma-separated"
            " NAME=s3://<InputBucket>/models/NAME/VERSION/, or NAME=s3://<InputBucket>/models/NAME/"
            " to follow the version models/NAME/CURRENT names; empty: none (docs/models.md)",
            Settings.models,
            MODELS_PATTERN,
        ),
        "ImageId": {
            "Type": "AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>",
            "Description": "machine image of every host (needs bash, curl and dnf or docker)",
            "Default": AL2023,
        },
    }


def _bucket(expiring: tuple[str, ...], days: int) -> dict:
    """Each prefix of `expiring` expires after `days` (RESULT_EXPIRY_DAYS: not a parameter, so
    the stack's rules and its hosts' setting cannot disagree)."""
    rules = [
        {
            "Id": f"expire-{prefix.rstrip('/')}",
            "Status": "Enabled",
            "Prefix": prefix,
            "ExpirationInDays": days,
        }
        for prefix in expiring
    ]
    rules.append(
        {
            "Id": "abort-incomplete-uploads",
            "Status": "Enabled",
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
        }
    )
    return {
        "Type": "AWS::S3::Bucket",
        # Data outlives the stack unless teardown is told otherwise (it empties and deletes).
        "DeletionPolicy": "Retain",
        "UpdateReplacePolicy": "Retain",
        "Metadata": _skip(
            (
                "CKV_AWS_18",
                "objects are short-lived service data; CloudTrail data events log access",
            ),
            ("CKV_AWS_21", "versioning would keep expired uploads; results are recomputable"),
        ),
        "Properties": {
            "BucketEncryption": {
                "ServerSideEncryptionConfiguration": [
                    {"ServerSideEncryptionByDefault": {"SSEAlgorithm": BUCKET_SSE_ALGORITHM}}
                ]
            },
            "PublicAccessBlockConfiguration": {
                "BlockPublicAcls": True,
                "BlockPublicPolicy": True,
                "IgnorePublicAcls": True,
                "RestrictPublicBuckets": True,
            },
            "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
            "LifecycleConfiguration": {"Rules": rules},
        },
    }


def _tls_only(bucket: str) -> dict:
    return {
        "Type": "AWS::S3::BucketPolicy",
        "Properties": {
            "Bucket": ref(bucket),
            "PolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "TlsOnly",
                        "Effect": "Deny",
                        "Principal": "*",
                        "Action": "s3:*",
                        "Resource": [iam.bucket_arn(bucket), iam.bucket_arn(bucket, "*")],
                        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                    }
                ],
            },
        },
    }


def _queues(settings: Settings) -> dict:
    sse = _skip(("CKV_AWS_27", "encrypted by SQS-managed SSE; checkov recognises only KMS keys"))
    return {
        "DeadLetterQueue": {
            "Type": "AWS::SQS::Queue",
            "Metadata": sse,
            "Properties": {
                "QueueName": iam.sub(f"{iam.REQUEST_QUEUE}{DEAD_LETTER_SUFFIX}"),
                QUEUE_SSE_ATTRIBUTE: True,
                "MessageRetentionPeriod": DLQ_RETENTION_S,
            },
        },
        "RequestQueue": _work_queue(settings, iam.REQUEST_QUEUE, sse),
        # Batch-job images: a lane of their own, served when no interactive request waits.
        "JobQueue": _work_queue(settings, iam.JOB_QUEUE, sse),
    }


def _work_queue(settings: Settings, name: str, metadata: dict) -> dict:
    return {
        "Type": "AWS::SQS::Queue",
        "Metadata": metadata,
        "Properties": {
            "QueueName": iam.sub(name),
            QUEUE_SSE_ATTRIBUTE: True,
            "VisibilityTimeout": settings.visibility_timeout_s,
            # A queued request lives as long as its upload and its async deadline.
            "MessageRetentionPeriod": queue_retention_s(settings.result_expiry_days),
            "RedrivePolicy": {
                "deadLetterTargetArn": get_att("DeadLetterQueue", "Arn"),
                "maxReceiveCount": settings.max_receive_count,
            },
        },
    }


def _group(description: str, ingress: list[dict]) -> dict:
    return {
        "Type": "AWS::EC2::SecurityGroup",
        "Properties": {
            "GroupDescription": description,
            "SecurityGroupIngress": ingress,
            # Egress stays the default (all): hosts reach AWS APIs and ECR without VPC endpoints.
        },
    }


def _groups(settings: Settings) -> dict:
    def tcp(port: int, source: dict, why: str) -> dict:
        return {"IpProtocol": "tcp", "FromPort": port, "ToPort": port, "Description": why, **source}

    return {
        "WorkerGroup": _group("elastic-classifier workers: no inbound", []),
        "WebGroup": _group(
            "elastic-classifier web host: the upload port from WebCidr",
            [tcp(settings.port, {"CidrIp": ref("WebCidr")}, "uploads")],
        ),
    }


def _role(tier: str, policy: dict, trust: dict | None = None) -> dict:
    """A role; with no trust given, an instance profile's (EC2 assumes it)."""
    role = {
        f"{tier}Role": {
            "Type": "AWS::IAM::Role",
            "Properties": {
                "AssumeRolePolicyDocument": trust or iam.ec2_trust_policy(),
                "Description": iam.sub(f"elastic-classifier {tier.lower()} (${{AWS::StackName}})"),
                "Policies": [{"PolicyName": tier.lower(), "PolicyDocument": policy}],
            },
        },
    }
    if trust is None:
        role[f"{tier}Profile"] = {
            "Type": "AWS::IAM::InstanceProfile",
            "Properties": {"Roles": [ref(f"{tier}Role")]},
        }
    return role


def _web_handover() -> dict:
    """The scaler role's AssumeRole on the web role, apart from its policy: the web role's trust
    names the scaler role, so inside the scaler role it would be a dependency cycle."""
    return {
        "ScalerAssumesWebRole": {
            "Type": "AWS::IAM::Policy",
            "Properties": {
                "PolicyName": "assume-web-role",
                "PolicyDocument": iam.web_handover_policy(),
                "Roles": [ref("ScalerRole")],
            },
        }
    }


# A container on a bridge network is one hop further than the host: with a hop limit of 1 its
# metadata token never arrives, so only host-network processes get the instance role.
HOST_NETWORK_ONLY = 1
BRIDGED_CONTAINERS = 2  # the workers' container needs its instance role


def _launch_data(
    role: str, group: str, hop_limit: int, instance_type: dict, user_data: list, tags: bool
) -> dict:
    data = {
        "ImageId": ref("ImageId"),
        "InstanceType": instance_type,
        "IamInstanceProfile": {"Arn": get_att(f"{role}Profile", "Arn")},
        "SecurityGroupIds": [get_att(group, "GroupId")],
        "UserData": {"Fn::Base64": {"Fn::Join": ["", [_as_sub(user_data), userdata.script()]]}},
        # IMDSv2 only (a GET needs a token from a PUT), and how far that token may travel.
        "MetadataOptions": {
            "HttpEndpoint": "enabled",
            "HttpTokens": "required",
            "HttpPutResponseHopLimit": hop_limit,
        },
        "BlockDeviceMappings": [
            {
                "DeviceName": "/dev/xvda",
                "Ebs": {"VolumeSize": 30, "VolumeType": "gp3", "Encrypted": True},
            }
        ],
    }
    if tags:  # what the scaler launches carries the stack's name, for people and for billing
        stack_tag = [{"Key": DEPLOYMENT_TAG, "Value": ref("AWS::StackName")}]
        data["TagSpecifications"] = [
            {"ResourceType": kind, "Tags": stack_tag} for kind in ("instance", "volume")
        ]
    return data


def _web_host(user_data: list) -> dict:
    """The one host the stack runs itself: one instance from a launch template of its own (EC2's
    way to IMDSv2-only). A new template version replaces the instance, which is what a
    settings change needs: user-data runs on the first boot only. Its instance profile is the
    scaler's: the scaler is the process there that must launch instances."""
    tier = "Web"
    data = _launch_data(
        "Scaler", "WebGroup", HOST_NETWORK_ONLY, ref("WebInstanceType"), user_data, False
    )
    return {
        f"{tier}HostTemplate": {
            "Type": "AWS::EC2::LaunchTemplate",
            "Properties": {"LaunchTemplateData": data},
        },
        f"{tier}Host": {
            "Type": "AWS::EC2::Instance",
            "Properties": {
                # Image and type repeat the template's: an instance must name its image.
                "ImageId": data["ImageId"],
                "InstanceType": data["InstanceType"],
                "LaunchTemplate": {
                    "LaunchTemplateId": ref(f"{tier}HostTemplate"),
                    "Version": get_att(f"{tier}HostTemplate", "LatestVersionNumber"),
                },
                "Tags": [{"Key": "Name", "Value": iam.sub(f"${{AWS::StackName}}-{tier.lower()}")}],
            },
        },
    }


def _user_data() -> dict[str, list]:
    settings = userdata.on_hosts(Settings())
    expressions = {
        "aws_region": ref("AWS::Region"),
        "input_bucket": ref("InputBucket"),
        "output_bucket": ref("OutputBucket"),
        "request_queue": get_att("RequestQueue", "QueueName"),
        "reply_queue_prefix": iam.sub(iam.REPLY_QUEUE_PREFIX),
        "fleet_name": iam.sub(iam.FLEET_NAME),
        "launch_template": iam.sub(iam.LAUNCH_TEMPLATE),
        "model": ref("Model"),
        "models": ref("Models"),
        "fleet_max": ref("FleetMax"),
        "policy": ref("Policy"),
        "fleet_market": ref("FleetMarket"),
        "fleet_instance_types": ref("WorkerInstanceTypes"),
        "worker_image": image("WorkerRepository"),
        "web_role_arn": get_att("WebRole", "Arn"),
    }
    return {
        "Worker": userdata.header(
            settings,
            image("WorkerRepository"),
            [(userdata.WORKER, settings.visibility_timeout_s + 10)],  # a batch in flight finishes
            expressions,
        ),
        "Web": userdata.header(
            settings,
            image("WebRepository"),
            userdata.web_host_containers(settings, SCALER_STOP_TIMEOUT_S),
            expressions,
        ),
    }


def _as_sub(parts: list) -> dict:
    """One Fn::Sub for the settings block: `NAME=${InputBucket}` reads like the result."""
    text = []
    for part in parts:
        if isinstance(part, str):
            text.append(part.replace("${", "${!"))
        elif "Ref" in part:
            text.append(f"${{{part['Ref']}}}")
        elif "Fn::GetAtt" in part:
            text.append(f"${{{'.'.join(part['Fn::GetAtt'])}}}")
        else:
            text.append(part["Fn::Sub"])
    return iam.sub("".join(text))


def _outputs(settings: Settings) -> dict:
    def out(description: str, value) -> dict:
        return {"Description": description, "Value": value}

    web = f"http://${{WebHost.PublicDnsName}}:{settings.port}"
    return {
        "UploadUrl": out("open this page to classify images", iam.sub(f"{web}/")),
        "UploadEndpoint": out("POST images here (form field myfile)", iam.sub(f"{web}/upload")),
        "InputBucket": out("uploads", ref("InputBucket")),
        "OutputBucket": out("results and the result cache", ref("OutputBucket")),
        "RequestQueue": out("REQUEST_QUEUE", get_att("RequestQueue", "QueueName")),
        "DeadLetterQueue": out(
            "requests that failed MAX_RECEIVE_COUNT times", get_att("DeadLetterQueue", "QueueName")
        ),
        "ReplyQueuePrefix": out("REPLY_QUEUE_PREFIX", iam.sub(iam.REPLY_QUEUE_PREFIX)),
        "FleetName": out("value of the workers' fleet tag", iam.sub(iam.FLEET_NAME)),
        "WorkerLaunchTemplate": out("LAUNCH_TEMPLATE", iam.sub(iam.LAUNCH_TEMPLATE)),
        "WebHost": out("the web host's instance id", ref("WebHost")),
        **{
            f"{tier}Role": out(f"the {tier.lower()} role", ref(f"{tier}Role"))
            for tier in ("Worker", "Web", "Scaler")
        },
    }


def template() -> dict:
    settings = Settings()
    user_data = _user_data()
    resources = {
        "InputBucket": _bucket(keys.EXPIRING_INPUTS, settings.result_expiry_days),
        "InputBucketPolicy": _tls_only("InputBucket"),
        "OutputBucket": _bucket(keys.EXPIRING_OUTPUTS, settings.result_expiry_days),
        "OutputBucketPolicy": _tls_only("OutputBucket"),
        **_queues(settings),
        **_groups(settings),
        **_role("Worker", iam.worker_policy()),
        **_role("Web", iam.web_policy(), iam.assumed_by_trust_policy("ScalerRole")),
        **_role("Scaler", iam.scaler_policy()),
        **_web_handover(),
        "WorkerLaunchTemplate": {
            "Type": "AWS::EC2::LaunchTemplate",
            "Properties": {
                "LaunchTemplateName": iam.sub(iam.LAUNCH_TEMPLATE),
                "LaunchTemplateData": _launch_data(
                    "Worker",
                    "WorkerGroup",
                    BRIDGED_CONTAINERS,
                    {"Fn::Select": [0, worker_types()]},
                    user_data["Worker"],
                    True,
                ),
            },
        },
        **_web_host(user_data["Web"]),
    }
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": "elastic-classifier: buckets, queues, roles, the workers' launch template, "
        "the web host (web tier and scaler). Generated by `python -m deployment template`.",
        "Parameters": parameters(),
        "Resources": resources,
        "Outputs": _outputs(settings),
    }


class _Dumper(yaml.SafeDumper):
    """Multi-line text (the user-data) as literal blocks, so a review reads the script."""

    def ignore_aliases(self, data) -> bool:
        return True  # CloudFormation rejects YAML aliases


def _text(dumper: yaml.SafeDumper, value: str):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _text)


def render() -> str:
    header = "# Generated by `python -m deployment template` from deployment/*.py: do not edit.\n"
    return header + yaml.dump(template(), Dumper=_Dumper, sort_keys=False, width=100)
