"""Several models at once on the embedded stack's real processes (issue 22 items 3 and 5): a
custom model packaged by `python -m worker.models package` from a TorchScript file made here
(the default network folded into cat / dog / other, tests/support/folded.py) is served beside
the built-in one and asked for by name, in one run."""

from __future__ import annotations

import os
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import pytest
import requests

from runtime.keys import CACHE, model_package_prefix
from tests.conftest import IMAGES, photo_labels
from tests.http_client import upload
from tests.job_client import results, wait_done, zip_of
from tests.support import folded
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e


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


def _point(link, target) -> None:
    """Publish a version: the link changes whole (what `ln -sfn` does), never half-written."""
    tmp = link.with_name(f".{link.name}-new")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    os.replace(tmp, link)


def test_a_new_version_rolls_out_under_load_with_none_lost_and_none_answered_twice(
    service_factory, catdog_package, folded_networks
):
    # Version 2 is the same network with labels of its own: an answer's label says which
    # version gave it, whatever the answer claims.
    root = catdog_package.parent
    labels_v2 = root / "labels-v2.txt"
    labels_v2.write_text("cat-v2\ndog-v2\nother-v2\n")
    version_2 = folded.package(folded_networks["onnx"], labels_v2, root / "catdog-2", "2")
    # Version 3 fails its check at load: its artefact is not the one its manifest hashes.
    version_3 = root / "catdog-3"
    shutil.copytree(version_2, version_3)
    (version_3 / "model.onnx").write_bytes((version_2 / "model.onnx").read_bytes()[:-1000])
    link = root / "catdog"
    _point(link, catdog_package)

    service = service_factory(MODELS=f"catdog={link}", RESULT_CACHE="false")
    service.start_worker()
    url = service.start_web()
    chelsea = (IMAGES / "chelsea.jpg").read_bytes()
    answers, lock, done = [], threading.Lock(), threading.Event()
    counter = iter(range(10**6))

    def send(index: int) -> dict:
        # Bytes of their own (after the JPEG's end): no two uploads are the same image file.
        data = chelsea + b"\x00" + str(index).encode()
        response = upload(url, data, f"c{index}.jpg", model="catdog", accept="application/json")
        assert response.status_code == 200, response.text
        return response.json()

    def client() -> None:
        # Twelve clients upload without pause: the switch happens with a burst in flight, and
        # the burst goes on until version 2 has answered 30 of them.
        while not done.is_set():
            with lock:
                index = next(counter)
            answer = send(index)
            with lock:
                answers.append(answer)
                if len(answers) == 20:
                    _point(link, version_2)
                if sum(a["version"] == "2" for a in answers) >= 30 or len(answers) > 3000:
                    done.set()

    with ThreadPoolExecutor(max_workers=12) as pool:
        for future in [pool.submit(client) for _ in range(12)]:
            future.result()
    assert len({a["id"] for a in answers}) == len(answers)  # none answered twice
    by_version = {"1": "cat", "2": "cat-v2"}
    wrong = [a for a in answers if by_version.get(a["version"]) != a["label"]]
    assert wrong == []  # each answered by the version it names, and chelsea is a cat in both
    counts = {v: sum(a["version"] == v for a in answers) for v in ("1", "2")}
    assert counts["1"] >= 20 and counts["2"] >= 30
    print(
        f"rollout burst: {len(answers)} uploads, {counts['1']} answered by 1, {counts['2']} by"
        " 2, 0 lost, 0 twice, 0 by the wrong version"
    )

    _point(link, version_3)
    wait_until(lambda: "catdog-3 refused" in service.log("worker-0"), "the refusal", 60)
    still = upload(url, chelsea + b"\x00x", "c.jpg", model="catdog", accept="application/json")
    assert (still.json()["label"], still.json()["version"]) == ("cat-v2", "2")
    refusals = [line for line in service.log("worker-0").splitlines() if "refused" in line]
    assert len(refusals) == 1 and "does not match the sha256" in refusals[0]


def test_a_package_in_the_model_area_of_s3_is_fetched_and_served(service_factory, catdog_package):
    service = service_factory()
    s3 = boto3.client("s3", endpoint_url=service.env["AWS_ENDPOINT_URL"], region_name="us-east-1")
    bucket = service.settings.input_bucket
    prefix = model_package_prefix("catdog", "1")
    for path in catdog_package.iterdir():
        s3.upload_file(str(path), bucket, prefix + path.name)
    # The deployment's own cache (the default model's package is in it already): the copy of the
    # package goes under s3/ there.
    cache = Path(service.settings.model_cache_dir)
    shutil.rmtree(cache / "s3" / bucket, ignore_errors=True)
    service.start_worker(MODELS=f"catdog=s3://{bucket}/{prefix}")
    url = service.start_web(MODELS=f"catdog=s3://{bucket}/{prefix}")
    chelsea = (IMAGES / "chelsea.jpg").read_bytes()
    answer = upload(url, chelsea, "chelsea.jpg", model="catdog", accept="application/json")
    assert answer.status_code == 200, answer.text
    assert (answer.json()["label"], answer.json()["version"]) == ("cat", "1")
    assert (cache / "s3" / bucket / prefix / "model.onnx").is_file()  # fetched once, kept

    # A prefix that holds no package stops the worker at start with one line.
    missing = f"s3://{bucket}/{model_package_prefix('catdog', '9')}"
    process = service.start_worker(MODELS=f"catdog={missing}")
    assert wait_until(lambda: process.poll(), "the worker to stop", 60) == 2
    (line,) = [x for x in service.log("worker-1").splitlines() if x.startswith("worker: ")]
    assert line == f"worker: model catdog: {missing}manifest.json does not exist"
    shutil.rmtree(cache / "s3" / bucket)  # this test's copy: nothing of it outlives the test
