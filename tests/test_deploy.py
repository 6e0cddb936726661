"""plan / deploy / teardown against moto's S3, SQS, IAM, EC2 and SSM over HTTP.

The policies are read back from IAM and checked by what they allow (resources, conditions), not
only by the calls having succeeded.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import uuid

import pytest

import runtime.cloudwatch
import scaler.fleet
from deployment import iam as policies
from deployment.deploy import DEPLOYMENT_TAG, Clients, DeployError, Options, deploy
from deployment.teardown import teardown
from deployment.userdata import render, worker_env
from runtime.readiness import READY_AT_TAG
from runtime.settings import Settings, markdown_table
from tests.conftest import ROOT

ACCOUNT = "123456789012"  # moto's
REGION = "us-east-1"


def settings_for(name: str, **overrides) -> Settings:
    values = {
        "input_bucket": f"{name}-in",
        "output_bucket": f"{name}-out",
        "request_queue": f"{name}-requests",
        "reply_queue_prefix": f"{name}-reply-",
        "launch_template": f"{name}-worker",
        "fleet_name": f"{name}-fleet",
        "worker_image": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/classifier-worker:1.0",
        **overrides,
    }
    return Settings(**values)


@pytest.fixture
def clients(aws_client) -> Clients:
    return Clients(*(aws_client(s) for s in ("s3", "sqs", "iam", "ec2", "ssm", "sts")))


@pytest.fixture
def name() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


@pytest.fixture
def deployed(clients, name):
    settings = settings_for(name)
    options = Options(
        name=name,
        web_cidrs=("203.0.113.0/24",),
        web_image=f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/classifier-web:1.0",
    )
    deploy(settings, options, clients, apply=True)
    return settings, options


def statements(document: dict) -> list[dict]:
    out = []
    for statement in document["Statement"]:
        actions = statement["Action"]
        resources = statement["Resource"]
        out.append(
            {
                **statement,
                "Action": [actions] if isinstance(actions, str) else actions,
                "Resource": [resources] if isinstance(resources, str) else resources,
            }
        )
    return out


def role_policy(clients: Clients, role: str) -> list[dict]:
    reply = clients.iam.get_role_policy(RoleName=role, PolicyName=f"{role}-policy")
    return statements(reply["PolicyDocument"])


def actions_of(stmts: list[dict]) -> set[str]:
    return {action for s in stmts for action in s["Action"]}


# --- plan, deploy, deploy again ------------------------------------------------------------


def test_plan_lists_everything_and_changes_nothing(clients, name):
    settings = settings_for(name)
    changes = deploy(settings, Options(name=name), clients, apply=False)

    kinds = {(c.action, c.kind) for c in changes}
    assert {c.action for c in changes} == {"create"}
    assert {
        ("create", "bucket"),
        ("create", "queue"),
        ("create", "iam role"),
        ("create", "iam policy"),
        ("create", "instance profile"),
        ("create", "security group"),
        ("create", "launch template"),
    } == kinds
    buckets = {b["Name"] for b in clients.s3.list_buckets()["Buckets"]}
    assert settings.input_bucket not in buckets
    roles = {r["RoleName"] for r in clients.iam.list_roles()["Roles"]}
    assert not {f"{name}-worker", f"{name}-scaler", f"{name}-web"} & roles
    templates = clients.ec2.describe_launch_templates()["LaunchTemplates"]
    assert settings.launch_template not in {t["LaunchTemplateName"] for t in templates}


def test_second_deploy_changes_nothing(clients, name):
    settings = settings_for(name)
    options = Options(name=name, web_cidrs=("203.0.113.0/24",))
    first = deploy(settings, options, clients, apply=True)
    assert len(first) >= 15

    assert deploy(settings, options, clients, apply=True) == []
    assert deploy(settings, options, clients, apply=False) == []


def test_data_stores_are_private_encrypted_and_tagged(clients, deployed):
    settings, options = deployed
    for bucket in (settings.input_bucket, settings.output_bucket):
        block = clients.s3.get_public_access_block(Bucket=bucket)
        assert all(block["PublicAccessBlockConfiguration"].values())
        rules = clients.s3.get_bucket_encryption(Bucket=bucket)
        rule = rules["ServerSideEncryptionConfiguration"]["Rules"][0]
        assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
        tags = clients.s3.get_bucket_tagging(Bucket=bucket)["TagSet"]
        assert {"Key": DEPLOYMENT_TAG, "Value": options.name} in tags
    dlq_url = clients.sqs.get_queue_url(QueueName=settings.dead_letter_queue)["QueueUrl"]
    url = clients.sqs.get_queue_url(QueueName=settings.request_queue)["QueueUrl"]
    dlq = clients.sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["All"])["Attributes"]
    attributes = clients.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])
    attributes = attributes["Attributes"]
    assert attributes["SqsManagedSseEnabled"] == "true"
    assert json.loads(attributes["RedrivePolicy"])["deadLetterTargetArn"] == dlq["QueueArn"]
    for queue_url in (url, dlq_url):
        assert clients.sqs.list_queue_tags(QueueUrl=queue_url)["Tags"] == {
            DEPLOYMENT_TAG: options.name
        }


def test_launch_template_runs_the_worker_image_with_a_restart_policy(clients, deployed):
    settings, options = deployed
    template = clients.ec2.describe_launch_templates(
        LaunchTemplateNames=[settings.launch_template]
    )["LaunchTemplates"][0]
    assert {"Key": DEPLOYMENT_TAG, "Value": options.name} in template["Tags"]
    data = clients.ec2.describe_launch_template_versions(
        LaunchTemplateId=template["LaunchTemplateId"], Versions=["$Default"]
    )["LaunchTemplateVersions"][0]["LaunchTemplateData"]
    assert data["IamInstanceProfile"] == {"Name": f"{options.name}-worker"}
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    user_data = base64.b64decode(data["UserData"]).decode()
    assert "--restart unless-stopped" in user_data
    assert "systemctl enable --now docker" in user_data
    assert settings.worker_image in user_data
    for secret in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        assert secret not in user_data
    assert "AWS_ENDPOINT_URL" not in user_data
    groups = clients.ec2.describe_security_groups(GroupIds=data["SecurityGroupIds"])
    group = groups["SecurityGroups"][0]
    assert group["GroupName"] == f"{options.name}-worker"
    assert group["IpPermissions"] == []  # workers take no inbound traffic


def test_web_security_group_opens_only_the_web_port_to_the_given_ranges(clients, deployed):
    settings, options = deployed
    group = clients.ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": [f"{options.name}-web"]}]
    )["SecurityGroups"][0]
    rules = [
        (p["IpProtocol"], p["FromPort"], p["ToPort"], r["CidrIp"])
        for p in group["IpPermissions"]
        for r in p["IpRanges"]
    ]
    assert rules == [("tcp", settings.port, settings.port, "203.0.113.0/24")]


# --- least privilege, read back from IAM -------------------------------------------------------


def test_worker_may_use_only_its_queue_buckets_and_reply_queues(clients, deployed):
    settings, options = deployed
    stmts = role_policy(clients, f"{options.name}-worker")
    actions = actions_of(stmts)
    assert {a for a in actions if a.startswith(("ec2:", "iam:"))} == {"ec2:CreateTags"}
    # Its one EC2 right: the readiness tag, and no other key, on fleet instances only.
    (tag,) = [s for s in stmts if "ec2:CreateTags" in s["Action"]]
    assert tag["Action"] == ["ec2:CreateTags"]
    assert tag["Condition"] == {
        "StringEquals": {f"aws:ResourceTag/{policies.FLEET_TAG}": settings.fleet_name},
        "ForAllValues:StringEquals": {"aws:TagKeys": [READY_AT_TAG]},
    }
    arn = f"arn:aws:sqs:{REGION}:{ACCOUNT}"
    for s in stmts:
        for action in s["Action"]:
            if action.startswith("sqs:"):
                assert s["Resource"] in (
                    [f"{arn}:{settings.request_queue}"],
                    [f"{arn}:{settings.reply_queue_prefix}*"],
                )
            if action.startswith("s3:"):
                assert s["Resource"] in (
                    [f"arn:aws:s3:::{settings.input_bucket}/uploads/*"],
                    [f"arn:aws:s3:::{settings.output_bucket}/results/*"],
                )
    reply = next(s for s in stmts if s["Resource"] == [f"{arn}:{settings.reply_queue_prefix}*"])
    assert set(reply["Action"]) == {"sqs:SendMessage", "sqs:GetQueueUrl"}
    put = next(s for s in stmts if "s3:PutObject" in s["Action"])
    assert put["Resource"] == [f"arn:aws:s3:::{settings.output_bucket}/results/*"]
    pull = next(s for s in stmts if "ecr:BatchGetImage" in s["Action"])
    assert pull["Resource"] == [f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/classifier-worker"]


def test_scaler_acts_only_on_fleet_tagged_instances_and_passes_only_the_worker_role(
    clients, deployed
):
    settings, options = deployed
    stmts = role_policy(clients, f"{options.name}-scaler")
    assert not {a for a in actions_of(stmts) if a.startswith("s3:")}
    fleet = {policies.FLEET_TAG: settings.fleet_name}
    template_id = clients.ec2.describe_launch_templates(
        LaunchTemplateNames=[settings.launch_template]
    )["LaunchTemplates"][0]["LaunchTemplateId"]
    template_arn = f"arn:aws:ec2:{REGION}:{ACCOUNT}:launch-template/{template_id}"
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
        if not ec2_actions:
            continue
        condition = s.get("Condition", {})
        if ec2_actions <= {a for a in ec2_actions if a.startswith("ec2:Describe")}:
            continue  # describe calls have no resource-level permissions
        assert ec2_actions <= mutating
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
        else:
            assert ec2_actions == {"ec2:RunInstances"}
            assert condition == {"ArnEquals": {"ec2:LaunchTemplate": template_arn}}
            assert not any(r.endswith(":*") or r == "*" for r in s["Resource"])
    launch = next(s for s in stmts if s["Sid"] == "LaunchOnlyFleetInstances")
    assert launch["Condition"]["StringEquals"] == {
        f"aws:RequestTag/{policies.FLEET_TAG}": settings.fleet_name
    }
    passing = [s for s in stmts if "iam:PassRole" in s["Action"]]
    assert [s["Resource"] for s in passing] == [
        [f"arn:aws:iam::{ACCOUNT}:role/{options.name}-worker"]
    ]
    assert {a for a in actions_of(stmts) if a.startswith("iam:")} == {"iam:PassRole"}


def test_web_cannot_launch_or_pass_roles_and_assumes_only_the_scaler(clients, deployed):
    settings, options = deployed
    stmts = role_policy(clients, f"{options.name}-web")
    actions = actions_of(stmts)
    assert not {a for a in actions if a.startswith(("ec2:", "iam:"))}
    pull = next(s for s in stmts if "ecr:BatchGetImage" in s["Action"])
    assert pull["Resource"] == [f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/classifier-web"]
    assume = [s for s in stmts if "sts:AssumeRole" in s["Action"]]
    assert [s["Resource"] for s in assume] == [
        [f"arn:aws:iam::{ACCOUNT}:role/{options.name}-scaler"]
    ]
    trust = clients.iam.get_role(RoleName=f"{options.name}-scaler")["Role"]
    principal = trust["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]
    assert principal == {"AWS": f"arn:aws:iam::{ACCOUNT}:role/{options.name}-web"}


def test_no_policy_grants_everything(clients, deployed):
    _, options = deployed
    # The only actions with no resource type: they may (must) name "*".
    resourceless = {
        "cloudwatch:PutMetricData",
        "cloudwatch:GetMetricStatistics",
        "ecr:GetAuthorizationToken",
        "ec2:DescribeInstances",
        "ec2:DescribeInstanceStatus",
        "ec2:DescribeLaunchTemplates",
        "ec2:DescribeLaunchTemplateVersions",
    }
    for tier in ("worker", "scaler", "web"):
        for s in role_policy(clients, f"{options.name}-{tier}"):
            assert s["Effect"] == "Allow"
            assert not any("*" in action for action in s["Action"]), s
            if "*" in s["Resource"]:
                assert set(s["Action"]) <= resourceless, s
    put_metric = next(
        s
        for s in role_policy(clients, f"{options.name}-worker")
        if "cloudwatch:PutMetricData" in s["Action"]
    )
    assert put_metric["Condition"] == {
        "StringEquals": {"cloudwatch:namespace": runtime.cloudwatch.NAMESPACE}
    }


def test_policy_tags_match_the_scalers_own():
    assert policies.FLEET_TAG == scaler.fleet.FLEET_TAG
    assert set(policies.SCALER_TAG_KEYS) == {
        scaler.fleet.FLEET_TAG,
        scaler.fleet.STOPPED_AT_TAG,
        scaler.fleet.STARTED_AT_TAG,
    }
    assert policies.METRICS_NAMESPACE == runtime.cloudwatch.NAMESPACE


# --- drift ------------------------------------------------------------------------------------


def test_drift_is_planned_then_repaired(clients, deployed):
    settings, options = deployed
    clients.s3.delete_public_access_block(Bucket=settings.input_bucket)
    changed = settings_for(options.name, visibility_timeout_s=45, model="resnet50")

    plan = deploy(changed, options, clients, apply=False)
    found = {(c.action, c.kind, c.name, c.detail) for c in plan}
    assert ("update", "bucket", settings.input_bucket, "block all public access") in found
    assert ("update", "queue", settings.request_queue, "VisibilityTimeout") in found
    assert any(c.kind == "launch template" and "UserData" in c.detail for c in plan)
    assert {c.action for c in plan} == {"update"}

    deploy(changed, options, clients, apply=True)
    assert deploy(changed, options, clients, apply=False) == []
    template = clients.ec2.describe_launch_templates(
        LaunchTemplateNames=[settings.launch_template]
    )["LaunchTemplates"][0]
    assert template["DefaultVersionNumber"] == 2
    data = clients.ec2.describe_launch_template_versions(
        LaunchTemplateId=template["LaunchTemplateId"], Versions=["$Default"]
    )["LaunchTemplateVersions"][0]["LaunchTemplateData"]
    assert "MODEL=resnet50" in base64.b64decode(data["UserData"]).decode()


def test_deploy_refuses_resources_it_did_not_create(clients, name):
    clients.iam.create_role(
        RoleName=f"{name}-worker",
        AssumeRolePolicyDocument=json.dumps(policies.ec2_trust_policy()),
    )
    with pytest.raises(DeployError, match="not tagged"):
        deploy(settings_for(name), Options(name=name), clients, apply=True)


def test_a_worker_image_without_a_registry_is_refused(clients, name):
    settings = settings_for(name, worker_image="elastic-classifier-worker:latest")
    with pytest.raises(DeployError, match="WORKER_IMAGE"):
        deploy(settings, Options(name=name), clients, apply=False)


# --- teardown ---------------------------------------------------------------------------------


def test_teardown_removes_what_deploy_made_and_nothing_else(clients, deployed):
    settings, options = deployed
    ec2 = clients.ec2
    # The scaler's launches: from the template, with the fleet tag.
    fleet = ec2.run_instances(
        MinCount=2,
        MaxCount=2,
        LaunchTemplate={"LaunchTemplateName": settings.launch_template},
        TagSpecifications=[
            {
                "ResourceType": "instance",
                "Tags": [{"Key": policies.FLEET_TAG, "Value": settings.fleet_name}],
            }
        ],
    )
    fleet_ids = [i["InstanceId"] for i in fleet["Instances"]]
    image = ec2.describe_images()["Images"][0]["ImageId"]
    stranger = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)["Instances"][0]
    stranger_bucket = f"{options.name}-stranger"
    clients.s3.create_bucket(Bucket=stranger_bucket)
    clients.s3.put_object(Bucket=settings.input_bucket, Key="uploads/x", Body=b"x")

    dry = teardown(settings, options, clients, apply=False)
    assert clients.iam.get_role(RoleName=f"{options.name}-scaler")  # still there
    changes = teardown(settings, options, clients, apply=True)

    assert dry == changes
    assert {c.action for c in changes} == {"delete"}
    states = {
        i["InstanceId"]: i["State"]["Name"]
        for r in ec2.describe_instances(InstanceIds=[*fleet_ids, stranger["InstanceId"]])[
            "Reservations"
        ]
        for i in r["Instances"]
    }
    assert {states[i] for i in fleet_ids} == {"terminated"}
    assert states[stranger["InstanceId"]] == "running"
    buckets = {b["Name"] for b in clients.s3.list_buckets()["Buckets"]}
    assert stranger_bucket in buckets
    assert not {settings.input_bucket, settings.output_bucket} & buckets
    roles = {r["RoleName"] for r in clients.iam.list_roles()["Roles"]}
    assert not {f"{options.name}-{t}" for t in ("worker", "web", "scaler")} & roles
    assert teardown(settings, options, clients, apply=True) == []
    ec2.terminate_instances(InstanceIds=[stranger["InstanceId"]])


def test_teardown_keeps_an_untagged_namesake(clients, name):
    settings = settings_for(name)
    clients.iam.create_role(
        RoleName=f"{name}-scaler",
        AssumeRolePolicyDocument=json.dumps(policies.ec2_trust_policy()),
    )
    clients.s3.create_bucket(Bucket=settings.output_bucket)

    changes = teardown(settings, Options(name=name), clients, apply=True)

    assert {(c.action, c.kind, c.name) for c in changes} == {
        ("keep", "iam role", f"{name}-scaler"),
        ("keep", "bucket", settings.output_bucket),
    }
    assert clients.iam.get_role(RoleName=f"{name}-scaler")
    clients.s3.head_bucket(Bucket=settings.output_bucket)


# --- the command line, as a user runs it --------------------------------------------------------


def test_cli_plan_deploy_deploy_teardown(moto_endpoint, name):
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": REGION,
        **{k.upper(): str(v) for k, v in vars(settings_for(name)).items() if isinstance(v, str)},
    }

    def deployment(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "deployment", *args, "--name", name],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert "Nothing was changed" in deployment("plan")
    assert "Deployed:" in deployment("deploy")
    assert "No changes: the deployment is up to date." in deployment("deploy")
    assert "Removed" in deployment("teardown")
    assert "Nothing to remove" in deployment("teardown")


# --- user data and the settings table --------------------------------------------------------


def test_user_data_quotes_settings_and_carries_no_credentials(tmp_path):
    settings = settings_for("q", model="it's $(reboot)")
    script = render(settings, stop_timeout_s=40)
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)
    header = script.split("\nset -euo pipefail", 1)[0]
    printed = subprocess.run(
        ["bash", "-c", header + '\nprintf "%s|%s" "$WORKER_IMAGE" "$WORKER_ENV"'],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    image, env_file = printed.split("|", 1)
    assert image == settings.worker_image
    assert dict(line.split("=", 1) for line in env_file.splitlines()) == worker_env(settings)
    assert "MODEL=it's $(reboot)" in env_file.splitlines()
    assert not any(k.startswith("AWS_") and k != "AWS_REGION" for k in worker_env(settings))


def test_settings_table_lists_every_setting():
    table = markdown_table().splitlines()
    assert table[0] == "| variable | tier | default | meaning |"
    assert len(table) == 2 + len(vars(Settings()))
    assert "| `VISIBILITY_TIMEOUT_S` | worker | `30` |" in "\n".join(table)


def test_user_data_and_ci_script_pass_shellcheck(tmp_path):
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    script = tmp_path / "user-data.sh"
    script.write_text(render(settings_for("sc"), stop_timeout_s=40))
    done = subprocess.run(
        ["shellcheck", str(script), str(ROOT / "docker/ci-dockerd.sh")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout


def _stub(directory, name: str, body: str) -> None:
    path = directory / name
    path.write_text(f'#!/bin/bash\necho "{name} $*" >>"$CALLS"\n{body}\n')
    path.chmod(0o755)


@pytest.mark.parametrize("docker_installed", [True, False])
def test_user_data_installs_enables_and_runs_the_worker(tmp_path, docker_installed):
    """The real script, run by bash with the system's commands replaced by recording stubs."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("tee", "install", "chmod", "sleep", "cat"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    _stub(bin_dir, "systemctl", "")
    _stub(bin_dir, "curl", 'case "$*" in *api/token*) echo tok;; *instance-id*) echo i-0abc;; esac')
    _stub(bin_dir, "aws", "echo ecr-password")
    _stub(bin_dir, "dnf", f'{shutil.which("ln")} -s "{bin_dir}/docker-stub" "{bin_dir}/docker"')
    _stub(bin_dir, "docker-stub", "")
    if docker_installed:
        (bin_dir / "docker").symlink_to(bin_dir / "docker-stub")
    settings = settings_for("ud")
    script = tmp_path / "user-data.sh"
    script.write_text(render(settings, stop_timeout_s=40))
    calls = tmp_path / "calls"
    env = {
        "PATH": str(bin_dir),
        "CALLS": str(calls),
        "CLASSIFIER_CONFIG_DIR": str(tmp_path / "etc"),
        "CLASSIFIER_SETUP_LOG": str(tmp_path / "setup.log"),
        "CLASSIFIER_RETRY_DELAY_S": "0",
    }

    subprocess.run(["/bin/bash", str(script)], env=env, check=True, timeout=30)

    lines = calls.read_text().splitlines()
    assert ("dnf install -y docker" in lines) is not docker_installed
    assert "systemctl enable --now docker" in lines
    registry = settings.worker_image.split("/")[0]
    assert f"docker-stub login --username AWS --password-stdin {registry}" in lines
    assert f"docker-stub pull {settings.worker_image}" in lines
    run = next(line for line in lines if line.startswith("docker-stub run"))
    env_file = tmp_path / "etc" / "worker.env"
    assert "--restart unless-stopped" in run
    assert f"--env-file {env_file}" in run
    assert "--env INSTANCE_ID=i-0abc" in run
    assert run.endswith(settings.worker_image)
    assert dict(line.split("=", 1) for line in env_file.read_text().splitlines()) == worker_env(
        settings
    )
    assert env_file.stat().st_mode & 0o777 == 0o600
