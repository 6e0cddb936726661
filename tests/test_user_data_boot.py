"""The workers' user-data, for real: it boots a worker from a registry on a stand-in instance.

The instance is a container with its own Docker engine (tests/stand_in/): only what
cannot exist here is replaced: systemd (a systemctl for docker), cloud-init (boot.sh runs the
user-data on the first boot only), the metadata service (tests/stand_in/imds.py, reached through
the script's overridable address) and the registry (Debian's docker-registry, no TLS). The
user-data is rendered by deployment.userdata exactly as the launch template gets it. The worker
it starts answers uploads through the compose stack's web container (compose.yaml's web,
LocalStack's place taken by moto as in test_compose_stack.py; no scaler, so this worker alone
answers). Stopping and starting the instance brings the worker back without user-data.

The web host's user-data (issue 25) boots on a second stand-in instance with resources of its own:
the scaler on the host network gets the instance role from the metadata service, the web
container on the instance's bridge cannot get a token (the stand-in answers the token PUT with
the launch template's hop limit as its IP TTL, so the instance's kernel drops it on forwarding,
as on EC2), signs as the web role the scaler hands over and renews it before expiry, and an
upload makes the scaler launch a worker (moto's EC2: nothing boots from it).
"""

from __future__ import annotations

import io
import json
import re
import shutil
import tarfile
import time
import uuid

import pytest

from deployment import template, userdata
from deployment.userdata import render
from runtime.settings import Settings
from tests.conftest import ROOT, free_port
from tests.container_support import (
    MOTO_IMAGE,
    WEB_IMAGE,
    WORKER_IMAGE,
    answers_200,
    built_images,
    compose_v2,
    engine,
    run,
    unavailable,
    wait_for,
)
from tests.http_client import photos, upload
from tests.stand_in.imds import MetadataService

# Pushing a 6 GB image and pulling it again takes minutes on a loaded machine.
pytestmark = [pytest.mark.containers, pytest.mark.timeout(3000)]

STAND_IN = ROOT / "tests" / "stand_in"
BASE_IMAGE = "elastic-classifier-base:bookworm"
INSTANCE_IMAGE = "elastic-classifier-stand-in-instance:test"
REGISTRY_IMAGE = "elastic-classifier-stand-in-registry:test"
NETWORK = "elastic-classifier"
INSTANCE_ID = "i-0standin0000001"
PUSHED = "elastic-classifier-worker:user-data"
# What the instance's dockerd needs: every capability this machine's engine can grant (it lacks
# CAP_SYS_RESOURCE, so --privileged fails with "unable to apply caps").
ENGINE_CAPABILITIES = (
    "CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP LINUX_IMMUTABLE "
    "NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER SYS_MODULE SYS_RAWIO "
    "SYS_CHROOT SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE SYS_TIME SYS_TTY_CONFIG MKNOD "
    "LEASE AUDIT_WRITE AUDIT_CONTROL SETFCAP MAC_ADMIN SYSLOG WAKE_ALARM BLOCK_SUSPEND AUDIT_READ"
).split()
# What credentials look like in text: access key ids, and the variables that would carry them.
CREDENTIALS = re.compile(r"\b(AKIA|ASIA)[A-Z0-9]{12,}|AWS_SECRET_ACCESS_KEY|AWS_SESSION_TOKEN")


