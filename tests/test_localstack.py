"""LocalStack as compose.yaml runs it: the image `make images` built from PyPI, and the stack's
CloudFormation template deployed to LocalStack's own CloudFormation.

tests/test_deploy.py runs the template against moto; LocalStack's engine is another one (it
resolves SSM parameter types, reports outputs and applies bucket settings moto skips), so the
template is created, left alone by a second deploy, updated in place and torn down here too.
"""

from __future__ import annotations

import json
import re
import uuid

import boto3
import pytest

from deployment import template
from deployment.stack import Stack
from tests.conftest import ROOT, free_port
from tests.container_support import LOCALSTACK_IMAGE, answers_200, built_images, engine, wait_for

pytestmark = pytest.mark.containers

REGION = "us-east-1"
PARAMETERS = {"ImageTag": "1", "WebCidr": "203.0.113.0/24"}
# compose.yaml's services, and what the template needs besides: CloudFormation itself, STS, and
# SSM for the machine image parameter (AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>).
SERVICES = "s3,sqs,ec2,iam,cloudwatch,sts,cloudformation,ssm"


@pytest.fixture(scope="module")
def localstack_endpoint():
    client = engine()
    built_images(client, LOCALSTACK_IMAGE)
    port = free_port()
    container = client.containers.run(
        LOCALSTACK_IMAGE,
        detach=True,
        environment={"SERVICES": SERVICES},
        ports={"4566/tcp": ("127.0.0.1", port)},
        labels={"elastic-classifier.test": "localstack"},
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: answers_200(f"{endpoint}/_localstack/health"), "LocalStack", 180)
        yield endpoint
    finally:
        container.remove(force=True)


@pytest.fixture
def stack(localstack_endpoint) -> Stack:
    def client(service: str):
        return boto3.client(
            service,
            endpoint_url=localstack_endpoint,
            region_name=REGION,
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )

    lines: list[str] = []
    made = Stack(
        f"t{uuid.uuid4().hex[:8]}",
        *(client(s) for s in ("cloudformation", "ec2", "s3", "sqs")),
        report=lines.append,
        poll_s=0.5,
    )
    made.lines = lines
    return made


def test_the_image_is_the_pinned_localstack_release_compose_names():
    tag = LOCALSTACK_IMAGE.rsplit(":", 1)[1]
    pins = (ROOT / "docker" / "localstack-requirements.txt").read_text()
    assert re.search(r"^localstack-core==(\S+)$", pins, flags=re.M)[1] == tag
    assert "EC2_VM_MANAGER" not in (ROOT / "compose.yaml").read_text()  # core does not read it


def test_localstack_runs_the_template_create_no_op_update_delete(stack):
    declared = set(template.template()["Resources"])
    created = stack.deploy(PARAMETERS)
    assert {c.logical_id for c in created} == declared
    assert stack.status() == "CREATE_COMPLETE"
    outputs = stack.cloudformation.describe_stacks(StackName=stack.name)["Stacks"][0]["Outputs"]
    assert {"UploadUrl", "WorkerLaunchTemplate"} <= {o["OutputKey"] for o in outputs}
    # What moto's CloudFormation leaves out and LocalStack's applies: the buckets' policies
    # (TLS only), public access blocks and encryption. (Its community edition has no
    # AWS::EC2::LaunchTemplate: it reports them created and makes none; docs/deploy.md.)
    ids = {
        r["LogicalResourceId"]: r["PhysicalResourceId"]
        for r in stack.cloudformation.describe_stack_resources(StackName=stack.name)[
            "StackResources"
        ]
    }
    for bucket in (ids["InputBucket"], ids["OutputBucket"]):
        policy = json.loads(stack.s3.get_bucket_policy(Bucket=bucket)["Policy"])
        assert any("aws:SecureTransport" in json.dumps(s) for s in policy["Statement"])
        block = stack.s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
        assert all(block.values())
        assert stack.s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]

    assert stack.deploy({}) == []  # the second deploy changes nothing
    assert stack.status() == "CREATE_COMPLETE"

    changed = template.template()
    changed["Resources"]["RequestQueue"]["Properties"]["VisibilityTimeout"] = 45
    stack.template_body = json.dumps(changed)
    plan = stack.plan({})
    assert [(c.action, c.logical_id) for c in plan] == [("Modify", "RequestQueue")]
    stack.deploy({})
    assert stack.status() == "UPDATE_COMPLETE"
    url = stack.sqs.get_queue_url(QueueName=f"{stack.name}-requests")["QueueUrl"]
    attributes = stack.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout"])
    assert attributes["Attributes"]["VisibilityTimeout"] == "45"

    stack.teardown(keep_data=False)
    assert stack.status() is None
    buckets = [b["Name"] for b in stack.s3.list_buckets()["Buckets"]]
    assert not [b for b in buckets if b.startswith(stack.name)]
