"""The Docker runner against a real engine, with a stand-in worker image (see docker_support)."""

from __future__ import annotations

import time
import uuid

import pytest

from runtime.settings import Settings
from scaler.runners.base import InstanceView
from scaler.runners.docker import (
    DRAINING_SUFFIX,
    LABEL_FLEET,
    LABEL_INSTANCE,
    DockerRunner,
    docker_runner,
    worker_environment,
)
from tests.container_support import engine
from tests.docker_support import stand_in_image
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e  # starts processes (or containers)


@pytest.fixture(scope="module")
def client():
    client = engine()
    yield client
    client.close()


@pytest.fixture(scope="module")
def image(client):
    return stand_in_image(client)


@pytest.fixture
def fleet(client):
    """A fleet name of this test's own; every container it leaves is removed afterwards."""
    name = f"test-{uuid.uuid4().hex[:8]}"
    yield name
    for container in client.containers.list(all=True, filters={"label": f"{LABEL_FLEET}={name}"}):
        container.remove(force=True)


@pytest.fixture
def network(client):
    net = client.networks.create(f"classifier-test-{uuid.uuid4().hex[:8]}")
    yield net.name
    net.remove()


@pytest.fixture
def make_runner(client, image, fleet, network):
    runners = []

    def make(**kwargs):
        options = {
            "fleet": fleet,
            "network": network,
            "stop_timeout_s": 20,
            "name_prefix": f"{fleet}-",
        }
        runner = DockerRunner(client, image, {"AWS_ENDPOINT_URL": "http://aws:4566"}, **options)
        runners.append(runner)
        return runner

    yield make
    for runner in runners:
        runner.close()


def ours(client, fleet) -> dict[str, object]:
    """Live (not draining) containers of the fleet by instance id."""
    containers = client.containers.list(all=True, filters={"label": f"{LABEL_FLEET}={fleet}"})
    return {
        c.labels[LABEL_INSTANCE]: c
        for c in containers
        if c.status == "running" and not c.name.endswith(DRAINING_SUFFIX)
    }


def gone(client, container_id: str) -> bool:
    return not client.containers.list(all=True, filters={"id": container_id})


def running(*ids: str) -> list[InstanceView]:
    return [InstanceView(instance_id=i, state="running") for i in ids]


def test_one_container_per_running_instance_with_labels_env_and_network(
    client, make_runner, fleet, network
):
    runner = make_runner()
    runner.reconcile([*running("i-1", "i-2"), InstanceView("i-3", "pending")])

    live = ours(client, fleet)
    assert sorted(live) == ["i-1", "i-2"]
    attrs = live["i-1"].attrs
    env = dict(item.split("=", 1) for item in attrs["Config"]["Env"])
    assert env["INSTANCE_ID"] == "i-1"
    assert env["AWS_ENDPOINT_URL"] == "http://aws:4566"
    assert attrs["Config"]["Labels"][LABEL_FLEET] == fleet
    assert network in attrs["NetworkSettings"]["Networks"]
    assert attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"


def test_reconcile_is_idempotent_and_survives_a_scaler_restart(client, make_runner, fleet):
    make_runner().reconcile(running("i-1", "i-2"))
    first = {i: c.id for i, c in ours(client, fleet).items()}

    make_runner().reconcile(running("i-1", "i-2"))  # a new runner: the scaler restarted
    make_runner().reconcile(running("i-1", "i-2"))

    assert {i: c.id for i, c in ours(client, fleet).items()} == first
    assert len(client.containers.list(all=True, filters={"label": f"{LABEL_FLEET}={fleet}"})) == 2


def test_a_stopped_instance_is_drained_with_sigterm_and_removed(client, make_runner, fleet):
    runner = make_runner()
    runner.reconcile(running("i-1", "i-2"))
    before = ours(client, fleet)
    since = int(time.time()) - 1

    runner.reconcile([InstanceView("i-1", "stopped"), *running("i-2")])
    wait_until(lambda: gone(client, before["i-1"].id), "the drained container's removal")

    # The stand-in exits 0 only from its TERM trap: a SIGKILL would read 137.
    events = client.events(
        since=since,
        until=int(time.time()) + 1,
        filters={"event": "die", "container": before["i-1"].id},
        decode=True,
    )
    exit_codes = [event["Actor"]["Attributes"]["exitCode"] for event in events]
    assert exit_codes == ["0"]
    assert {i: c.id for i, c in ours(client, fleet).items()} == {"i-2": before["i-2"].id}


