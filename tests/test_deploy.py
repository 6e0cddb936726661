"""The CloudFormation stack: plan, create, no-op, update and teardown against moto over HTTP.

moto runs CloudFormation for real here: the resources it creates (buckets, queues, roles with
their policies, security groups, launch templates, instances) are read back through their own
APIs. What moto does not apply (bucket policies, lifecycle rules, public access blocks, a host
instance's launch template, stack outputs) is checked by cfn-lint and checkov (`make scan`) and,
for the template's text, by the tests at the end of this file.
"""

from __future__ import annotations

import ast
import base64
import dataclasses
import json
import os
import subprocess
import sys
import uuid

import pytest
import yaml

import runtime.cloudwatch
from deployment import iam, template, userdata
from deployment.stack import Change, DeployError, Stack
from deployment.userdata import render
from runtime import keys
from runtime.resources import WORKER_TAG_KEYS, queue_retention_s
from runtime.settings import DEFAULT_POLICY, POLICIES, Settings
from tests.conftest import ROOT

ACCOUNT = "123456789012"  # moto's
REGION = "us-east-1"
PARAMETERS = {"ImageTag": "1", "WebCidr": "203.0.113.0/24"}
WORKER_TYPES = ["c6i.large", "c7i.large", "m6i.large"]  # the template's default, in order


@pytest.fixture
def stack(aws_client) -> Stack:
    lines: list[str] = []
    made = Stack(
        f"t{uuid.uuid4().hex[:8]}",
        *(aws_client(s) for s in ("cloudformation", "ec2", "s3", "sqs")),
        report=lines.append,
        poll_s=0.1,
    )
    made.lines = lines
    return made


@pytest.fixture
def deployed(stack) -> Stack:
    stack.deploy(PARAMETERS)
    return stack


def physical(stack: Stack) -> dict[str, str]:
    resources = stack.cloudformation.describe_stack_resources(StackName=stack.name)
    return {
        r["LogicalResourceId"]: r["PhysicalResourceId"]
        for r in resources["StackResources"]
        if "LogicalResourceId" in r
    }


def stack_settings(stack: Stack) -> Settings:
    """The settings the stack gives its hosts, from the names it chose."""
    ids = physical(stack)
    return Settings(
        aws_region=REGION,
        input_bucket=ids["InputBucket"],
        output_bucket=ids["OutputBucket"],
        request_queue=f"{stack.name}-requests",
        reply_queue_prefix=f"{stack.name}-reply-",
        fleet_name=f"{stack.name}-workers",
        launch_template=f"{stack.name}-worker",
        worker_image=f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/elastic-classifier-worker:1",
    )


def role_policy(stack: Stack, aws_client, logical_id: str) -> list[dict]:
    """Every statement of the role's inline policies (its own, and any attached beside it)."""
    iam_client = aws_client("iam")
    role = physical(stack)[logical_id]
    statements = []
    for name in iam_client.list_role_policies(RoleName=role)["PolicyNames"]:
        document = iam_client.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
        if isinstance(document, str):  # moto hands back a template's policy as a Python repr
            document = ast.literal_eval(document)
        statements += document["Statement"]
    out = []
    for statement in statements:
        action, resource = statement["Action"], statement["Resource"]
        out.append(
            {
                **statement,
                "Action": [action] if isinstance(action, str) else action,
                "Resource": [resource] if isinstance(resource, str) else resource,
            }
        )
    return out


def actions_of(statements: list[dict]) -> set[str]:
    return {action for s in statements for action in s["Action"]}


def launch_data(stack: Stack, template_name: str) -> dict:
    return stack.ec2.describe_launch_template_versions(
        LaunchTemplateName=template_name, Versions=["$Latest"]
    )["LaunchTemplateVersions"][0]["LaunchTemplateData"]


# --- plan, create, no-op, update -----------------------------------------------------------