def _build(client, dockerfile: str, tag: str, tmp_path, extra: list | None = None) -> None:
    context = tmp_path / tag.split(":")[0]
    shutil.copytree(STAND_IN, context, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    for path in extra or []:
        shutil.copy2(path, context)
    client.images.build(
        path=str(context),
        dockerfile=dockerfile,
        tag=tag,
        buildargs={"BASE_IMAGE": BASE_IMAGE},
        network_mode="host",
        rm=True,
    )


def _push(client, local: str, remote: str) -> None:
    client.images.get(local).tag(remote)
    for line in client.images.push(remote, stream=True, decode=True):
        assert "error" not in line, line
    client.images.remove(remote)  # so that nothing but a pull can bring it back


class World:
    """The stack's web, a registry, the metadata services and the stand-in instances."""

    def __init__(self, client, compose: list[str], tmp_path):
        self.client = client
        self.env = {
            "WEB_PORT": str(free_port()),
            "AWS_PORT": str(free_port()),
            "MOTO_IMAGE": MOTO_IMAGE,
        }
        self.command = [*compose, "-f", "compose.yaml", "-f", "compose.moto.yaml"]
        self.url = f"http://127.0.0.1:{self.env['WEB_PORT']}"
        self.aws_url = f"http://127.0.0.1:{self.env['AWS_PORT']}"
        self.tmp_path = tmp_path
        self.containers: list = []
        self.imds: MetadataService | None = None  # the worker instance's
        self.services: list[MetadataService] = []
        self.user_data = ""
        self.instance = None
        self.gateway = self.registry_address = self.moto_url = ""
        self.push_port = 0

    def compose(self, *args: str, timeout: float = 600) -> str:
        return run([*self.command, *args], env=self.env, timeout=timeout)

    def address(self, container) -> str:
        container.reload()
        return container.attrs["NetworkSettings"]["Networks"][NETWORK]["IPAddress"]

    def on_instance(self, *command: str, instance=None) -> tuple[int, str]:
        code, output = (instance or self.instance).exec_run(list(command))
        return code, output.decode(errors="replace")

    def container_status(self, name: str, instance=None) -> str:
        code, out = self.on_instance(
            "docker", "ps", "--all", "--filter", f"name={name}", "--format", "{{.Status}}",
            instance=instance,
        )  # fmt: skip
        return out.strip() if code == 0 else ""

    def worker_status(self) -> str:
        return self.container_status("classifier-worker")

    def metadata_service(self, hop_limit: int, instance_id: str, role: str) -> MetadataService:
        service = MetadataService(
            self.gateway, free_port(), instance_id, hop_limit=hop_limit, role=role
        ).start()
        self.services.append(service)
        return service

    def boot(self, name: str, user_data: str, imds_url: str, container_env: str):
        """A stand-in instance that runs `user_data` on its first boot; started."""
        instance = self.client.containers.create(
            INSTANCE_IMAGE,
            name=name,
            # Its own Docker engine, as a real instance has. Not --privileged: this machine's
            # engine lacks CAP_SYS_RESOURCE, so it grants every other capability by name.
            cap_add=ENGINE_CAPABILITIES,
            security_opt=["seccomp=unconfined", "apparmor=unconfined"],
            device_cgroup_rules=["a *:* rwm"],
            volumes={"/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "rw"}},
            tmpfs={"/run": ""},  # a boot starts with an empty /run, as a machine's does
            network=NETWORK,
            environment={
                "INSECURE_REGISTRY": self.registry_address,
                "CLASSIFIER_IMDS_URL": imds_url,
                "CLASSIFIER_EXTRA_CONTAINER_ENV": container_env,
            },
        )
        self.containers.append(instance)
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w") as tar:
            data = user_data.encode()
            info = tarfile.TarInfo("user-data")
            info.size, info.mode = len(data), 0o600
            tar.addfile(info, io.BytesIO(data))
        instance.put_archive("/var/lib/cloud", archive.getvalue())
        instance.start()
        return instance

    def close(self) -> None:
        for container in self.containers:
            try:
                container.remove(force=True, v=True)
            except Exception as error:  # noqa: BLE001 - clean up the rest regardless
                print(f"could not remove {container.name}: {error}")
        run([*self.command, "down", "--volumes", "--remove-orphans"], env=self.env, timeout=300)
        for service in self.services:
            service.stop()


def _launch_template_hop_limit(resource: str) -> int:
    """What the stack's template gives that kind of host: the stand-in enforces the same."""
    data = template.template()["Resources"][resource]["Properties"]["LaunchTemplateData"]
    return data["MetadataOptions"]["HttpPutResponseHopLimit"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """The stack's web and moto (compose), a registry, and where metadata services listen."""
    client = engine()
    compose = compose_v2()
    built_images(client, WEB_IMAGE, WORKER_IMAGE, MOTO_IMAGE, BASE_IMAGE)
    tmp_path = tmp_path_factory.mktemp("user-data")
    registry_binary = shutil.which("docker-registry")
    if registry_binary is None:
        unavailable("no docker-registry binary (apt-get install docker-registry)")
    _build(client, "instance.Dockerfile", INSTANCE_IMAGE, tmp_path)
    _build(client, "registry.Dockerfile", REGISTRY_IMAGE, tmp_path, [registry_binary])

    world = World(client, compose, tmp_path)
    world.compose("down", "--volumes", "--remove-orphans", timeout=300)
    try:
        # The stack without its scaler: web, provisioning and moto in LocalStack's place.
        world.compose("up", "--detach", "--no-build", "--pull", "never", "web", timeout=600)
        wait_for(lambda: answers_200(f"{world.url}/healthz"), "the web container", 300)
        network = client.networks.get(NETWORK)
        world.gateway = network.attrs["IPAM"]["Config"][0]["Gateway"]
        (moto,) = client.containers.list(
            filters={"label": ["com.docker.compose.service=localstack"]}
        )
        world.moto_url = f"http://{world.address(moto)}:4566"
        world.push_port = free_port()
        registry = client.containers.run(
            REGISTRY_IMAGE,
            detach=True,
            name="elastic-classifier-test-registry",
            network=NETWORK,
            ports={"5000/tcp": ("127.0.0.1", world.push_port)},
        )
        world.containers.append(registry)
        wait_for(lambda: answers_200(f"http://127.0.0.1:{world.push_port}/v2/"), "the registry", 60)
        world.registry_address = f"{world.address(registry)}:5000"
        yield world
    finally:
        world.close()


@pytest.fixture(scope="module")
def world(stack):
    """One worker instance booted from the launch template's user-data."""
    world = stack
    started = time.monotonic()
    _push(world.client, WORKER_IMAGE, f"127.0.0.1:{world.push_port}/{PUSHED}")
    print(f"pushed the worker image in {time.monotonic() - started:.0f} s")
    hop_limit = _launch_template_hop_limit("WorkerLaunchTemplate")
    world.imds = world.metadata_service(hop_limit, INSTANCE_ID, "classifier-worker")
    imds_url = f"http://{world.gateway}:{world.imds._server.server_port}"
    settings = Settings.from_env({"WORKER_IMAGE": f"{world.registry_address}/{PUSHED}"})
    # As deployment renders it for the launch template.
    world.user_data = render(settings, stop_timeout_s=settings.visibility_timeout_s + 10)
    try:
        started = time.monotonic()
        world.instance = world.boot(
            "elastic-classifier-test-instance",
            world.user_data,
            imds_url,
            # The worker's SDK: the local AWS, and this metadata service for credentials.
            f"AWS_ENDPOINT_URL={world.moto_url}\nAWS_EC2_METADATA_SERVICE_ENDPOINT={imds_url}/",
        )
        wait_for(lambda: world.worker_status().startswith("Up"), "the worker container", 1200, 5)
        print(f"instance booted its worker in {time.monotonic() - started:.0f} s")
    except BaseException:
        if world.instance is not None:
            print(world.on_instance("cat", "/var/log/cloud-init-output.log")[1][-4000:])
        raise
    return world


def _answers_a_photo(world) -> None:
    name, data, accepted = photos()[0]
    response = upload(world.url, data, name, timeout=600)
    assert response.status_code == 200, response.text
    assert response.text.split(":", 1)[1] in accepted, response.text


def test_the_rendered_user_data_carries_no_credentials(world):
    assert world.user_data.startswith("#!/bin/bash\n")
    assert not CREDENTIALS.search(world.user_data)
    assert "AWS_ACCESS_KEY_ID" not in world.user_data


def test_the_worker_was_pulled_from_the_registry_and_answers_through_the_stack(world):
    code, log = world.on_instance("cat", "/var/log/cloud-init-output.log")
    assert code == 0
    assert "Downloaded newer image for" in log and PUSHED in log, log[-3000:]
    assert f"worker container started for {INSTANCE_ID}" in log, log[-3000:]
    # The user-data asked the metadata service for a token and then the instance id with it.
    assert ("PUT", "/latest/api/token") in world.imds.requests
    assert ("GET", "/latest/meta-data/instance-id") in world.imds.requests
    _answers_a_photo(world)
    # Its credentials came from the instance profile (metadata), not from its environment.
    assert any("security-credentials" in path for _, path in world.imds.requests)
    code, env = world.on_instance(
        "docker", "inspect", "--format", "{{json .Config.Env}}", "classifier-worker"
    )
    assert code == 0 and f"INSTANCE_ID={INSTANCE_ID}" in env
    assert "REQUEST_QUEUE=classifier-requests" in env  # the settings it reads
    assert not CREDENTIALS.search(env) and "AWS_ACCESS_KEY_ID" not in env


def test_stop_and_start_bring_the_worker_back_without_user_data(world):
    world.instance.stop(timeout=180)
    world.instance.reload()
    assert world.instance.status == "exited"
    world.instance.start()
    wait_for(lambda: world.worker_status().startswith("Up"), "the worker after a restart", 600, 3)
    _answers_a_photo(world)
    code, log = world.on_instance("cat", "/var/log/cloud-init-output.log")
    assert log.count("worker container started for") == 1, log[-3000:]
    code, boots = world.on_instance("cat", "/var/log/boots.log")
    assert len(boots.splitlines()) == 2


# --- the web host: the scaler and the web tier, one instance role (issue 25) ---------------------

PUSHED_WEB = "elastic-classifier-web:user-data"
WEB_HOST_ID = "i-0standinwebhost1"
# The SDK's own metadata client, as each container's boto3 would use it were metadata its source
# (env={}: the web container's AWS_EC2_METADATA_DISABLED would otherwise stop it before asking).
FETCH_METADATA_CREDENTIALS = """
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


class WebHost:
    def __init__(self, instance, imds: MetadataService, imds_url: str, user_data: str, settings):
        self.instance, self.imds, self.imds_url = instance, imds, imds_url
        self.user_data, self.settings = user_data, settings
        self.url = ""


def _aws(world, service: str):
    import boto3

    return boto3.client(
        service,
        endpoint_url=world.aws_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture(scope="module")
def web_host(stack):
    """The web host's user-data, as its launch template has it, booted on a stand-in instance."""
    from embedded.provision import provision
    from scaler.fleet import ensure_local_launch_template

    world = stack
    started = time.monotonic()
    _push(world.client, WEB_IMAGE, f"127.0.0.1:{world.push_port}/{PUSHED_WEB}")
    print(f"pushed the web image in {time.monotonic() - started:.0f} s")
    name = f"wh{uuid.uuid4().hex[:8]}"
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
             "Principal": {"AWS": "arn:aws:iam::123456789012:role/scaler"}}]}  # fmt: skip
    role = _aws(world, "iam").create_role(
        RoleName=f"{name}-web", AssumeRolePolicyDocument=json.dumps(trust)
    )
    # Resources of its own, so that no worker of the stack answers and the scaler must launch.
    settings = userdata.on_hosts(
        Settings(
            input_bucket=f"{name}-in",
            output_bucket=f"{name}-out",
            request_queue=f"{name}-requests",
            reply_queue_prefix=f"{name}-reply-",
            fleet_name=f"{name}-fleet",
            launch_template=f"{name}-lt",
            fleet_max=1,
            web_role_arn=role["Role"]["Arn"],
            # 905 s sessions renewed every 2 s: the SDK's refresh (900 s before expiry) comes
            # after about 5 s instead of 45 minutes.
            web_credentials_duration_s=905,
            web_credentials_refresh_s=2,
        )
    )
    settings.validate()
    provision(settings, _aws(world, "s3"), _aws(world, "sqs"))
    ensure_local_launch_template(_aws(world, "ec2"), settings)
    imds = world.metadata_service(
        _launch_template_hop_limit("WebHostTemplate"), WEB_HOST_ID, "classifier-scaler"
    )
    imds_url = f"http://{world.gateway}:{imds._server.server_port}"
    user_data = userdata.render_web_host(
        settings, f"{world.registry_address}/{PUSHED_WEB}", template.SCALER_STOP_TIMEOUT_S
    )
    instance = None
    try:
        started = time.monotonic()
        instance = world.boot(
            "elastic-classifier-test-web-host",
            user_data,
            imds_url,
            f"AWS_ENDPOINT_URL={world.moto_url}\nAWS_EC2_METADATA_SERVICE_ENDPOINT={imds_url}/",
        )
        host = WebHost(instance, imds, imds_url, user_data, settings)
        wait_for(
            lambda: world.container_status("classifier-web", instance).startswith("Up"),
            "the web host's web container",
            900,
            5,
        )
        host.url = f"http://{world.address(instance)}:{settings.port}"
        wait_for(lambda: answers_200(f"{host.url}/healthz"), "the web host's web tier", 300, 2)
        print(f"the web host booted in {time.monotonic() - started:.0f} s")
    except BaseException:
        if instance is not None:
            print(
                world.on_instance("cat", "/var/log/cloud-init-output.log", instance=instance)[1][
                    -4000:
                ]
            )
            for container in ("classifier-scaler", "classifier-web"):
                print(
                    world.on_instance(
                        "docker", "logs", "--tail", "40", container, instance=instance
                    )[1]
                )
        raise
    return host


