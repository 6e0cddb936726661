"""`python -m deployment teardown`: remove what deploy created, and nothing else.

A resource goes only if it carries DEPLOYMENT_TAG = the deployment's name; one found under a
deployment name without that tag is reported and kept. The fleet's instances go first (they
were launched from deploy's template, which tags them), then what they used: the launch
template, the roles and instance profiles, the security groups, and last the data.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from botocore.exceptions import ClientError

from deployment.deploy import DEPLOYMENT_TAG, Change, Clients, Options, missing, tag_value
from runtime.settings import Settings

_LIVE_STATES = ["pending", "running", "stopping", "stopped", "shutting-down"]


class _Teardown:
    def __init__(self, settings, options, clients, apply, report, sleep):
        self.settings = settings
        self.name = options.name
        self.clients = clients
        self.apply = apply
        self.report = report
        self.sleep = sleep
        self.changes: list[Change] = []

    def note(self, change: Change) -> None:
        self.changes.append(change)
        self.report(change)

    def remove(self, kind: str, name: str, tags, do: Callable[[], None], detail: str = ""):
        if tag_value(tags) != self.name:
            change = Change("keep", kind, name, "not created by this deployment")
        else:
            change = Change("delete", kind, name, detail)
            if self.apply:
                do()
        self.note(change)


def teardown(
    settings: Settings,
    options: Options,
    clients: Clients,
    *,
    apply: bool,
    keep_data: bool = False,
    report: Callable[[Change], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> list[Change]:
    run = _Teardown(settings, options, clients, apply, report or (lambda change: None), sleep)
    _instances(run)
    _launch_template(run)
    for tier in ("scaler", "web", "worker"):
        _instance_profile(run, f"{options.name}-{tier}")
        _role(run, f"{options.name}-{tier}")
    _security_groups(run)
    if not keep_data:
        for queue in (settings.request_queue, settings.dead_letter_queue):
            _queue(run, queue)
        for bucket in (settings.input_bucket, settings.output_bucket):
            _bucket(run, bucket)
    return run.changes


def _instances(run: _Teardown) -> None:
    ec2 = run.clients.ec2
    filters = [
        {"Name": f"tag:{DEPLOYMENT_TAG}", "Values": [run.name]},
        {"Name": "instance-state-name", "Values": _LIVE_STATES},
    ]
    ids = [
        instance["InstanceId"]
        for page in ec2.get_paginator("describe_instances").paginate(Filters=filters)
        for reservation in page["Reservations"]
        for instance in reservation["Instances"]
    ]
    for instance_id in ids:
        # Listed by our tag: launched from deploy's template, which puts it on every instance.
        run.note(Change("delete", "instance", instance_id, "terminate"))
    if ids and run.apply:
        ec2.terminate_instances(InstanceIds=ids)
        # The security groups cannot go while an instance still uses them.
        ec2.get_waiter("instance_terminated").wait(InstanceIds=ids)


def _launch_template(run: _Teardown) -> None:
    ec2 = run.clients.ec2
    name = run.settings.launch_template
    try:
        template = ec2.describe_launch_templates(LaunchTemplateNames=[name])["LaunchTemplates"][0]
    except ClientError as error:
        if missing(error):
            return
        raise
    run.remove(
        "launch template",
        name,
        template.get("Tags"),
        lambda: ec2.delete_launch_template(LaunchTemplateId=template["LaunchTemplateId"]),
    )


def _instance_profile(run: _Teardown, name: str) -> None:
    iam = run.clients.iam
    try:
        profile = iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
    except ClientError as error:
        if missing(error):
            return
        raise

    def delete():
        for role in profile["Roles"]:
            iam.remove_role_from_instance_profile(
                InstanceProfileName=name, RoleName=role["RoleName"]
            )
        iam.delete_instance_profile(InstanceProfileName=name)

    run.remove("instance profile", name, profile.get("Tags"), delete)


def _role(run: _Teardown, name: str) -> None:
    iam = run.clients.iam
    try:
        role = iam.get_role(RoleName=name)["Role"]
    except ClientError as error:
        if missing(error):
            return
        raise

    def delete():
        for policy in iam.list_role_policies(RoleName=name)["PolicyNames"]:
            iam.delete_role_policy(RoleName=name, PolicyName=policy)
        for attached in iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]:
            iam.detach_role_policy(RoleName=name, PolicyArn=attached["PolicyArn"])
        for profile in iam.list_instance_profiles_for_role(RoleName=name)["InstanceProfiles"]:
            iam.remove_role_from_instance_profile(
                InstanceProfileName=profile["InstanceProfileName"], RoleName=name
            )
        iam.delete_role(RoleName=name)

    run.remove("iam role", name, role.get("Tags"), delete)


def _security_groups(run: _Teardown) -> None:
    ec2 = run.clients.ec2
    names = [f"{run.name}-worker", f"{run.name}-web"]
    groups = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": names}])
    for group in groups["SecurityGroups"]:
        run.remove(
            "security group",
            f"{group['GroupName']} {group['GroupId']}",
            group.get("Tags"),
            lambda g=group["GroupId"]: _delete_group(run, g),
        )


def _delete_group(run: _Teardown, group_id: str, attempts: int = 30) -> None:
    # A terminated instance's network interface lingers for a while and keeps its group in use.
    for attempt in range(attempts):
        try:
            run.clients.ec2.delete_security_group(GroupId=group_id)
            return
        except ClientError as error:
            if error.response["Error"]["Code"] != "DependencyViolation" or attempt == attempts - 1:
                raise
            run.sleep(10)


def _queue(run: _Teardown, name: str) -> None:
    sqs = run.clients.sqs
    try:
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    except ClientError as error:
        if missing(error):
            return
        raise
    tags = sqs.list_queue_tags(QueueUrl=url).get("Tags", {})
    run.remove(
        "queue",
        name,
        [{"Key": k, "Value": v} for k, v in tags.items()],
        lambda: sqs.delete_queue(QueueUrl=url),
    )


def _bucket(run: _Teardown, name: str) -> None:
    s3 = run.clients.s3
    try:
        tags = s3.get_bucket_tagging(Bucket=name)["TagSet"]
    except ClientError as error:
        if error.response["Error"]["Code"] == "NoSuchTagSet":
            tags = []
        elif missing(error):
            return
        else:
            raise
    run.remove("bucket", name, tags, lambda: _delete_bucket(s3, name), "with every object in it")


def _delete_bucket(s3, name: str) -> None:
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=name):
        objects = [
            {"Key": item["Key"], "VersionId": item["VersionId"]}
            for item in page.get("Versions", []) + page.get("DeleteMarkers", [])
        ]
        if objects:  # a page holds at most 1000, DeleteObjects' limit
            s3.delete_objects(Bucket=name, Delete={"Objects": objects, "Quiet": True})
    s3.delete_bucket(Bucket=name)
