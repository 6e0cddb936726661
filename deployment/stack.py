"""The deployment as one CloudFormation stack: plan, deploy and tear down through change sets.

CloudFormation does the work (ordering, idempotence, rollback, deleting exactly what it made);
this module only asks for it and reports. What the stack cannot know about is removed here: the
fleet's instances (the scaler launched them), the web processes' reply queues (the web tier made
them), and, unless kept, the buckets (retained by the template so that no stack update or
mistaken delete can lose data).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import yaml
from botocore.exceptions import ClientError

from deployment import iam
from deployment.template import DEPLOYMENT_TAG, PATH

CAPABILITIES = ["CAPABILITY_IAM"]
_NO_CHANGES = ("didn't contain changes", "No updates are to be performed")
_FLEET_STATES = ["pending", "running", "stopping", "stopped", "shutting-down"]


class DeployError(RuntimeError):
    """The command cannot go on; the message says why in one line."""


@dataclass(frozen=True)
class Change:
    action: str  # Add | Modify | Remove | Dynamic
    logical_id: str
    kind: str
    replacement: str = ""  # True | False | Conditional, for Modify

    def __str__(self) -> str:
        symbol = {"Add": "+", "Modify": "~", "Remove": "-"}.get(self.action, "?")
        replace = " (replaces it)" if self.replacement == "True" else ""
        return f"{symbol} {self.action.lower()} {self.logical_id} ({self.kind}){replace}"


@dataclass
class Stack:
    """One stack by name, with the clients every command needs."""

    name: str
    cloudformation: object
    ec2: object
    s3: object
    sqs: object
    report: Callable[[str], None] = print
    poll_s: float = 2.0
    sleep: Callable[[float], None] = time.sleep
    template_body: str = ""  # the committed template unless given

    def __post_init__(self) -> None:
        self.template_body = self.template_body or PATH.read_text()

    def status(self) -> str | None:
        try:
            stacks = self.cloudformation.describe_stacks(StackName=self.name)["Stacks"]
        except ClientError as error:
            if "does not exist" in error.response["Error"]["Message"]:
                return None
            raise
        return stacks[0]["StackStatus"]

    # --- plan and deploy -----------------------------------------------------------------

    def change_set(self, given: dict[str, str]) -> tuple[str, list[Change]] | None:
        """Create a change set from the template; its id and changes, or None if none."""
        status = self.status()
        if (
            status is not None
            and status.endswith("_IN_PROGRESS")
            and status != "REVIEW_IN_PROGRESS"
        ):
            raise DeployError(f"stack {self.name} is busy ({status}); try again when it settles")
        if status == "ROLLBACK_COMPLETE":
            raise DeployError(f"stack {self.name} failed to create; run teardown, then deploy")
        creating = status in (None, "REVIEW_IN_PROGRESS")
        check_parameters(yaml.safe_load(self.template_body)["Parameters"], given)
        try:
            reply = self.cloudformation.create_change_set(
                StackName=self.name,
                ChangeSetName=f"deploy-{uuid.uuid4().hex[:12]}",
                ChangeSetType="CREATE" if creating else "UPDATE",
                TemplateBody=self.template_body,
                Parameters=self._parameters(given, creating),
                Capabilities=CAPABILITIES,
                Tags=[{"Key": DEPLOYMENT_TAG, "Value": self.name}],
            )
        except ClientError as error:  # some endpoints refuse an empty change set up front
            if any(text in error.response["Error"]["Message"] for text in _NO_CHANGES):
                return None
            raise
        change_set = reply["Id"]
        while True:
            described = self.cloudformation.describe_change_set(ChangeSetName=change_set)
            if described["Status"] in ("CREATE_COMPLETE", "FAILED"):
                break
            self.sleep(self.poll_s)
        if described["Status"] == "FAILED":
            reason = described.get("StatusReason", "")
            self.cloudformation.delete_change_set(ChangeSetName=change_set)
            if any(text in reason for text in _NO_CHANGES):
                return None
            raise DeployError(f"CloudFormation refused the change: {reason}")
        changes = [
            Change(
                c["ResourceChange"]["Action"],
                c["ResourceChange"]["LogicalResourceId"],
                c["ResourceChange"]["ResourceType"],
                c["ResourceChange"].get("Replacement", ""),
            )
            for c in described["Changes"]
        ]
        if not changes:  # moto's answer to an update that changes nothing
            self.cloudformation.delete_change_set(ChangeSetName=change_set)
            return None
        return change_set, changes

    def _parameters(self, given: dict[str, str], creating: bool) -> list[dict]:
        """On update, a value not given again is kept, as `aws cloudformation deploy` does;
        one still at the template's default is simply left out (the same value, and fewer
        parameters for an emulator to compare). An SSM parameter (the machine image) not
        given is left out too, so that its path is read again."""
        parameters = [{"ParameterKey": k, "ParameterValue": v} for k, v in given.items()]
        if creating:
            return parameters
        declared = yaml.safe_load(self.template_body)["Parameters"]
        current = self.cloudformation.describe_stacks(StackName=self.name)["Stacks"][0]
        for item in current.get("Parameters", []):
            key, spec = item["ParameterKey"], declared.get(item["ParameterKey"])
            if key in given or spec is None or spec["Type"].startswith("AWS::SSM::"):
                continue
            if item.get("ParameterValue") != str(spec.get("Default")):
                parameters.append({"ParameterKey": key, "UsePreviousValue": True})
        return parameters

    def plan(self, given: dict[str, str]) -> list[Change]:
        """The changes deploy would make; the change set is deleted after, nothing changes."""
        existed = self.status() is not None
        made = self.change_set(given)
        if made is None:
            return []
        self.cloudformation.delete_change_set(ChangeSetName=made[0])
        if not existed:  # a CREATE change set leaves an empty stack under review behind
            self.cloudformation.delete_stack(StackName=self.name)
        return made[1]

    def deploy(self, given: dict[str, str]) -> list[Change]:
        """Create or update the stack and wait, reporting events as they come.
        Returns the changes made ([] when there were none); raises DeployError on rollback."""
        made = self.change_set(given)
        if made is None:
            return []
        change_set, changes = made
        for change in changes:
            self.report(str(change))
        before = self._events()
        self.cloudformation.execute_change_set(ChangeSetName=change_set)
        status = self.wait({e["EventId"] for e in before})
        if not status.endswith("_COMPLETE") or "ROLLBACK" in status:
            raise DeployError(f"stack {self.name} ended {status}: the failures are listed above")
        return changes

    def _events(self) -> list[dict]:
        """The stack's events, oldest first (none once it is deleted)."""
        events = []
        try:
            pages = self.cloudformation.get_paginator("describe_stack_events")
            for page in pages.paginate(StackName=self.name):
                events += page["StackEvents"]
        except ClientError as error:
            if "does not exist" not in error.response["Error"]["Message"]:
                raise
        return sorted(events, key=lambda e: e["Timestamp"])

    def wait(self, seen: set[str]) -> str:
        """Report events not in `seen` as they come, until the stack settles; its last status.
        (Event ids, not clocks: this machine's clock need not agree with AWS's.)"""
        while True:
            status = self.status() or "DELETE_COMPLETE"
            for event in self._events():
                if event["EventId"] not in seen:
                    seen.add(event["EventId"])
                    self.report(_event_line(event))
            if not status.endswith("_IN_PROGRESS") or status == "REVIEW_IN_PROGRESS":
                return status
            self.sleep(self.poll_s)

    # --- teardown -------------------------------------------------------------------------

    def teardown(self, keep_data: bool) -> bool:
        """Terminate the fleet, delete the stack, its reply queues and (unless kept) buckets.
        False if there was no such stack."""
        if self.status() is None:
            return False
        buckets = self._buckets()
        self._terminate_fleet()
        before = self._events()
        self.cloudformation.delete_stack(StackName=self.name)
        status = self.wait({e["EventId"] for e in before})
        if status != "DELETE_COMPLETE":
            raise DeployError(f"stack {self.name} ended {status}: the failures are listed above")
        self._delete_reply_queues()
        for bucket in buckets:
            if keep_data:
                self.report(f"kept bucket {bucket} (delete it with `aws s3 rb --force`)")
            else:
                self._delete_bucket(bucket)
        return True

    def _buckets(self) -> list[str]:
        resources = self.cloudformation.describe_stack_resources(StackName=self.name)
        return [
            r["PhysicalResourceId"]
            for r in resources["StackResources"]
            if r.get("ResourceType") == "AWS::S3::Bucket" and r.get("PhysicalResourceId")
        ]

    def _terminate_fleet(self) -> None:
        # The scaler launched these from the stack's template; they are not stack resources.
        filters = [
            {"Name": f"tag:{iam.FLEET_TAG}", "Values": [f"{self.name}-workers"]},
            {"Name": "instance-state-name", "Values": _FLEET_STATES},
        ]
        ids = [
            instance["InstanceId"]
            for page in self.ec2.get_paginator("describe_instances").paginate(Filters=filters)
            for reservation in page["Reservations"]
            for instance in reservation["Instances"]
        ]
        if not ids:
            return
        self.report(f"terminating {len(ids)} fleet instance(s): {' '.join(ids)}")
        self.ec2.terminate_instances(InstanceIds=ids)
        # The workers' security group cannot go while an instance still uses it.
        self.ec2.get_waiter("instance_terminated").wait(InstanceIds=ids)

    def _delete_reply_queues(self) -> None:
        prefix = f"{self.name}-reply-"
        for url in self.sqs.list_queues(QueueNamePrefix=prefix).get("QueueUrls", []):
            self.sqs.delete_queue(QueueUrl=url)
            self.report(f"deleted reply queue {url.rsplit('/', 1)[-1]}")

    def _delete_bucket(self, name: str) -> None:
        try:
            for page in self.s3.get_paginator("list_object_versions").paginate(Bucket=name):
                objects = [
                    {"Key": item["Key"], "VersionId": item["VersionId"]}
                    for item in page.get("Versions", []) + page.get("DeleteMarkers", [])
                ]
                if objects:  # a page holds at most 1000, DeleteObjects' limit
                    self.s3.delete_objects(Bucket=name, Delete={"Objects": objects, "Quiet": True})
            self.s3.delete_bucket(Bucket=name)
        except ClientError as error:
            if error.response["Error"]["Code"] != "NoSuchBucket":
                raise
        self.report(f"deleted bucket {name} and everything in it")