def _in(world, host: WebHost, container: str, *command: str) -> tuple[int, str]:
    return world.on_instance("docker", "exec", container, *command, instance=host.instance)


def test_the_web_host_runs_the_scaler_and_the_web_and_holds_no_secret(stack, web_host):
    world = stack
    assert not CREDENTIALS.search(web_host.user_data)
    assert "AWS_ACCESS_KEY_ID" not in web_host.user_data
    for container in ("classifier-scaler", "classifier-web"):
        assert world.container_status(container, web_host.instance).startswith("Up")
        code, env = world.on_instance(
            "docker", "inspect", "--format", "{{json .Config.Env}}", container,
            instance=web_host.instance,
        )  # fmt: skip
        assert code == 0 and f"INSTANCE_ID={WEB_HOST_ID}" in env
        assert not CREDENTIALS.search(env) and "AWS_ACCESS_KEY_ID" not in env, env
    code, network = world.on_instance(
        "docker", "inspect", "--format", "{{.HostConfig.NetworkMode}}", "classifier-web",
        instance=web_host.instance,
    )  # fmt: skip
    assert network.strip() in ("default", "bridge")


def test_the_web_container_gets_no_metadata_token_and_no_instance_role(stack, web_host):
    """The hop limit, enforced by the instance's kernel (tests/stand_in/imds.py): the host's
    network gets a token and the instance role; a bridged container gets neither."""
    world = stack
    url = web_host.imds_url
    code, token = world.on_instance(
        "curl", "-fsS", "-m", "10", "-X", "PUT", f"{url}/latest/api/token",
        "-H", "X-aws-ec2-metadata-token-ttl-seconds: 60", instance=web_host.instance,
    )  # fmt: skip
    assert code == 0 and token.strip() in web_host.imds.tokens
    code, out = _in(world, web_host, "classifier-scaler", "python", "-c", PUT_TOKEN, url)
    assert code == 0 and out.strip() in web_host.imds.tokens, out

    code, out = _in(world, web_host, "classifier-web", "python", "-c", PUT_TOKEN, url)
    assert code != 0 and "timed out" in out, out
    code, out = _in(
        world, web_host, "classifier-web", "python", "-c", FETCH_METADATA_CREDENTIALS, url
    )
    assert code == 0 and json.loads(out.strip().splitlines()[-1]) == {}, out
    # Without a token (IMDSv1) the service refuses, as HttpTokens=required makes EC2 do.
    code, out = _in(
        world, web_host, "classifier-web", "python", "-c",
        "import sys, urllib.request; urllib.request.urlopen(sys.argv[1])",
        f"{url}/latest/meta-data/iam/security-credentials/",
    )  # fmt: skip
    assert code != 0 and "401" in out, out
    # The scaler, on the host's network, has the instance role from the same service.
    code, out = _in(
        world, web_host, "classifier-scaler", "python", "-c", FETCH_METADATA_CREDENTIALS, url
    )
    assert code == 0 and json.loads(out.strip().splitlines()[-1])["access_key"], out


