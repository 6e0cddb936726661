"""The workers' user-data, for real: it boots a worker from a registry on a stand-in instance.

The instance is a container with its own Docker engine (tests/stand_in/): only what
cannot exist here is replaced: systemd (a systemctl for docker), cloud-init (boot.sh runs the
user-data on the first boot only), the metadata service (tests/stand_in/imds.py, reached through
the script's overridable address) and the registry (Debian's docker-registry, no TLS). The
user-data is rendered by deployment.userdata exactly as the launch template gets it. The worker
it starts answers uploads through the compose stack's web container (compose.yaml's web,
LocalStack's place taken by moto as in test_compose_stack.py; no scaler, so this worker alone
answers). Stopping and starting the instance brings the worker back without user-data.
"""

from __future__ import annotations

import time

import pytest

from deployment.userdata import render
from runtime.settings import Settings
from tests.conftest import free_port
from tests.container_support import (
    MOTO_IMAGE,
    WEB_IMAGE,
    WORKER_IMAGE,
    answers_200,
    built_images,
    compose_v2,
    engine,
    run,
    wait_for,
)
from tests.http_client import photos, upload
from tests.stand_in import instances
from tests.stand_in.imds import MetadataService
from tests.stand_in.instances import BASE_IMAGE, CREDENTIALS, push

# Pushing a 6 GB image and pulling it again takes minutes on a loaded machine.
pytestmark = [pytest.mark.containers, pytest.mark.timeout(3000)]

NETWORK = "elastic-classifier"
INSTANCE_ID = "i-0standin0000001"
PUSHED = "elastic-classifier-worker:user-data"


class World:
    """The stack's web, a registry, the metadata service and one stand-in instance."""

    def __init__(self, client, compose: list[str], tmp_path):
        self.client = client
        self.env = {
            "WEB_PORT": str(free_port()),
            "AWS_PORT": str(free_port()),
            "MOTO_IMAGE": MOTO_IMAGE,
        }
        self.command = [*compose, "-f", "compose.yaml", "-f", "compose.moto.yaml"]
        self.url = f"http://127.0.0.1:{self.env['WEB_PORT']}"
        self.tmp_path = tmp_path
        self.containers: list = []
        self.imds: MetadataService | None = None
        self.user_data = ""
        self.instance = None

    def compose(self, *args: str, timeout: float = 600) -> str:
        return run([*self.command, *args], env=self.env, timeout=timeout)

    def address(self, container) -> str:
        return instances.address(container, NETWORK)

    def on_instance(self, *command: str) -> tuple[int, str]:
        return instances.on(self.instance, *command)

    def worker_status(self) -> str:
        return instances.container_status(self.instance, "classifier-worker")

    def close(self) -> None:
        for container in self.containers:
            try:
                container.remove(force=True, v=True)
            except Exception as error:  # noqa: BLE001 - clean up the rest regardless
                print(f"could not remove {container.name}: {error}")
        run([*self.command, "down", "--volumes", "--remove-orphans"], env=self.env, timeout=300)
        if self.imds is not None:
            self.imds.stop()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    client = engine()
    compose = compose_v2()
    built_images(client, WEB_IMAGE, WORKER_IMAGE, MOTO_IMAGE, BASE_IMAGE)
    tmp_path = tmp_path_factory.mktemp("user-data")
    instances.build_stand_ins(client, tmp_path)

    world = World(client, compose, tmp_path)
    world.compose("down", "--volumes", "--remove-orphans", timeout=300)
    try:
        # The stack without its scaler: web, provisioning and moto in LocalStack's place.
        world.compose("up", "--detach", "--no-build", "--pull", "never", "web", timeout=600)
        wait_for(lambda: answers_200(f"{world.url}/healthz"), "the web container", 300)
        network = client.networks.get(NETWORK)
        gateway = network.attrs["IPAM"]["Config"][0]["Gateway"]
        (moto,) = client.containers.list(
            filters={"label": ["com.docker.compose.service=localstack"]}
        )
        push_port = free_port()
        registry = client.containers.run(
            instances.REGISTRY_IMAGE,
            detach=True,
            name="elastic-classifier-test-registry",
            network=NETWORK,
            ports={"5000/tcp": ("127.0.0.1", push_port)},
        )
        world.containers.append(registry)
        wait_for(lambda: answers_200(f"http://127.0.0.1:{push_port}/v2/"), "the registry", 60)
        registry_address = f"{world.address(registry)}:5000"
        started = time.monotonic()
        push(client, WORKER_IMAGE, f"127.0.0.1:{push_port}/{PUSHED}")
        print(f"pushed the worker image in {time.monotonic() - started:.0f} s")

        imds_port = free_port()
        # The launch template's hop limit (2: the worker's container is one bridge away).
        hop_limit = instances.hop_limit("WorkerLaunchTemplate")
        world.imds = MetadataService(gateway, imds_port, INSTANCE_ID, hop_limit).start()
        imds_url = f"http://{gateway}:{imds_port}"

        settings = Settings.from_env({"WORKER_IMAGE": f"{registry_address}/{PUSHED}"})
        # As deployment renders it for the launch template.
        world.user_data = render(settings, stop_timeout_s=settings.visibility_timeout_s + 10)
        world.instance = instances.boot(
            client,
            "elastic-classifier-test-instance",
            NETWORK,
            registry_address,
            world.user_data,
            imds_url,
            # The worker's SDK: the local AWS, and this metadata service for credentials.
            f"AWS_ENDPOINT_URL=http://{world.address(moto)}:4566\n"
            f"AWS_EC2_METADATA_SERVICE_ENDPOINT={imds_url}/",
        )
        world.containers.append(world.instance)
        wait_for(lambda: world.worker_status().startswith("Up"), "the worker container", 1200, 5)
        print(f"instance booted its worker in {time.monotonic() - started:.0f} s")
        yield world
    except BaseException:
        if world.instance is not None:
            print(world.on_instance("cat", "/var/log/cloud-init-output.log")[1][-4000:])
        raise
    finally:
        world.close()


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