def test_a_restarted_instance_gets_a_fresh_worker(client, make_runner, fleet):
    runner = make_runner()
    runner.reconcile(running("i-1"))
    old = ours(client, fleet)["i-1"].id
    runner.reconcile([InstanceView("i-1", "stopped")])
    runner.reconcile([InstanceView("i-1", "running", restarted=True)])

    new = ours(client, fleet)["i-1"].id
    assert new != old
    wait_until(lambda: gone(client, old), "the old container's removal")


def test_terminated_and_unknown_instances_lose_their_workers(client, make_runner, fleet):
    runner = make_runner()
    runner.reconcile(running("i-1", "i-2"))
    ids = [c.id for c in ours(client, fleet).values()]

    runner.reconcile([InstanceView("i-1", "terminated")])  # i-2 is no longer listed at all
    for container_id in ids:
        wait_until(lambda cid=container_id: gone(client, cid), "removal")
    assert ours(client, fleet) == {}


def test_containers_without_our_labels_are_never_touched(client, image, make_runner, fleet):
    stranger = client.containers.run(image, detach=True, name=f"{fleet}-i-1")
    other_fleet = client.containers.run(
        image,
        detach=True,
        labels={LABEL_FLEET: f"{fleet}-other", LABEL_INSTANCE: "i-9"},
    )
    try:
        runner = make_runner()
        runner.reconcile(running("i-2"))
        runner.reconcile([])
        runner.close()
        stranger.reload()
        other_fleet.reload()
        assert stranger.status == "running"
        assert other_fleet.status == "running"
    finally:
        stranger.remove(force=True)
        other_fleet.remove(force=True)


def test_close_drains_every_worker_of_the_fleet(client, make_runner, fleet):
    runner = make_runner()
    runner.reconcile(running("i-1", "i-2", "i-3"))
    runner.close()
    assert client.containers.list(all=True, filters={"label": f"{LABEL_FLEET}={fleet}"}) == []


def test_boot_delay_holds_back_a_new_instance(client, image, fleet):
    now = [1000.0]
    runner = DockerRunner(
        client, image, {}, fleet=fleet, boot_delay_new_s=5.0, clock=lambda: now[0]
    )
    try:
        runner.reconcile([InstanceView("i-1", "running", launched_at=999.0)])
        assert ours(client, fleet) == {}
        now[0] = 1004.5
        runner.reconcile([InstanceView("i-1", "running", launched_at=999.0)])
        assert sorted(ours(client, fleet)) == ["i-1"]
    finally:
        runner.close()


def test_the_scalers_factory_wires_settings_and_environment(client, image, fleet, network):
    settings = Settings(worker_image=image, fleet_name=fleet, runner="docker")
    environ = {"DOCKER_NETWORK": network, "AWS_ENDPOINT_URL": "http://aws:4566", "PATH": "/x"}
    runner = docker_runner(settings, environ)
    try:
        runner.reconcile(running("i-7"))
        attrs = ours(client, fleet)["i-7"].attrs
        env = dict(item.split("=", 1) for item in attrs["Config"]["Env"])
        assert network in attrs["NetworkSettings"]["Networks"]
        assert env["AWS_ENDPOINT_URL"] == "http://aws:4566"
        assert env.get("PATH") != "/x"  # only AWS variables and worker settings pass
    finally:
        runner.close()


def test_worker_environment_passes_aws_and_worker_settings_only():
    env = worker_environment(
        {
            "AWS_ENDPOINT_URL": "http://localstack:4566",
            "AWS_ACCESS_KEY_ID": "test",
            "INPUT_BUCKET": "in",
            "MODEL": "resnet18",
            "FLEET_NAME": "f",
            "RUNNER": "docker",
            "PORT": "3000",
            "HOME": "/root",
            "AWS_REGION": "",
        }
    )
    assert env == {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_ENDPOINT_URL": "http://localstack:4566",
        "FLEET_NAME": "f",
        "INPUT_BUCKET": "in",
        "MODEL": "resnet18",
    }
