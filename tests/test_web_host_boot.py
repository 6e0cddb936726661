"""The web host's user-data, for real, on a stand-in instance (issue 25 item 2).

The user-data is rendered by deployment.userdata exactly as the web host's launch template has it
(tests/test_deploy.py compares the two on moto) and boots on a stand-in instance
(tests/stand_in/instances.py) that pulls the web image from a registry. On a network of its own,
beside moto's server in a container (AWS) and the metadata stand-in (tests/stand_in/imds.py):

- the scaler, on the instance's host network, gets the instance role from metadata;
- the web container, on the instance's bridge, gets no token: the stand-in sends the token PUT's
  answer with the launch template's hop limit (1) as its IP TTL, as EC2 does, so the instance's
  own kernel drops it when forwarding it to the bridge (what is emulated is only where the service
  sits: one hop from the instance, as EC2's is);
- the web container signs as the web role the scaler assumed and handed over, and its SDK moves
  to a renewed session before the one it holds expires (905 s sessions, renewed every 2 s here);
- an upload makes the scaler launch a worker (in moto's EC2: nothing boots from it);
- no credential is in the user-data or in either container's environment.
"""

from __future__ import annotations

import json
import time
import uuid

import boto3
import pytest
import requests

from deployment import template, userdata
from embedded.provision import provision
from runtime.resources import FLEET_TAG
from runtime.settings import Settings
from scaler.fleet import ensure_local_launch_template
from tests.conftest import free_port
from tests.container_support import (
    MOTO_IMAGE,
    WEB_IMAGE,
    answers_200,
    built_images,
    engine,
    wait_for,
)
from tests.http_client import photos
from tests.stand_in import instances
from tests.stand_in.imds import MetadataService
from tests.stand_in.instances import CREDENTIALS, on
from tests.support.web_sdk import WEB_SDK

pytestmark = [pytest.mark.containers, pytest.mark.timeout(1800)]

NETWORK = "elastic-classifier-web-host-test"  # its own: compose's stack may run beside it
PUSHED = "elastic-classifier-web:user-data"
INSTANCE_ID = "i-0standinwebhost1"
# The SDK's own metadata client, as either container's boto3 would use it were metadata its
# source (env={}: the web container's AWS_EC2_METADATA_DISABLED would stop it before it asks).
FETCH_ROLE = """
import json, sys
from botocore.utils import InstanceMetadataFetcher
fetcher = InstanceMetadataFetcher(timeout=5, num_attempts=2, base_url=sys.argv[1], env={})
print(json.dumps(fetcher.retrieve_iam_role_credentials(), default=str))
"""
PUT_TOKEN = """
import sys, urllib.request
request = urllib.request.Request(sys.argv[1] + "/latest/api/token", method="PUT",
    headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"})
print(urllib.request.urlopen(request, timeout=5).read().decode())
"""


