"""compose.yaml: valid against the Compose specification, and wired the way the issue asks.

`docker compose up` itself runs in tests/test_compose_stack.py (a container test).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT
from tests.container_support import compose_v2

pytestmark = pytest.mark.e2e  # starts processes (or reads built images)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def test_valid_against_the_compose_spec_schema():
    tool = shutil.which("check-jsonschema") or str(Path(sys.executable).parent / "check-jsonschema")
    if not Path(tool).exists():
        pytest.skip("check-jsonschema is not installed (pip install check-jsonschema)")
    done = subprocess.run(
        [tool, "--builtin-schema", "vendor.compose-spec", "compose.yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_localstack_serves_the_services_with_queue_urls_containers_can_reach(compose):
    env = compose["services"]["localstack"]["environment"]
    assert set(env["SERVICES"].split(",")) >= {"s3", "sqs", "ec2", "iam", "cloudwatch"}
    assert env["SQS_ENDPOINT_STRATEGY"] == "path"
    assert env["LOCALSTACK_HOST"].split(":")[0] == "localstack"  # the service's own name


def test_every_tier_talks_to_localstack_through_the_standard_variable(compose):
    for service in ("provision", "web", "scaler"):
        env = compose["services"][service]["environment"]
        assert env["AWS_ENDPOINT_URL"] == "http://localstack:4566"
        assert env["AWS_REGION"]


def test_provisioning_runs_once_before_web_and_scaler(compose):
    services = compose["services"]
    assert services["provision"]["command"] == ["python", "-m", "embedded", "provision"]
    assert services["provision"]["depends_on"]["localstack"]["condition"] == "service_healthy"
    for tier in ("web", "scaler"):
        condition = services[tier]["depends_on"]["provision"]["condition"]
        assert condition == "service_completed_successfully"


def test_web_listens_on_3000_for_the_host(compose):
    web = compose["services"]["web"]
    assert web["command"] == ["python", "-m", "web"]
    assert web["ports"] == ["${BIND_ADDRESS:-127.0.0.1}:${WEB_PORT:-3000}:3000"]
    assert web["environment"]["HOST"] == "0.0.0.0"
    assert web["environment"]["SCALER_STATUS_URL"].startswith("http://scaler:")


def test_scaler_runs_workers_as_containers_on_the_compose_network(compose):
    services = compose["services"]
    scaler = services["scaler"]
    env = scaler["environment"]
    assert scaler["command"] == ["python", "-m", "scaler"]
    assert env["RUNNER"] == "docker"
    assert env["SCALER_STATUS_HOST"] == "0.0.0.0"  # web reaches it across the network
    assert "/var/run/docker.sock:/var/run/docker.sock" in scaler["volumes"]
    # The workers it starts must resolve "localstack": they join the project's named network.
    assert env["DOCKER_NETWORK"] == compose["networks"]["default"]["name"]
    # The image it runs is the one compose builds from Dockerfile.worker, built before it starts.
    assert env["WORKER_IMAGE"] == services["worker-image"]["image"]
    assert services["worker-image"]["build"]["dockerfile"] == "Dockerfile.worker"
    condition = scaler["depends_on"]["worker-image"]["condition"]
    assert condition == "service_completed_successfully"


def test_the_web_wakes_the_scaler_with_a_token_on_a_tmpfs_only_they_share(compose):
    """runtime/wake.py: the token lives in the scaler's IPC tmpfs (/dev/shm), which the web joins
    and nothing else does; no volume holds it, and the wake port is not published."""
    web, scaler = compose["services"]["web"], compose["services"]["scaler"]
    token_file = scaler["environment"]["SCALER_WAKE_TOKEN_FILE"]
    assert token_file.startswith("/dev/shm/")
    assert web["environment"]["SCALER_WAKE_TOKEN_FILE"] == token_file
    assert (scaler["ipc"], web["ipc"]) == ("shareable", "service:scaler")
    joined = [s for s, spec in compose["services"].items() if str(spec.get("ipc", "")) != ""]
    assert sorted(joined) == ["scaler", "web"]
    web_user = next(
        line.split()[1]
        for line in (ROOT / "Dockerfile.web").read_text().splitlines()
        if line.startswith("USER ")
    )
    assert scaler["environment"]["SCALER_WAKE_TOKEN_OWNER"] == web_user
    assert "ports" not in scaler
    assert not any(
        "shm" in str(v) for spec in compose["services"].values() for v in spec.get("volumes", [])
    )


def test_web_scaler_and_provision_share_the_web_image(compose):
    services = compose["services"]
    assert services["provision"]["build"]["dockerfile"] == "Dockerfile.web"
    images = {services[s]["image"] for s in ("provision", "web", "scaler")}
    assert images == {"elastic-classifier-web:latest"}


def _config(env: dict[str, str]) -> dict:
    """What `docker compose` itself makes of the file under `env` (the variables it reads
    unset otherwise): its services."""
    command = [*compose_v2(), "-f", "compose.yaml", "config", "--format", "json"]
    read = ("WEB_PORT", "AWS_PORT", "BIND_ADDRESS", "MODELS")
    clean = {k: v for k, v in os.environ.items() if k not in read}
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env={**clean, **env})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["services"]


@pytest.mark.parametrize(
    ("env", "host_ip", "web", "aws"),
    [
        ({}, "127.0.0.1", "3000", "4566"),
        ({"WEB_PORT": "18080", "AWS_PORT": "14566"}, "127.0.0.1", "18080", "14566"),
        ({"BIND_ADDRESS": "0.0.0.0"}, "0.0.0.0", "3000", "4566"),
    ],
)
def test_ports_are_on_loopback_by_default_and_configurable(env, host_ip, web, aws):
    """No port on every interface by default."""
    services = _config(env)
    for service, published in (("web", web), ("localstack", aws)):
        (port,) = services[service]["ports"]
        assert (port["host_ip"], port["published"]) == (host_ip, published)


@pytest.mark.parametrize("models", ["catdog=s3://classifier-input/models/catdog/1/", ""])
def test_models_reach_the_web_and_through_the_scaler_every_worker(models):
    """MODELS (docs/models.md): the web checks upload names against it, and the scaler hands it
    on to each worker container it starts; unset, it is empty and no worker gets it."""
    from scaler.runners.docker import worker_environment

    services = _config({"MODELS": models} if models else {})
    assert services["web"]["environment"]["MODELS"] == models
    assert worker_environment(services["scaler"]["environment"]).get("MODELS", "") == models
