"""`python -m deployment plan | deploy`: the real-AWS deployment, created or updated idempotently.

One pass over the resources serves both commands: each step reads what exists, compares it with
what the settings ask for and records a Change; `deploy` also carries it out, `plan` does not.
So a plan is exactly what the next deploy will do, and a deploy with nothing to record changed
nothing. Everything deploy creates carries the tag DEPLOYMENT_TAG = the deployment's name, and
teardown (deployment/teardown.py) removes only what carries it.

Order matters where one resource names another: security groups and instance profiles before
the launch template, the launch template before the scaler's policy that pins it, the web role
before the scaler role that trusts it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass

from botocore.exceptions import ClientError

from deployment import iam as policies
from deployment.userdata import render
from embedded.provision import provision
from runtime.clients import make_client
from runtime.resources import DLQ_RETENTION_S, QUEUE_ENCRYPTION
from runtime.settings import Settings

DEPLOYMENT_TAG = "elastic-classifier:deployment"
AL2023_AMI_PARAMETER = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
UNKNOWN = "(known after deploy)"
_MISSING = {
    "404",
    "NoSuchBucket",
    "NoSuchEntity",
    "NoSuchTagSet",
    "NoSuchPublicAccessBlockConfiguration",
    "ServerSideEncryptionConfigurationNotFoundError",
    "AWS.SimpleQueueService.NonExistentQueue",
    "QueueDoesNotExist",
    "InvalidLaunchTemplateName.NotFoundException",
    "InvalidLaunchTemplateId.NotFound",
}


class DeployError(RuntimeError):
    """The deployment cannot go on; the message says why in one line."""


@dataclass(frozen=True)
class Options:
    """What a real deployment needs beyond the settings every tier shares."""

    name: str = "classifier"
    instance_type: str = "c6i.large"
    ami: str = ""  # empty: the latest Amazon Linux 2023 (which has docker, curl and aws)
    web_cidrs: tuple[str, ...] = ()  # who may reach the web host's port; empty: nobody yet
    web_image: str = ""  # the web host's image, when in ECR: the web role may pull it


@dataclass(frozen=True)
class Clients:
    s3: object
    sqs: object
    iam: object
    ec2: object
    ssm: object
    sts: object

    @classmethod
    def for_settings(cls, settings: Settings) -> Clients:
        return cls(*(make_client(s, settings) for s in ("s3", "sqs", "iam", "ec2", "ssm", "sts")))


@dataclass(frozen=True)
class Change:
    action: str  # create | update | delete | keep
    kind: str
    name: str
    detail: str = ""

    def __str__(self) -> str:
        symbol = {"create": "+", "update": "~", "delete": "-"}.get(self.action, " ")
        detail = f" ({self.detail})" if self.detail else ""
        return f"{symbol} {self.action} {self.kind} {self.name}{detail}"


def missing(error: ClientError) -> bool:
    return error.response["Error"]["Code"] in _MISSING


def tag_value(tags: list[dict] | None, key: str = DEPLOYMENT_TAG) -> str | None:
    return {t["Key"]: t["Value"] for t in tags or []}.get(key)


def _canonical(document) -> str:
    return json.dumps(document, sort_keys=True, separators=(",", ":"))


class Run:
    """One plan or deploy: the changes found, carried out as they are found when applying."""

    def __init__(self, settings: Settings, options: Options, clients: Clients, apply: bool):
        self.settings = settings
        self.options = options
        self.clients = clients
        self.apply = apply
        self.changes: list[Change] = []
        self.tags = {DEPLOYMENT_TAG: options.name}
        self.tag_list = [{"Key": DEPLOYMENT_TAG, "Value": options.name}]
        identity = clients.sts.get_caller_identity()
        self.names = policies.Names(
            partition=identity["Arn"].split(":")[1],
            region=settings.aws_region,
            account=identity["Account"],
            deployment=options.name,
            settings=settings,
        )
        self.report: Callable[[Change], None] = lambda change: None

    def change(self, action: str, kind: str, name: str, detail: str = "", do=None) -> None:
        change = Change(action, kind, name, detail)
        self.changes.append(change)
        if self.apply and do is not None:
            do()
        self.report(change)

    def require_ours(self, kind: str, name: str, tags: list[dict] | None) -> None:
        if tag_value(tags) != self.options.name:
            raise DeployError(
                f"{kind} {name} exists but is not tagged {DEPLOYMENT_TAG}={self.options.name}: "
                "it belongs to something else; pick another --name or remove it"
            )


def deploy(
    settings: Settings,
    options: Options,
    clients: Clients,
    *,
    apply: bool,
    report: Callable[[Change], None] | None = None,
) -> list[Change]:
    """Bring the account to the deployment the settings describe (or, apply=False, say how)."""
    if "/" not in settings.worker_image:
        raise DeployError(
            f"WORKER_IMAGE={settings.worker_image} names no registry the instances can pull "
            "from: push the worker image (e.g. to ECR) and set WORKER_IMAGE to its URI"
        )
    run = Run(settings, options, clients, apply)
    if report is not None:
        run.report = report
    _data_stores(run)
    vpc_id = _default_vpc(run)
    worker_sg = _security_group(run, vpc_id, "worker", [])
    _security_group(run, vpc_id, "web", [(settings.port, cidr) for cidr in options.web_cidrs])
    for tier, document in (
        ("worker", policies.worker_policy(run.names)),
        ("web", policies.web_policy(run.names, options.web_image)),
    ):
        _role(run, tier, policies.ec2_trust_policy(), document)
        _instance_profile(run, tier)
    image_id = options.ami or _latest_al2023(run)
    template_id = _launch_template(run, worker_sg, image_id)
    _role(
        run,
        "scaler",
        policies.role_trust_policy(run.names.role_arn("web")),
        policies.scaler_policy(run.names, template_id, worker_sg, image_id),
    )
    return run.changes


# --- buckets and queues: checked here, created and repaired by embedded.provision ----------


def _data_stores(run: Run) -> None:
    s = run.settings
    drift = []
    for bucket in (s.input_bucket, s.output_bucket):
        drift += [("bucket", bucket, *d) for d in _bucket_drift(run, bucket)]
    dlq_arn = None
    for queue, wanted in _queue_wants(run):
        current = _queue_attributes(run, queue)
        drift += [("queue", queue, *d) for d in _queue_drift(run, current, wanted(dlq_arn))]
        if queue == s.dead_letter_queue and current is not None:
            dlq_arn = current["QueueArn"]
    for kind, name, action, detail in drift:
        run.change(action, kind, name, detail)
    if drift and run.apply:
        ids = provision(s, run.clients.s3, run.clients.sqs, run.tags)
        # provision tags queues only when it creates them.
        for url in ids.values():
            run.clients.sqs.tag_queue(QueueUrl=url, Tags=run.tags)


def _bucket_drift(run: Run, bucket: str) -> list[tuple[str, str]]:
    s3 = run.clients.s3
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError as error:
        if error.response["Error"]["Code"] in ("403", "AccessDenied"):
            raise DeployError(f"bucket {bucket} exists in another account: set its name") from None
        if not missing(error):
            raise
        return [("create", "private, public access blocked, SSE-S3")]
    drift = []
    try:
        block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
        if not all(block.values()):
            drift.append(("update", "block all public access"))
    except ClientError as error:
        if not missing(error):
            raise
        drift.append(("update", "block all public access"))
    try:
        s3.get_bucket_encryption(Bucket=bucket)
    except ClientError as error:
        if not missing(error):
            raise
        drift.append(("update", "default encryption SSE-S3"))
    try:
        tags = s3.get_bucket_tagging(Bucket=bucket)["TagSet"]
    except ClientError as error:
        if not missing(error):
            raise
        tags = []
    if tag_value(tags) != run.options.name:
        drift.append(("update", f"tag {DEPLOYMENT_TAG}={run.options.name}"))
    return drift


def _queue_wants(run: Run):
    s = run.settings
    yield (
        s.dead_letter_queue,
        lambda _: {**QUEUE_ENCRYPTION, "MessageRetentionPeriod": str(DLQ_RETENTION_S)},
    )
    yield (
        s.request_queue,
        lambda dlq_arn: {
            **QUEUE_ENCRYPTION,
            "VisibilityTimeout": str(s.visibility_timeout_s),
            "RedrivePolicy": _canonical(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": s.max_receive_count}
            ),
        },
    )


def _queue_attributes(run: Run, queue: str) -> dict | None:
    try:
        url = run.clients.sqs.get_queue_url(QueueName=queue)["QueueUrl"]
    except ClientError as error:
        if not missing(error):
            raise
        return None
    attributes = run.clients.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])
    tags = run.clients.sqs.list_queue_tags(QueueUrl=url).get("Tags", {})
    return {**attributes["Attributes"], "_tags": tags}


def _queue_drift(run: Run, current: dict | None, wanted: dict) -> list[tuple[str, str]]:
    if current is None:
        return [("create", "SSE" + (", dead-letter redrive" if "RedrivePolicy" in wanted else ""))]
    drift = []
    for key, value in wanted.items():
        have = current.get(key, "")
        if key == "RedrivePolicy" and have:
            policy = json.loads(have)
            have = _canonical(
                {
                    "deadLetterTargetArn": policy.get("deadLetterTargetArn"),
                    "maxReceiveCount": int(policy.get("maxReceiveCount", 0)),
                }
            )
        if have != value:
            drift.append(("update", key))
    if current["_tags"].get(DEPLOYMENT_TAG) != run.options.name:
        drift.append(("update", f"tag {DEPLOYMENT_TAG}={run.options.name}"))
    return drift


# --- network ----------------------------------------------------------------------------------


def _default_vpc(run: Run) -> str:
    vpcs = run.clients.ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])
    if not vpcs["Vpcs"]:
        raise DeployError("the region has no default VPC, which the workers launch into")
    return vpcs["Vpcs"][0]["VpcId"]


def _security_group(run: Run, vpc_id: str, tier: str, ingress: list[tuple[int, str]]) -> str:
    ec2 = run.clients.ec2
    name = f"{run.options.name}-{tier}"
    found = ec2.describe_security_groups(
        Filters=[
            {"Name": "group-name", "Values": [name]},
            {"Name": "vpc-id", "Values": [vpc_id]},
        ]
    )["SecurityGroups"]
    wanted = {("tcp", port, port, cidr) for port, cidr in ingress}
    if not found:
        created: list[str] = []

        def create():
            created.append(
                ec2.create_security_group(
                    GroupName=name,
                    Description=f"elastic-classifier {tier} ({run.options.name})",
                    VpcId=vpc_id,
                    TagSpecifications=[{"ResourceType": "security-group", "Tags": run.tag_list}],
                )["GroupId"]
            )
            if wanted:
                ec2.authorize_security_group_ingress(
                    GroupId=created[0], IpPermissions=[_permission(rule) for rule in wanted]
                )

        rules = ", ".join(f"tcp {port} from {cidr}" for port, cidr in ingress)
        run.change("create", "security group", name, f"inbound: {rules or 'none'}", create)
        return created[0] if created else UNKNOWN
    group = found[0]
    run.require_ours("security group", name, group.get("Tags"))
    group_id = group["GroupId"]
    have = {
        (p["IpProtocol"], p.get("FromPort"), p.get("ToPort"), r["CidrIp"])
        for p in group["IpPermissions"]
        for r in p.get("IpRanges", [])
    }
    for rules, action, call in (
        (wanted - have, "allow", ec2.authorize_security_group_ingress),
        (have - wanted, "revoke", ec2.revoke_security_group_ingress),
    ):
        for rule in sorted(rules, key=str):
            run.change(
                "update",
                "security group",
                name,
                f"{action} {rule[0]} {rule[1]} from {rule[3]}",
                lambda c=call, r=rule: c(GroupId=group_id, IpPermissions=[_permission(r)]),
            )
    return group_id


def _permission(rule: tuple) -> dict:
    proto, low, high, cidr = rule
    return {"IpProtocol": proto, "FromPort": low, "ToPort": high, "IpRanges": [{"CidrIp": cidr}]}


# --- IAM -----------------------------------------------------------------------------------


def _role(run: Run, tier: str, trust: dict, policy: dict) -> None:
    iam = run.clients.iam
    name = run.names.role(tier)
    policy_name = f"{name}-policy"
    try:
        role = iam.get_role(RoleName=name)["Role"]
    except ClientError as error:
        if not missing(error):
            raise
        role = None
    if role is None:
        run.change(
            "create",
            "iam role",
            name,
            f"{tier}: trusted by {_principal(trust)}",
            lambda: iam.create_role(
                RoleName=name,
                AssumeRolePolicyDocument=json.dumps(trust),
                Description=f"elastic-classifier {tier} ({run.options.name})",
                Tags=run.tag_list,
            ),
        )
        current_policy = None
    else:
        run.require_ours("iam role", name, role.get("Tags"))
        if _canonical(role["AssumeRolePolicyDocument"]) != _canonical(trust):
            run.change(
                "update",
                "iam role",
                name,
                f"trust: {_principal(trust)}",
                lambda: iam.update_assume_role_policy(
                    RoleName=name, PolicyDocument=json.dumps(trust)
                ),
            )
        try:
            current_policy = iam.get_role_policy(RoleName=name, PolicyName=policy_name)
        except ClientError as error:
            if not missing(error):
                raise
            current_policy = None
    if current_policy is None or _canonical(current_policy["PolicyDocument"]) != _canonical(policy):
        run.change(
            "create" if current_policy is None else "update",
            "iam policy",
            f"{name}/{policy_name}",
            ", ".join(s["Sid"] for s in policy["Statement"]),
            lambda: iam.put_role_policy(
                RoleName=name, PolicyName=policy_name, PolicyDocument=json.dumps(policy)
            ),
        )


def _principal(trust: dict) -> str:
    principal = trust["Statement"][0]["Principal"]
    return principal.get("Service") or principal.get("AWS")


def _instance_profile(run: Run, tier: str) -> None:
    iam = run.clients.iam
    name = role = run.names.role(tier)
    try:
        profile = iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
    except ClientError as error:
        if not missing(error):
            raise
        profile = None
    if profile is None:

        def create():
            iam.create_instance_profile(InstanceProfileName=name, Tags=run.tag_list)
            iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=role)

        run.change("create", "instance profile", name, f"role {role}", create)
        return
    run.require_ours("instance profile", name, profile.get("Tags"))
    roles = [r["RoleName"] for r in profile["Roles"]]
    if roles != [role]:

        def fix():
            for other in roles:
                iam.remove_role_from_instance_profile(InstanceProfileName=name, RoleName=other)
            iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=role)

        run.change("update", "instance profile", name, f"role {role}", fix)


# --- the workers' launch template ----------------------------------------------------------


def _latest_al2023(run: Run) -> str:
    return run.clients.ssm.get_parameter(Name=AL2023_AMI_PARAMETER)["Parameter"]["Value"]


def launch_template_data(run: Run, security_group_id: str, image_id: str) -> dict:
    user_data = render(run.settings, stop_timeout_s=run.settings.visibility_timeout_s + 10)
    return {
        "ImageId": image_id,
        "InstanceType": run.options.instance_type,
        "IamInstanceProfile": {"Name": run.names.role("worker")},
        "SecurityGroupIds": [security_group_id],
        "UserData": base64.b64encode(user_data.encode()).decode(),
        # IMDSv2 only; 2 hops so the worker container (one bridge away) reaches its role.
        "MetadataOptions": {
            "HttpEndpoint": "enabled",
            "HttpTokens": "required",
            "HttpPutResponseHopLimit": 2,
        },
        "TagSpecifications": [
            {"ResourceType": kind, "Tags": run.tag_list} for kind in ("instance", "volume")
        ],
    }


def _projection(current: dict, wanted: dict) -> dict:
    """The parts of a template version that deploy sets, in the shape deploy sets them."""
    seen = {key: current.get(key) for key in wanted}
    kinds = {spec["ResourceType"] for spec in wanted["TagSpecifications"]}
    seen["TagSpecifications"] = [
        spec for spec in current.get("TagSpecifications", []) if spec["ResourceType"] in kinds
    ]
    return seen


def _launch_template(run: Run, security_group_id: str, image_id: str) -> str:
    ec2 = run.clients.ec2
    name = run.settings.launch_template
    wanted = launch_template_data(run, security_group_id, image_id)
    try:
        template = ec2.describe_launch_templates(LaunchTemplateNames=[name])["LaunchTemplates"][0]
    except ClientError as error:
        if not missing(error):
            raise
        template = None
    if template is None:
        created: list[str] = []
        run.change(
            "create",
            "launch template",
            name,
            f"{run.options.instance_type}, {image_id}, worker {run.settings.worker_image}",
            lambda: created.append(
                ec2.create_launch_template(
                    LaunchTemplateName=name,
                    LaunchTemplateData=wanted,
                    TagSpecifications=[{"ResourceType": "launch-template", "Tags": run.tag_list}],
                )["LaunchTemplate"]["LaunchTemplateId"]
            ),
        )
        return created[0] if created else UNKNOWN
    run.require_ours("launch template", name, template.get("Tags"))
    template_id = template["LaunchTemplateId"]
    current = ec2.describe_launch_template_versions(
        LaunchTemplateId=template_id, Versions=["$Default"]
    )["LaunchTemplateVersions"][0]["LaunchTemplateData"]
    seen = _projection(current, wanted)
    differing = [key for key in wanted if _canonical(seen[key]) != _canonical(wanted[key])]
    if differing:

        def new_version():
            version = ec2.create_launch_template_version(
                LaunchTemplateId=template_id, LaunchTemplateData=wanted
            )["LaunchTemplateVersion"]["VersionNumber"]
            ec2.modify_launch_template(LaunchTemplateId=template_id, DefaultVersion=str(version))

        run.change(
            "update",
            "launch template",
            name,
            "new default version: " + ", ".join(differing),
            new_version,
        )
    return template_id