def test_plan_lists_every_resource_and_creates_nothing(stack):
    changes = stack.plan(PARAMETERS)

    declared = yaml.safe_load(template.PATH.read_text())["Resources"]
    assert {c.logical_id for c in changes} == set(declared)
    assert {c.action for c in changes} == {"Add"}
    assert stack.status() is None
    buckets = [b["Name"] for b in stack.s3.list_buckets()["Buckets"]]
    assert not [b for b in buckets if b.startswith(stack.name)]


def test_create_then_a_second_deploy_changes_nothing(stack):
    created = stack.deploy(PARAMETERS)
    assert {c.action for c in created} == {"Add"}
    assert stack.status() == "CREATE_COMPLETE"
    assert any("CREATE_COMPLETE" in line for line in stack.lines)
    resources = physical(stack)

    assert stack.deploy({}) == []
    assert stack.plan({}) == []
    assert stack.status() == "CREATE_COMPLETE"  # no update ran
    assert physical(stack) == resources


def test_update_modifies_in_place(deployed):
    changed = template.template()
    changed["Resources"]["RequestQueue"]["Properties"]["VisibilityTimeout"] = 45
    deployed.template_body = json.dumps(changed)

    plan = deployed.plan({})
    assert plan == [Change("Modify", "RequestQueue", "AWS::SQS::Queue", plan[0].replacement)]
    assert deployed.deploy({}) == plan

    assert deployed.status() == "UPDATE_COMPLETE"
    url = deployed.sqs.get_queue_url(QueueName=f"{deployed.name}-requests")["QueueUrl"]
    attributes = deployed.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])
    assert attributes["Attributes"]["VisibilityTimeout"] == "45"


# --- what the stack made, read back -------------------------------------------------------


def test_the_stack_offers_every_policy_the_service_has_and_its_default():
    policy = yaml.safe_load(template.PATH.read_text())["Parameters"]["Policy"]
    assert policy["AllowedValues"] == list(POLICIES)
    assert policy["Default"] == DEFAULT_POLICY == Settings().policy