class Host:
    """The lab (network, moto, registry, metadata) and the booted web host."""

    def __init__(self, client):
        self.client = client
        self.containers: list = []
        self.network = None
        self.imds: MetadataService | None = None
        self.aws_url = self.imds_url = self.url = self.user_data = ""
        self.instance = None
        self.settings: Settings | None = None

    def aws(self, service: str):
        return boto3.client(
            service,
            endpoint_url=self.aws_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def run(self, image: str, name: str, **kwargs):
        container = self.client.containers.run(
            image, detach=True, name=name, network=NETWORK, **kwargs
        )
        self.containers.append(container)
        return container

    def exec(self, container: str, *command: str) -> tuple[int, str]:
        return on(self.instance, "docker", "exec", container, *command)

    def close(self) -> None:
        for container in reversed(self.containers):
            try:
                container.remove(force=True, v=True)
            except Exception as error:  # noqa: BLE001 - clean up the rest regardless
                print(f"could not remove {container.name}: {error}")
        if self.network is not None:
            self.network.remove()
        if self.imds is not None:
            self.imds.stop()


def _role(host: Host, name: str) -> str:
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
             "Principal": {"AWS": "arn:aws:iam::123456789012:role/scaler"}}]}  # fmt: skip
    created = host.aws("iam").create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))
    return created["Role"]["Arn"]


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    client = engine()
    built_images(client, WEB_IMAGE, MOTO_IMAGE, instances.BASE_IMAGE)
    instances.build_stand_ins(client, tmp_path_factory.mktemp("web-host"))
    for stale in client.containers.list(all=True, filters={"network": NETWORK}):
        stale.remove(force=True, v=True)
    for stale in client.networks.list(names=[NETWORK]):
        stale.remove()
    host = Host(client)
    try:
        host.network = client.networks.create(NETWORK, driver="bridge")
        gateway = client.networks.get(NETWORK).attrs["IPAM"]["Config"][0]["Gateway"]
        aws_port, push_port = free_port(), free_port()
        moto = host.run(
            MOTO_IMAGE, "elastic-classifier-web-host-aws",
            ports={"4566/tcp": ("127.0.0.1", aws_port)},
        )  # fmt: skip
        registry = host.run(
            instances.REGISTRY_IMAGE, "elastic-classifier-web-host-registry",
            ports={"5000/tcp": ("127.0.0.1", push_port)},
        )  # fmt: skip
        host.aws_url = f"http://127.0.0.1:{aws_port}"
        wait_for(lambda: answers_200(f"{host.aws_url}/moto-api/"), "moto", 120)
        wait_for(lambda: answers_200(f"http://127.0.0.1:{push_port}/v2/"), "the registry", 60)
        started = time.monotonic()
        instances.push(client, WEB_IMAGE, f"127.0.0.1:{push_port}/{PUSHED}")
        print(f"pushed the web image in {time.monotonic() - started:.0f} s")

        name = f"wh{uuid.uuid4().hex[:8]}"
        host.settings = userdata.on_hosts(
            Settings(
                input_bucket=f"{name}-in",
                output_bucket=f"{name}-out",
                request_queue=f"{name}-requests",
                reply_queue_prefix=f"{name}-reply-",
                fleet_name=f"{name}-fleet",
                launch_template=f"{name}-lt",
                fleet_max=1,
                web_role_arn=_role(host, f"{name}-web"),
                # The SDK refreshes 900 s before expiry: with 905 s sessions renewed every 2 s
                # its refresh comes after about 5 s instead of 45 minutes.
                web_credentials_duration_s=905,
                web_credentials_refresh_s=2,
            )
        )
        host.settings.validate()
        provision(host.settings, host.aws("s3"), host.aws("sqs"))
        ensure_local_launch_template(host.aws("ec2"), host.settings)

        host.imds = MetadataService(
            gateway, free_port(), INSTANCE_ID, instances.hop_limit("WebHostTemplate"),
            role="classifier-scaler",
        ).start()  # fmt: skip
        host.imds_url = f"http://{gateway}:{host.imds._server.server_port}"
        registry_address = f"{instances.address(registry, NETWORK)}:5000"
        host.user_data = userdata.render_web_host(
            host.settings, f"{registry_address}/{PUSHED}", template.SCALER_STOP_TIMEOUT_S
        )
        started = time.monotonic()
        host.instance = instances.boot(
            client,
            "elastic-classifier-test-web-host",
            NETWORK,
            registry_address,
            host.user_data,
            host.imds_url,
            f"AWS_ENDPOINT_URL=http://{instances.address(moto, NETWORK)}:4566\n"
            f"AWS_EC2_METADATA_SERVICE_ENDPOINT={host.imds_url}/",
        )
        host.containers.append(host.instance)
        wait_for(
            lambda: instances.container_status(host.instance, "classifier-web").startswith("Up"),
            "the web host's web container",
            900,
            3,
        )
        host.url = f"http://{instances.address(host.instance, NETWORK)}:{host.settings.port}"
        wait_for(lambda: answers_200(f"{host.url}/healthz"), "the web host's web tier", 300, 2)
        print(f"the web host booted in {time.monotonic() - started:.0f} s")
        yield host
    except BaseException:
        if host.instance is not None:
            print(on(host.instance, "cat", "/var/log/cloud-init-output.log")[1][-4000:])
            for container in ("classifier-scaler", "classifier-web"):
                print(on(host.instance, "docker", "logs", "--tail", "40", container)[1])
        raise
    finally:
        host.close()