def check_parameters(declared: dict, given: dict[str, str]) -> None:
    """Refuse a value the template would refuse, before any change set (one line each)."""
    for key, value in given.items():
        spec = declared.get(key)
        if spec is None:
            raise DeployError(f"the template has no parameter {key}")
        pattern = spec.get("AllowedPattern")
        if pattern and not re.fullmatch(pattern, value):
            raise DeployError(f"{key}={value!r} is not allowed: {spec['Description']}")
        if "AllowedValues" in spec and value not in spec["AllowedValues"]:
            raise DeployError(f"{key} must be one of {', '.join(spec['AllowedValues'])}")
        if spec["Type"] == "Number":
            try:
                number = float(value)
            except ValueError:
                raise DeployError(f"{key} must be a number, got {value!r}") from None
            if not spec.get("MinValue", number) <= number <= spec.get("MaxValue", number):
                raise DeployError(
                    f"{key} must be {spec.get('MinValue', '')}..{spec.get('MaxValue', '')}"
                )


def _event_line(event: dict) -> str:
    status = event["ResourceStatus"]
    reason = " ".join((event.get("ResourceStatusReason") or "").split())  # one line each
    mark = "!" if "FAILED" in status or "ROLLBACK" in status else " "
    when = event["Timestamp"].strftime("%H:%M:%S")
    line = f"{mark} {when} {event['LogicalResourceId']} {status}"
    return f"{line}: {reason}" if reason and mark == "!" else line
