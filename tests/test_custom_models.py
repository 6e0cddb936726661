"""Several models at once on the embedded stack's real processes (issue 22 items 3 and 5): a
custom model packaged by `python -m worker.models package` from a TorchScript file made here
(the default network folded into cat / dog / other, tests/support/folded.py) is served beside
the built-in one and asked for by name, in one run."""

from __future__ import annotations

import os
import subprocess
import sys

import boto3
import pytest
import requests

from runtime.keys import CACHE
from tests.conftest import IMAGES, ROOT, photo_labels
from tests.http_client import upload
from tests.job_client import results, wait_done, zip_of
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def catdog_package(folded_networks, tmp_path_factory):
    out = tmp_path_factory.mktemp("models") / "catdog-1"
    done = subprocess.run(
        [sys.executable, "-m", "worker.models", "package", f"--network={folded_networks['pt']}"]
        + [f"--labels={folded_networks['labels']}", "--name=catdog", "--version=1"]
        + [f"--out={out}", "--mean=0.5,0.5,0.5", "--std=0.5,0.5,0.5"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return out


def test_the_custom_model_and_the_default_answer_by_name_in_one_run(
    service_factory, catdog_package
):
    service = service_factory(MODELS=f"catdog={catdog_package}")
    service.start_worker()
    url = service.start_web()
    chelsea = (IMAGES / "chelsea.jpg").read_bytes()
    json_ = "application/json"

    custom = upload(url, chelsea, "chelsea.jpg", model="catdog", accept=json_)
    assert custom.status_code == 200, custom.text
    assert (custom.json()["label"], custom.json()["model"]) == ("cat", "catdog")
    assert custom.json()["version"] == "1"
    assert [entry["label"] for entry in custom.json()["top5"]][0] == "cat"
    assert len(custom.json()["top5"]) == 3  # cat, dog, other: the package's own classes

    default = upload(url, chelsea, "chelsea.jpg", accept=json_)
    assert default.status_code == 200, default.text
    assert default.json()["label"] in photo_labels()["chelsea.jpg"]
    assert default.json()["model"] == "efficientnet_lite0" and default.json()["version"]

    # The query parameter names a model too, and plain-text clients get `stem:label`.
    plain = upload(url, chelsea, "chelsea.jpg", path="/upload?model=catdog")
    assert plain.status_code == 200 and plain.text == "chelsea:cat"

    unknown = upload(url, chelsea, "chelsea.jpg", model="dogcat")
    assert unknown.status_code == 400
    assert "unknown model 'dogcat': this deployment serves efficientnet_lite0, catdog" in (
        unknown.text
    )

    # An asynchronous upload names its model the same way; its stored result says which.
    accepted = upload(url, chelsea, "chelsea.jpg", model="catdog", prefer_async=True)
    assert accepted.status_code == 202, accepted.text

    def stored():
        response = requests.get(url + accepted.headers["Location"], timeout=10)
        return response.json() if response.status_code == 200 else None

    result = wait_until(stored, "the asynchronous result", 60)
    assert (result["label"], result["model"], result["version"]) == ("cat", "catdog", "1")

    # A batch job names its model in the query; results.csv says which model and version.
    job = requests.post(
        f"{url}/jobs?model=catdog",
        data=zip_of(
            [("chelsea.jpg", chelsea), ("rocket.jpg", (IMAGES / "rocket.jpg").read_bytes())]
        ),
        headers={"Content-Type": "application/zip"},
        timeout=120,
    )
    assert job.status_code == 202, job.text
    wait_done(url, job.json()["id"])
    rows = {row["filename"]: row for row in results(url, job.json()["id"])}
    assert {name: (r["label"], r["model"], r["version"]) for name, r in rows.items()} == {
        "chelsea.jpg": ("cat", "catdog", "1"),
        "rocket.jpg": ("other", "catdog", "1"),
    }
    refused = requests.post(
        f"{url}/jobs?model=dogcat",
        data=zip_of([("c.jpg", chelsea)]),
        timeout=60,
        headers={"Content-Type": "application/zip"},
    )
    assert refused.status_code == 400 and "this deployment serves" in refused.text

    # Each model's results are cached under its own name and version, never the other's.
    s3 = boto3.client("s3", endpoint_url=service.env["AWS_ENDPOINT_URL"], region_name="us-east-1")

    def cached_under() -> set[str] | None:
        listing = s3.list_objects_v2(Bucket=service.settings.output_bucket, Prefix=CACHE)
        found = {"/".join(o["Key"].split("/")[1:3]) for o in listing.get("Contents", [])}
        return found if len(found) == 2 else None

    assert wait_until(cached_under, "both models' cache entries", 30) == {
        "catdog/1",
        f"efficientnet_lite0/{default.json()['version']}",
    }
    again = upload(url, chelsea, "again.jpg", model="catdog", accept=json_).json()
    assert again["cached"] is True and again["label"] == "cat" and again["model"] == "catdog"
    status = requests.get(f"{url}/status", timeout=10).json()
    assert status["model"] == "efficientnet_lite0"
    assert status["models"] == ["efficientnet_lite0", "catdog"]
    log = service.log("worker-0")
    assert "catdog 1 on" in log  # the worker says it holds the package, and on what