def test_the_web_container_signs_as_the_web_role_and_renews_before_expiry(stack, web_host):
    from tests.test_web_credentials import WEB_SDK

    world = stack
    code, out = _in(world, web_host, "classifier-web", "python", "-c", WEB_SDK)
    assert code == 0, out
    first, renewed = (json.loads(line) for line in out.strip().splitlines()[-2:])
    role = web_host.settings.web_role_arn.rsplit("/", 1)[1]
    for seen in (first, renewed):
        assert seen["arn"].endswith(f":assumed-role/{role}/classifier-web"), seen
    assert renewed["key"] != first["key"]
    # The web tier's own long-lived clients renewed too: it still reaches its buckets.
    assert answers_200(f"{web_host.url}/healthz")


def test_the_scaler_on_the_web_host_launches_a_worker_for_an_upload(stack, web_host):
    import requests

    from runtime.resources import FLEET_TAG

    world = stack
    name, data, _ = photos()[0]
    response = requests.post(
        f"{web_host.url}/upload",
        files={"myfile": (name, data, "application/octet-stream")},
        headers={"Prefer": "respond-async"},
        timeout=60,
    )
    assert response.status_code == 202, response.text
    ec2 = _aws(world, "ec2")

    def fleet() -> list[str]:
        reservations = ec2.describe_instances(
            Filters=[{"Name": f"tag:{FLEET_TAG}", "Values": [web_host.settings.fleet_name]}]
        )["Reservations"]
        return [i["InstanceId"] for r in reservations for i in r["Instances"]]

    assert wait_for(fleet, "the scaler's launch", 180, 2)
    # The web tier reads the scaler's status over the bridge, on the host.
    status = requests.get(f"{web_host.url}/status", timeout=30).json()
    assert status["scaler"] == "ok", status