def test_the_web_host_runs_both_containers_and_holds_no_credential(host):
    assert not CREDENTIALS.search(host.user_data)
    assert "AWS_ACCESS_KEY_ID" not in host.user_data
    for container in ("classifier-scaler", "classifier-web"):
        assert instances.container_status(host.instance, container).startswith("Up")
        code, env = on(
            host.instance, "docker", "inspect", "--format", "{{json .Config.Env}}", container
        )
        assert code == 0 and f"INSTANCE_ID={INSTANCE_ID}" in env
        assert not CREDENTIALS.search(env) and "AWS_ACCESS_KEY_ID" not in env, env
    modes = {}
    for container in ("classifier-scaler", "classifier-web"):
        code, mode = on(
            host.instance, "docker", "inspect", "--format", "{{.HostConfig.NetworkMode}}", container
        )
        modes[container] = mode.strip()
    assert modes == {"classifier-scaler": "host", "classifier-web": "default"}
    # The scaler's wake token, where the web container reads it (runtime.wake).
    code, _ = on(
        host.instance, "docker", "exec", "classifier-web", "test", "-s",
        f"{userdata.HANDOVER_MOUNT}/wake-token",
    )  # fmt: skip
    assert code == 0


def test_the_web_container_gets_no_metadata_token_and_no_instance_role(host):
    url = host.imds_url
    code, token = on(
        host.instance, "curl", "-fsS", "-m", "10", "-X", "PUT", f"{url}/latest/api/token",
        "-H", "X-aws-ec2-metadata-token-ttl-seconds: 60",
    )  # fmt: skip
    assert code == 0 and token.strip() in host.imds.tokens  # the host's network: one hop
    code, out = host.exec("classifier-scaler", "python", "-c", PUT_TOKEN, url)
    assert code == 0 and out.strip() in host.imds.tokens, out

    code, out = host.exec("classifier-web", "python", "-c", PUT_TOKEN, url)
    assert code != 0 and "timed out" in out, out  # the answer died on the instance
    code, out = host.exec("classifier-web", "python", "-c", FETCH_ROLE, url)
    assert code == 0 and json.loads(out.strip().splitlines()[-1]) == {}, out
    # A read without a token (IMDSv1) is refused, as HttpTokens=required makes EC2 do.
    code, out = host.exec(
        "classifier-web", "python", "-c",
        "import sys, urllib.request; urllib.request.urlopen(sys.argv[1])",
        f"{url}/latest/meta-data/iam/security-credentials/",
    )  # fmt: skip
    assert code != 0 and "401" in out, out
    # The scaler, on the host's network, gets the instance role from the same service.
    code, out = host.exec("classifier-scaler", "python", "-c", FETCH_ROLE, url)
    assert code == 0 and json.loads(out.strip().splitlines()[-1])["access_key"], out


def test_the_web_container_signs_as_the_web_role_and_renews_it_before_expiry(host):
    code, out = host.exec("classifier-web", "python", "-c", WEB_SDK)
    assert code == 0, out
    first, renewed = (json.loads(line) for line in out.strip().splitlines()[-2:])
    role = host.settings.web_role_arn.rsplit("/", 1)[1]
    for seen in (first, renewed):
        assert seen["arn"].endswith(f":assumed-role/{role}/classifier-web"), seen
    assert renewed["key"] != first["key"]
    # The web tier's own long-lived clients renewed too: it still reaches its buckets.
    assert answers_200(f"{host.url}/healthz")


def test_the_scaler_on_the_web_host_launches_a_worker_for_an_upload(host):
    name, data, _ = photos()[0]
    response = requests.post(
        f"{host.url}/upload",
        files={"myfile": (name, data, "application/octet-stream")},
        headers={"Prefer": "respond-async"},
        timeout=60,
    )
    assert response.status_code == 202, response.text
    ec2 = host.aws("ec2")

    def fleet() -> list[str]:
        reservations = ec2.describe_instances(
            Filters=[{"Name": f"tag:{FLEET_TAG}", "Values": [host.settings.fleet_name]}]
        )["Reservations"]
        return [i["InstanceId"] for r in reservations for i in r["Instances"]]

    assert wait_for(fleet, "the scaler's launch", 180, 2)
    # The web tier reads the scaler's status on the host, over the bridge.
    status = requests.get(f"{host.url}/status", timeout=30).json()
    assert status["scaler"] == "ok", status