def test_data_stores_are_encrypted_and_requests_redrive_to_the_dead_letters(deployed):
    settings = stack_settings(deployed)
    for bucket in (settings.input_bucket, settings.output_bucket):
        rules = deployed.s3.get_bucket_encryption(Bucket=bucket)
        rule = rules["ServerSideEncryptionConfiguration"]["Rules"][0]
        assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    sqs = deployed.sqs
    dlq_url = sqs.get_queue_url(QueueName=settings.dead_letter_queue)["QueueUrl"]
    dlq = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["All"])["Attributes"]
    url = sqs.get_queue_url(QueueName=settings.request_queue)["QueueUrl"]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attributes["SqsManagedSseEnabled"] == "true"
    assert dlq["SqsManagedSseEnabled"] == "true"
    assert attributes["VisibilityTimeout"] == str(settings.visibility_timeout_s)
    redrive = json.loads(attributes["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"] == dlq["QueueArn"]
    assert int(redrive["maxReceiveCount"]) == settings.max_receive_count


def test_workers_launch_template_delivers_the_rendered_user_data_with_imdsv2_only(
    deployed, aws_client
):
    settings = stack_settings(deployed)
    data = launch_data(deployed, settings.launch_template)

    user_data = base64.b64decode(data["UserData"]).decode()
    assert user_data == render(settings, stop_timeout_s=settings.visibility_timeout_s + 10)
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert data["MetadataOptions"]["HttpPutResponseHopLimit"] == 2
    assert data["InstanceType"] == WORKER_TYPES[0]
    profile = data["IamInstanceProfile"]["Arn"].rsplit("/", 1)[1]
    assert profile == physical(deployed)["WorkerProfile"]
    found = aws_client("iam").get_instance_profile(InstanceProfileName=profile)
    assert [r["RoleName"] for r in found["InstanceProfile"]["Roles"]] == [
        physical(deployed)["WorkerRole"]
    ]
    for secret in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        assert secret not in user_data
    assert "AWS_ENDPOINT_URL" not in user_data


def test_security_groups_open_only_the_upload_port(deployed):
    ids = physical(deployed)
    groups = {
        g["GroupId"]: g
        for g in deployed.ec2.describe_security_groups(
            GroupIds=[ids["WorkerGroup"], ids["WebGroup"]]
        )["SecurityGroups"]
    }
    settings = Settings()

    def rules(logical_id: str) -> list[tuple]:
        return [
            (p["IpProtocol"], p["FromPort"], p["ToPort"], source)
            for p in groups[ids[logical_id]]["IpPermissions"]
            for source in [r["CidrIp"] for r in p.get("IpRanges", [])]
            + [g["GroupId"] for g in p.get("UserIdGroupPairs", [])]
        ]

    assert rules("WorkerGroup") == []
    # The scaler's status port stays closed: the web container reaches it on the host itself.
    assert rules("WebGroup") == [("tcp", settings.port, settings.port, "203.0.113.0/24")]
    assert "ScalerGroup" not in ids


def test_two_kinds_of_host_and_the_web_host_runs_the_scaler_under_its_role(deployed, aws_client):
    """Issue 25: the scaler's container on the web host, which carries the scaler's instance
    profile, with a metadata hop limit of 1 so that the bridged web container gets no token."""
    ids = physical(deployed)
    templates = {k for k, v in ids.items() if k.endswith("Template") and v.startswith("lt-")}
    assert templates == {"WorkerLaunchTemplate", "WebHostTemplate"}
    declared = yaml.safe_load(template.PATH.read_text())["Resources"]
    hosts = [k for k, v in declared.items() if v["Type"] == "AWS::EC2::Instance"]
    assert hosts == ["WebHost"]
    (host,) = [
        i
        for r in deployed.ec2.describe_instances(InstanceIds=[ids["WebHost"]])["Reservations"]
        for i in r["Instances"]
    ]
    assert host["State"]["Name"] in {"pending", "running"}
    data = launch_data_by_id(deployed, ids["WebHostTemplate"])
    assert data["IamInstanceProfile"]["Arn"].endswith(f"/{ids['ScalerProfile']}")
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert data["MetadataOptions"]["HttpPutResponseHopLimit"] == 1
    assert "WebProfile" not in ids  # the web role is no instance's
    user_data = base64.b64decode(data["UserData"]).decode()
    web_role = aws_client("iam").get_role(RoleName=ids["WebRole"])["Role"]["Arn"]
    for expected in (
        "CONTAINER_COUNT='2'",
        "CONTAINER_1='classifier-scaler'",
        "NETWORK_1='host'",
        "HANDOVER_1='writes'",
        "CONTAINER_2='classifier-web'",
        "NETWORK_2='bridge'",
        "HANDOVER_2='reads'",
        f"WEB_ROLE_ARN={web_role}\n",
        f"INPUT_BUCKET={ids['InputBucket']}\n",
        "HOST=0.0.0.0\n",
        "MODEL=efficientnet_lite0\n",  # its result cache is per model
        "SCALER_STATUS_URL=http://host.docker.internal:3001/status\n",
        # Both containers: the scaler writes the wake token where the web container reads it.
        "SCALER_WAKE_TOKEN_FILE=/run/elastic-classifier/web-credentials/wake-token\n",
    ):
        assert expected in user_data, expected
    web_env = user_data.split("CONTAINER_ENV_2='", 1)[1].split("'", 1)[0]
    assert "WEB_ROLE_ARN" not in web_env  # only the scaler assumes it
    # Exactly what deployment.userdata renders (and the stand-in web host boots).
    settings = userdata.on_hosts(
        dataclasses.replace(
            stack_settings(deployed),
            fleet_max=8,
            fleet_market=template.CLOUD_MARKET,
            fleet_instance_types=",".join(WORKER_TYPES),
            web_role_arn=web_role,
        )
    )
    web_image = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/elastic-classifier-web:1"
    assert user_data == userdata.render_web_host(
        settings, web_image, template.SCALER_STOP_TIMEOUT_S
    )


def launch_data_by_id(stack: Stack, template_id: str) -> dict:
    return stack.ec2.describe_launch_template_versions(
        LaunchTemplateId=template_id, Versions=["$Latest"]
    )["LaunchTemplateVersions"][0]["LaunchTemplateData"]


# --- least privilege, read back from IAM -------------------------------------------------------


WORKER_WRITES = ("results", "started", "jobs")


def test_worker_may_use_only_its_queue_buckets_and_reply_queues(deployed, aws_client):
    settings = stack_settings(deployed)
    stmts = role_policy(deployed, aws_client, "WorkerRole")
    assert {a for a in actions_of(stmts) if a.startswith(("ec2:", "iam:", "sts:"))} == {
        "ec2:CreateTags"
    }
    # Its one EC2 right: the readiness, notice and usage tags, and no other key, on fleet
    # instances only.
    (tag,) = [s for s in stmts if "ec2:CreateTags" in s["Action"]]
    assert tag["Action"] == ["ec2:CreateTags"]
    assert tag["Condition"] == {
        "StringEquals": {f"aws:ResourceTag/{iam.FLEET_TAG}": settings.fleet_name},
        "ForAllValues:StringEquals": {"aws:TagKeys": list(WORKER_TAG_KEYS)},
    }
    arn = f"arn:aws:sqs:{REGION}:{ACCOUNT}"
    for s in stmts:
        for action in s["Action"]:
            if action.startswith("sqs:"):
                assert s["Resource"] in (
                    [f"{arn}:{settings.request_queue}", f"{arn}:{settings.job_queue}"],
                    [f"{arn}:{settings.reply_queue_prefix}*"],
                )
            if action.startswith("s3:"):
                # Inputs: uploads and jobs' staged images only (prefix jobs are off here), and
                # the model area's packages.
                assert s["Resource"] in (
                    [
                        f"arn:aws:s3:::{settings.input_bucket}/uploads/*",
                        f"arn:aws:s3:::{settings.input_bucket}/jobs/*/in/*",
                    ],
                    [f"arn:aws:s3:::{settings.input_bucket}/models/*"],
                    [f"arn:aws:s3:::{settings.output_bucket}/{p}/*" for p in WORKER_WRITES],
                    [f"arn:aws:s3:::{settings.output_bucket}/jobs/*"],
                )
    reply = next(s for s in stmts if s["Resource"] == [f"{arn}:{settings.reply_queue_prefix}*"])
    assert set(reply["Action"]) == {"sqs:SendMessage", "sqs:GetQueueUrl"}
    put = next(s for s in stmts if "s3:PutObject" in s["Action"])
    assert put["Resource"] == [
        f"arn:aws:s3:::{settings.output_bucket}/{p}/*" for p in WORKER_WRITES
    ]
    assert put["Action"] == ["s3:PutObject"]
    pull = next(s for s in stmts if "ecr:BatchGetImage" in s["Action"])
    assert pull["Resource"] == [
        f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/elastic-classifier-worker"
    ]


def test_scaler_launches_only_the_fleet_template_type_and_tag_and_passes_only_the_worker_role(
    deployed, aws_client
):
    settings = stack_settings(deployed)
    ids = physical(deployed)
    stmts = role_policy(deployed, aws_client, "ScalerRole")
    # Its one S3 object: what it measured, kept across restarts.
    (kept,) = [s for s in stmts if any(a.startswith("s3:") for a in s["Action"])]
    assert kept["Action"] == ["s3:GetObject", "s3:PutObject"]
    assert kept["Resource"] == [f"arn:aws:s3:::{settings.output_bucket}/scaler/estimates.json"]
    fleet = {iam.FLEET_TAG: settings.fleet_name}
    template_arn = f"arn:aws:ec2:{REGION}:{ACCOUNT}:launch-template/{ids['WorkerLaunchTemplate']}"
    instances = f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/*"
    mutating = {
        "ec2:RunInstances",
        "ec2:StartInstances",
        "ec2:StopInstances",
        "ec2:TerminateInstances",
        "ec2:CreateTags",
    }
    for s in stmts:
        ec2_actions = {a for a in s["Action"] if a.startswith("ec2:")}
        if not ec2_actions or all(a.startswith("ec2:Describe") for a in ec2_actions):
            continue  # describe calls have no resource-level permissions
        assert ec2_actions <= mutating
        condition = s.get("Condition", {})
        if instances in s["Resource"]:
            tag_conditions = {
                k.split("/", 1)[1]: v
                for k, v in condition.get("StringEquals", {}).items()
                if k.startswith(("aws:ResourceTag/", "aws:RequestTag/"))
            }
            at_launch = condition.get("StringEquals", {}).get("ec2:CreateAction")
            # Every action on instances needs the fleet tag, except tagging during a launch,
            # which the launch itself only allows with the fleet tag.
            assert tag_conditions == fleet or (ec2_actions == {"ec2:CreateTags"} and at_launch)
        elif s["Sid"] == "RequestSpotCapacity":
            # A Spot launch's Spot request, on its own: the instance still needs every pin.
            assert s["Action"] == ["ec2:RunInstances"] and not condition
            assert s["Resource"] == [f"arn:aws:ec2:{REGION}:{ACCOUNT}:spot-instances-request/*"]
        else:
            assert ec2_actions == {"ec2:RunInstances"}
            assert condition == {"ArnEquals": {"ec2:LaunchTemplate": template_arn}}
            assert not any(r.endswith(":*") or r == "*" for r in s["Resource"])
    launch = next(s for s in stmts if s["Sid"] == "LaunchOnlyFleetInstances")
    assert launch["Condition"] == {
        "StringEquals": {
            f"aws:RequestTag/{iam.FLEET_TAG}": settings.fleet_name,
            "ec2:InstanceType": WORKER_TYPES,
            "ec2:MetadataHttpTokens": "required",
        },
        "ArnEquals": {"ec2:LaunchTemplate": template_arn},
    }
    passing = [s for s in stmts if "iam:PassRole" in s["Action"]]
    assert [s["Resource"] for s in passing] == [
        [f"arn:aws:iam::{ACCOUNT}:role/{ids['WorkerRole']}"]
    ]
    assert {a for a in actions_of(stmts) if a.startswith("iam:")} == {"iam:PassRole"}


def test_web_cannot_launch_pass_assume_or_pull(deployed, aws_client):
    stmts = role_policy(deployed, aws_client, "WebRole")
    actions = actions_of(stmts)
    # The host pulls the web image with the instance (scaler) role: the web tier needs no ecr:.
    assert not {a for a in actions if a.startswith(("ec2:", "iam:", "sts:", "ecr:"))}


def test_the_scaler_may_assume_the_web_role_and_no_other_and_they_share_only_queue_reads(
    deployed, aws_client
):
    ids = physical(deployed)
    iam_client = aws_client("iam")
    web_role = iam_client.get_role(RoleName=ids["WebRole"])["Role"]["Arn"]
    scaler = role_policy(deployed, aws_client, "ScalerRole")
    (assume,) = [s for s in scaler if any(a.startswith("sts:") for a in s["Action"])]
    assert assume["Action"] == ["sts:AssumeRole"] and assume["Resource"] == [web_role]
    assert "Condition" not in assume
    # Beyond that one AssumeRole, neither role holds a right of the other's but reading the
    # queue depths (the web tier's backlog limit, the scaler's policy).
    web = role_policy(deployed, aws_client, "WebRole")
    shared = {
        (action, resource)
        for s in scaler
        for action in s["Action"]
        for resource in s["Resource"]
        if any(action in w["Action"] and resource in w["Resource"] for w in web)
    }
    assert {action for action, _ in shared} <= {"sqs:GetQueueAttributes", "sqs:GetQueueUrl"}


def test_web_lists_only_the_job_areas_and_neither_role_reads_the_whole_input_bucket(
    deployed, aws_client
):
    """Round three's finding 1: the web could list, the worker read, the whole input bucket."""
    settings = stack_settings(deployed)
    web = role_policy(deployed, aws_client, "WebRole")
    (listing,) = [s for s in web if "s3:ListBucket" in s["Action"]]
    assert listing["Action"] == ["s3:ListBucket"]
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["jobs/*"]}}
    for tier in ("WebRole", "WorkerRole"):
        for s in role_policy(deployed, aws_client, tier):
            if any(a.startswith("s3:") for a in s["Action"]):
                assert f"arn:aws:s3:::{settings.input_bucket}/*" not in s["Resource"], (tier, s)


def test_workers_read_the_model_area_and_nobody_in_the_stack_writes_it(deployed, aws_client):
    settings = stack_settings(deployed)
    area = f"arn:aws:s3:::{settings.input_bucket}/models/*"
    reads = [s for s in role_policy(deployed, aws_client, "WorkerRole") if area in s["Resource"]]
    assert [s["Action"] for s in reads] == [["s3:GetObject"]]
    for tier in ("WebRole", "WorkerRole", "ScalerRole"):
        for s in role_policy(deployed, aws_client, tier):
            writes = [a for a in s["Action"] if a.startswith("s3:Put") or a == "s3:*"]
            if writes:
                assert area not in s["Resource"], (tier, s)
                assert f"arn:aws:s3:::{settings.input_bucket}/*" not in s["Resource"], (tier, s)


def test_the_models_parameter_reaches_the_workers_and_the_web_tier(stack):
    """Issue 22: a deployment declares its packages (Models); the workers load them, the web
    tier checks names against them. On AWS an operator sets it by an update, once the first
    deploy made the bucket and they published there; moto computes no change for an update of
    parameters alone, so here the stack is created with it."""
    bucket = "published-here"
    models = (
        f"catdog=s3://{bucket}/{keys.model_package_prefix('catdog', '1')},"
        f"species=s3://{bucket}/{keys.model_package_prefix('species', 'v2')},"
        f"pets=s3://{bucket}/{keys.model_area('pets')}"  # no version: follows models/pets/CURRENT
    )

    stack.deploy({**PARAMETERS, "Models": models})

    settings = stack_settings(stack)
    served = dataclasses.replace(settings, models=models)
    assert list(served.model_packages) == ["catdog", "species", "pets"]
    user_data = base64.b64decode(launch_data(stack, settings.launch_template)["UserData"])
    assert user_data.decode() == render(served, stop_timeout_s=settings.visibility_timeout_s + 10)
    web_host = launch_data_by_id(stack, physical(stack)["WebHostTemplate"])
    web_env = base64.b64decode(web_host["UserData"]).decode().split("CONTAINER_ENV_2='")[1]
    assert f"\nMODELS={models}\n" in web_env.split("'", 1)[0]


@pytest.mark.parametrize(
    "models, why",
    [
        ("catdog=s3://b-1/models/dog/1/", "the name twice alike"),
        ("catdog=s3://b-1/uploads/catdog/1/", "outside the model area"),
        ("catdog=/opt/packages/catdog-1", "a host has no local package"),
        ("catdog=s3://b-1/models/catdog/1", "a prefix ends in /"),
        ("catdog=s3://b-1/models/catdog/1/;reboot", "nothing after the entries"),
        ("catdog=s3://b-1/models/catdog/$(id)/", "no shell in user-data"),
        ("catdog=s3://b-1/models/catdog", "a model's area ends in / too"),
        ("catdog=s3://b-1/models/dog/", "the name twice alike, without a version too"),
        ("catdog=s3://b-1/models/catdog//", "no empty version"),
        ("catdog=s3://b-1/models/catdog/../", "no version climbs out of the model's area"),
        ("catdog=s3://b-1/models/", "a model's area, not the whole model area"),
    ],
)
def test_a_models_value_outside_the_model_area_is_one_line_before_any_change(stack, models, why):
    with pytest.raises(DeployError) as refused:
        stack.deploy({**PARAMETERS, "Models": models})
    assert str(refused.value).startswith("Models="), why
    assert "\n" not in str(refused.value)
    assert stack.status() is None


def test_instance_roles_trust_ec2_and_the_web_role_trusts_the_scaler_role_alone(
    deployed, aws_client
):
    iam_client = aws_client("iam")
    ids = physical(deployed)

    def principals(tier: str) -> list:
        trust = iam_client.get_role(RoleName=ids[f"{tier}Role"])["Role"]["AssumeRolePolicyDocument"]
        if isinstance(trust, str):
            trust = ast.literal_eval(trust)
        assert {s["Action"] for s in trust["Statement"]} == {"sts:AssumeRole"}
        assert not any("Condition" in s for s in trust["Statement"])
        return [s["Principal"] for s in trust["Statement"]]

    for tier in ("Worker", "Scaler"):
        assert principals(tier) == [{"Service": "ec2.amazonaws.com"}]
    scaler_role = iam_client.get_role(RoleName=ids["ScalerRole"])["Role"]["Arn"]
    assert principals("Web") == [{"AWS": scaler_role}]
    # And only the scaler role may call sts: at all.
    for tier in ("WorkerRole", "WebRole"):
        assert not {a for a in actions_of(role_policy(deployed, aws_client, tier)) if "sts:" in a}


def test_no_policy_grants_everything(deployed, aws_client):
    # The only actions with no resource type: they may (must) name "*".
    resourceless = {
        "cloudwatch:PutMetricData",
        "cloudwatch:GetMetricStatistics",
        "ecr:GetAuthorizationToken",
        "ec2:DescribeInstances",
        "ec2:DescribeInstanceStatus",
        "ec2:DescribeLaunchTemplates",
        "ec2:DescribeLaunchTemplateVersions",
        "sqs:ListQueues",
    }
    for tier in ("WorkerRole", "ScalerRole", "WebRole"):
        for s in role_policy(deployed, aws_client, tier):
            assert s["Effect"] == "Allow"
            assert not any("*" in action for action in s["Action"]), s
            if "*" in s["Resource"]:
                assert set(s["Action"]) <= resourceless, s
    for role in ("WorkerRole", "WebRole"):  # throughput; accepted uploads per second
        put_metric = next(
            s
            for s in role_policy(deployed, aws_client, role)
            if "cloudwatch:PutMetricData" in s["Action"]
        )
        assert put_metric["Condition"] == {
            "StringEquals": {"cloudwatch:namespace": runtime.cloudwatch.NAMESPACE}
        }


# --- teardown ---------------------------------------------------------------------------------


def _launch_fleet(stack: Stack, count: int) -> list[str]:
    settings = stack_settings(stack)
    reply = stack.ec2.run_instances(
        MinCount=count,
        MaxCount=count,
        LaunchTemplate={"LaunchTemplateName": settings.launch_template},
        TagSpecifications=[
            {
                "ResourceType": "instance",
                "Tags": [{"Key": iam.FLEET_TAG, "Value": settings.fleet_name}],
            }
        ],
    )
    return [i["InstanceId"] for i in reply["Instances"]]


def test_teardown_terminates_the_fleet_then_deletes_the_stack_and_its_data(deployed, aws_client):
    settings = stack_settings(deployed)
    fleet = _launch_fleet(deployed, 2)
    image = deployed.ec2.describe_images()["Images"][0]["ImageId"]
    stranger = deployed.ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)["Instances"][0]
    deployed.s3.put_object(Bucket=settings.input_bucket, Key="uploads/x", Body=b"x")
    deployed.sqs.create_queue(QueueName=f"{settings.reply_queue_prefix}web-1")
    roles = [physical(deployed)[f"{t}Role"] for t in ("Worker", "Web", "Scaler")]

    assert deployed.teardown(keep_data=False)

    ids = [*fleet, stranger["InstanceId"]]
    reservations = deployed.ec2.describe_instances(InstanceIds=ids)["Reservations"]
    states = {i["InstanceId"]: i["State"]["Name"] for r in reservations for i in r["Instances"]}
    assert {states[i] for i in fleet} == {"terminated"}
    assert states[stranger["InstanceId"]] == "running"
    assert deployed.status() is None
    buckets = {b["Name"] for b in deployed.s3.list_buckets()["Buckets"]}
    assert not {settings.input_bucket, settings.output_bucket} & buckets
    queues = deployed.sqs.list_queues(QueueNamePrefix=deployed.name).get("QueueUrls", [])
    assert queues == []
    left = {r["RoleName"] for r in aws_client("iam").list_roles()["Roles"]}
    assert not set(roles) & left
    assert deployed.teardown(keep_data=False) is False
    deployed.ec2.terminate_instances(InstanceIds=[stranger["InstanceId"]])


def test_teardown_keep_data_keeps_the_buckets_and_what_is_in_them(deployed):
    settings = stack_settings(deployed)
    deployed.s3.put_object(Bucket=settings.output_bucket, Key="results/r.json", Body=b"{}")

    assert deployed.teardown(keep_data=True)

    assert deployed.status() is None
    body = deployed.s3.get_object(Bucket=settings.output_bucket, Key="results/r.json")["Body"]
    assert body.read() == b"{}"
    for bucket in (settings.input_bucket, settings.output_bucket):
        deployed.s3.head_bucket(Bucket=bucket)  # the empty one too: DeletionPolicy Retain
        assert any(f"kept bucket {bucket}" in line for line in deployed.lines)
        deployed._delete_bucket(bucket)


# --- the command line, as a user runs it --------------------------------------------------------


def test_cli_plan_deploy_deploy_teardown(moto_endpoint):
    name = f"t{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": REGION,
    }

    def deployment(*args: str, ok: bool = True) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "deployment", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert (done.returncode == 0) is ok, done.stderr
        return done.stdout + done.stderr

    stack = ("--stack-name", name)
    given = ("--image-tag", "1", "--web-cidr", "203.0.113.0/24")
    assert "Nothing was changed" in deployment("plan", *stack, *given)
    assert "Deployed:" in deployment("deploy", *stack, *given)
    assert "No changes" in deployment("deploy", *stack)
    refused = deployment("deploy", *stack, "--web-cidr", "everyone", ok=False)
    assert len(refused.strip().splitlines()) == 1 and "WebCidr" in refused
    assert "Removed stack" in deployment("teardown", *stack)
    assert "Nothing to remove" in deployment("teardown", *stack)


def test_committed_template_is_the_generated_one():
    assert template.PATH.read_text() == template.render(), "run `python -m deployment template`"


def test_retention_is_the_async_deadline_everywhere():
    """Issue 26, finding 12: uploads expired after 1 day and queued messages after SQS's default
    4, while an async upload's deadline (and docs/api.md) said 7; the cache expired after 30
    days though the docs say it never does."""
    resources = yaml.safe_load(template.PATH.read_text())["Resources"]
    days = Settings().result_expiry_days  # the async deadline is this many days (web.service)
    for bucket, expiring in (
        ("InputBucket", {keys.UPLOADS, keys.JOBS}),
        ("OutputBucket", {keys.RESULTS, keys.STARTED, keys.JOBS}),
    ):
        rules = resources[bucket]["Properties"]["LifecycleConfiguration"]["Rules"]
        expiry = {r["Prefix"]: r["ExpirationInDays"] for r in rules if "Prefix" in r}
        assert expiry == dict.fromkeys(expiring, days), bucket
    for queue in ("RequestQueue", "JobQueue"):
        retention = resources[queue]["Properties"]["MessageRetentionPeriod"]
        assert retention == queue_retention_s(days) == days * 86400


def test_every_scanner_skip_says_why_beside_its_resource():
    resources = yaml.safe_load(template.PATH.read_text())["Resources"]
    skips = [
        skip
        for resource in resources.values()
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", [])
    ]
    assert skips, "the template skips no check: drop this test's premise"
    for skip in skips:
        assert skip["id"].startswith("CKV_") and len(skip["comment"].split()) >= 5, skip


def test_a_booted_worker_keeps_its_images_model_cache():
    """The worker image bakes its exported model in MODEL_CACHE_DIR; user-data that set the
    make-up default (.run/models) sent a booted worker to export again, and it never answered."""
    from deployment.userdata import worker_env

    assert "MODEL_CACHE_DIR" not in worker_env(Settings())
    assert "MODEL_CACHE_DIR" not in template.PATH.read_text()
