"""Shared fixtures: a real moto server over HTTP, and the embedded stack's real processes; moto
in this process for unit tests of one module's logic."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from embedded.provision import provision
from embedded.stack import Stack, aws_env, default_env, python_module, wait_http
from runtime.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "images"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def photo_labels() -> dict[str, list[str]]:
    return json.loads((IMAGES / "labels.json").read_text())


@pytest.fixture(scope="session")
def exported_model():
    """The default model's package in MODEL_CACHE_DIR, as `make up` and the worker image make it
    before any worker starts: workers started at once must not each export it (10 s of CPU)."""
    from worker.exported import ensure_package
    from worker.models import DEFAULT_MODEL

    return ensure_package(DEFAULT_MODEL, Path(Settings.from_env().model_cache_dir))


@pytest.fixture(scope="session")
def folded_networks(tmp_path_factory) -> dict[str, Path]:
    """The default network folded into cat / dog / other (tests/support/folded.py), saved as
    TorchScript (pt), a torch.export program (pt2) and ONNX, with its labels file."""
    from tests.support import folded

    root = tmp_path_factory.mktemp("folded")
    model = folded.folded_default()
    return {
        "pt": folded.save_torchscript(model, root / "catdog.pt"),
        "pt2": folded.save_program(model, root / "catdog.pt2"),
        "onnx": folded.save_onnx(model, root / "catdog.onnx"),
        "labels": folded.write_labels(root / "labels.txt"),
    }


@pytest.fixture(scope="session")
def catdog_package(folded_networks, tmp_path_factory) -> Path:
    """catdog version 1, packaged by `python -m worker.models package` from the TorchScript file
    (tests that publish other versions write them beside it)."""
    from tests.support import folded

    out = tmp_path_factory.mktemp("models") / "catdog-1"
    return folded.package(folded_networks["pt"], folded_networks["labels"], out, "1")


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory, exported_model):
    """One moto server process for the session; tests isolate by resource names."""
    port = free_port()
    stack = Stack(env=default_env(), log_dir=tmp_path_factory.mktemp("moto"))
    stack.start_moto("127.0.0.1", port)
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in aws_env(endpoint)}
    os.environ.update(aws_env(endpoint))
    yield endpoint
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    stack.stop()


@pytest.fixture
def aws_client(moto_endpoint):
    def make(service: str):
        return boto3.client(service, endpoint_url=moto_endpoint, region_name="us-east-1")

    return make


@pytest.fixture(scope="module")
def in_process_aws():
    """moto inside the test process (mock_aws): the same AWS behaviour without a server or HTTP,
    for tests of one module's logic. End-to-end tests keep `aws_client` and real processes.
    One per test module, as the server is one per session: tests isolate by resource names."""
    with pytest.MonkeyPatch.context() as patch, mock_aws():
        # An endpoint set by the session's moto server would send the calls past the mock.
        patch.delenv("AWS_ENDPOINT_URL", raising=False)

        def make(service: str):
            return boto3.client(service, region_name="us-east-1")

        yield make


class Service:
    """A provisioned set of resources plus web and worker processes, all real."""

    def __init__(self, endpoint: str, log_dir: Path, name: str, **overrides: str):
        self.name = name
        self.env = {
            **default_env(),
            **aws_env(endpoint),
            "INPUT_BUCKET": f"{name}-in",
            "OUTPUT_BUCKET": f"{name}-out",
            "REQUEST_QUEUE": f"{name}-requests",
            "REPLY_QUEUE_PREFIX": f"{name}-reply-",
            "RECEIVE_WAIT_S": "2",
            **overrides,
        }
        self.settings = Settings.from_env(self.env)
        self.stack = Stack(env=self.env, log_dir=log_dir)
        self.webs: list[str] = []
        self.workers = []

    def provision(self) -> dict:
        kwargs = {"endpoint_url": self.env["AWS_ENDPOINT_URL"], "region_name": "us-east-1"}
        return provision(self.settings, boto3.client("s3", **kwargs), boto3.client("sqs", **kwargs))

    def start_web(self, **overrides: str) -> str:
        port = free_port()
        process = self.stack.start(
            f"web-{len(self.webs)}", python_module("web"), {"PORT": str(port), **overrides}
        )
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/healthz", 60, process)
        self.webs.append(url)
        return url

    def start_worker(self, **overrides: str):
        index = len(self.workers)
        process = self.stack.start(
            f"worker-{index}",
            python_module("worker"),
            {"INSTANCE_ID": f"test-{index}", **overrides},
        )
        self.workers.append(process)
        return process

    def process(self, name: str):
        """The running process called `name` (web-0, worker-1, ...)."""
        return dict(self.stack.processes)[name]

    def log(self, name: str) -> str:
        return (self.stack.log_dir / f"{name}.log").read_text(errors="replace")

    def stop(self) -> None:
        self.stack.stop()


@pytest.fixture
def service_factory(moto_endpoint, tmp_path, request):
    services = []

    def make(**overrides: str) -> Service:
        name = f"t{len(services)}{abs(hash(request.node.nodeid)) % 10**8}"
        service = Service(moto_endpoint, tmp_path / name, name, **overrides)
        service.provision()
        services.append(service)
        return service

    yield make
    for service in services:
        service.stop()


@pytest.fixture(scope="module")
def running_service(moto_endpoint, tmp_path_factory, request):
    """One web and one worker shared by a module's tests."""
    name = f"m{abs(hash(request.module.__name__)) % 10**8}"
    service = Service(moto_endpoint, tmp_path_factory.mktemp(name), name)
    service.provision()
    service.start_worker()
    service.start_web()
    yield service
    service.stop()


def pytest_report_header(config):
    return f"python {sys.version.split()[0]}"


# The suite's map: a test is `e2e` when it needs moto (a server or in-process), real processes,
# containers or a browser: through one of these fixtures, or because its module says so
# (`pytestmark = pytest.mark.e2e`). Every other test is `unit`: `pytest -m unit` runs in seconds.
E2E_FIXTURES = frozenset(
    {"moto_endpoint", "aws_client", "in_process_aws", "service_factory", "running_service"}
)


def pytest_collection_modifyitems(config, items):
    for item in items:
        marks = {mark.name for mark in item.iter_markers()}
        if marks & {"e2e", "containers"} or E2E_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.e2e)
        else:
            item.add_marker(pytest.mark.unit)


@pytest.fixture(autouse=True)
def _unit_tests_start_no_process(request, monkeypatch):
    """A unit test that starts a process is an e2e test in disguise: it fails, saying so."""
    if request.node.get_closest_marker("unit") is None:
        return

    def refuse(*args, **kwargs):
        raise AssertionError("a unit test started a process: mark its module e2e")

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
