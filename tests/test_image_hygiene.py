"""What the built images carry, read from the images `make images` built (not from the files).

Neither carries tests, caches, .git or build tools; both run as non-root; no credential is in
their environment or their code; the worker's model loads with no network at all (its weights
are in the image).
"""

from __future__ import annotations

import re

import pytest

from tests.conftest import IMAGES as PHOTOS
from tests.conftest import photo_labels
from tests.container_support import WEB_IMAGE, WORKER_IMAGE, built_images, engine

pytestmark = pytest.mark.containers

IMAGES = (WEB_IMAGE, WORKER_IMAGE)
CREDENTIALS = re.compile(r"\b(AKIA|ASIA)[A-Z0-9]{12,}|AWS_SECRET_ACCESS_KEY|AWS_SESSION_TOKEN")
# Run inside each image: prints every path that should not be there, one a line.
_FIND_LEFTOVERS = r"""
import os, shutil, sys
bad = []
for top in ("/app", "/tmp", "/root", "/usr/local/bin"):
    for root, dirs, files in os.walk(top):
        for name in dirs + files:
            if name in (".git", "tests", "__pycache__", ".pytest_cache", ".cache", "build") \
                    or name.endswith(".pyc") and root.startswith("/app"):
                bad.append(os.path.join(root, name))
for tool in ("gcc", "cc", "make", "git", "g++"):
    if shutil.which(tool):
        bad.append(shutil.which(tool))
print("\n".join(bad))
"""


@pytest.fixture(scope="module")
def client():
    client = engine()
    built_images(client, *IMAGES)
    return client


def _run(client, image: str, command: list[str], **options) -> str:
    output = client.containers.run(image, command, remove=True, **options)
    return output.decode(errors="replace")


@pytest.mark.parametrize("image", IMAGES)
def test_runs_as_a_non_root_user(client, image):
    config = client.images.get(image).attrs["Config"]
    assert config["User"] and config["User"].split(":")[0] not in ("0", "root")
    assert _run(client, image, ["python", "-c", "import os; print(os.getuid())"]).strip() != "0"


@pytest.mark.parametrize("image", IMAGES)
def test_no_tests_caches_git_or_build_tools(client, image):
    leftovers = _run(client, image, ["python", "-c", _FIND_LEFTOVERS]).split()
    assert leftovers == []


@pytest.mark.parametrize("image", IMAGES)
def test_no_credentials_in_the_environment_or_the_code(client, image):
    env = "\n".join(client.images.get(image).attrs["Config"]["Env"])
    assert not CREDENTIALS.search(env) and "AWS_ACCESS_KEY_ID" not in env
    code = _run(
        client,
        image,
        ["python", "-c", "import pathlib; print(*(p.read_text() for p in "
         "pathlib.Path('/app').rglob('*.py')))"],
    )  # fmt: skip
    assert code.count("def ") > 20  # the code was read
    assert not re.search(r"\b(AKIA|ASIA)[A-Z0-9]{16}\b", code)


def test_the_worker_model_loads_and_classifies_with_no_network(client):
    """No network at all in the container: the exported package must be in the image, and it
    serves without PyTorch, which the image does not hold."""
    script = (
        "import sys; from pathlib import Path; "
        "from worker.imaging import decode; from worker.models import load_classifier; "
        "c = load_classifier('efficientnet_lite0', optimize='jit', runtime='auto', "
        "cache_dir='/opt/models'); "
        "t = c.prepare(decode(Path('/photos/chelsea.jpg').read_bytes(), output=c.pixels)); "
        "print('torch' in sys.modules, c.runtime); "
        "print(c.classify([t])[0][0][0])"
    )
    output = _run(
        client,
        WORKER_IMAGE,
        ["python", "-c", script],
        network_mode="none",
        volumes={str(PHOTOS): {"bind": "/photos", "mode": "ro"}},
    )
    *_, loaded, label = output.strip().splitlines()
    assert label in photo_labels()["chelsea.jpg"], output
    assert loaded.split()[0] == "False" and loaded.split()[1] in ("openvino", "onnxruntime")


def test_the_worker_image_holds_no_pytorch(client):
    found = _run(
        client,
        WORKER_IMAGE,
        ["python", "-c", "import importlib.util as u; "
         "print([m for m in ('torch', 'torchvision', 'timm') if u.find_spec(m)])"],
    )  # fmt: skip
    assert found.strip() == "[]"
