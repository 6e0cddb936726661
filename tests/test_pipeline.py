"""End to end: real moto server, real web and worker processes, real HTTP, the real model."""

from __future__ import annotations

import hashlib
import time
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest
import requests

from runtime.keys import cache_key
from tests.http_client import photos, stem, stem_and_label, upload, variants


@pytest.mark.parametrize(("field", "path"), [("myfile", "/upload"), ("inputFile", "/")])
def test_every_photo_gets_an_accepted_label(running_service, field, path):
    url = running_service.webs[0]
    for name, data, accepted in photos():
        response = upload(url, data, name, field=field, path=path)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/plain")
        got_stem, label = stem_and_label(response.text)
        assert got_stem == stem(name)
        assert label in accepted, f"{name}: {label!r} not in {accepted}"


def test_json_answer_and_stored_result(running_service):
    url = running_service.webs[0]
    name, data, accepted = photos()[0]
    response = upload(url, data, name, accept="application/json")
    assert response.status_code == 200
    body = response.json()
    assert set(body) >= {"id", "filename", "label", "top5", "model", "timings_ms"}
    assert body["filename"] == name and body["label"] in accepted
    assert body["model"] == "efficientnet_lite0"
    scores = [entry["score"] for entry in body["top5"]]
    assert len(scores) == 5 and scores == sorted(scores, reverse=True)
    assert body["top5"][0]["label"] == body["label"]
    assert body["timings_ms"]["total"] > 0
    stored = requests.get(f"{url}/results/{body['id']}", timeout=10)
    assert stored.status_code == 200
    assert stored.json()["label"] == body["label"]


@pytest.mark.parametrize("request_id", ["0" * 32, "not-an-id", "..%2F..%2Fetc"])
def test_unknown_result_is_404(running_service, request_id):
    response = requests.get(f"{running_service.webs[0]}/results/{request_id}", timeout=10)
    assert response.status_code == 404


def test_100_concurrent_uploads_each_get_their_own_label(running_service):
    url = running_service.webs[0]
    images = variants(100)
    alone = {}
    for name, data in images:
        response = upload(url, data, name)
        assert response.status_code == 200
        alone[name] = stem_and_label(response.text)[1]

    def send(item):
        name, data = item
        return name, upload(url, data, name)

    with ThreadPoolExecutor(max_workers=100) as pool:
        answers = list(pool.map(send, images))
    for name, response in answers:
        assert response.status_code == 200, response.text
        got_stem, label = stem_and_label(response.text)
        assert got_stem == stem(name)
        assert label == alone[name], f"{name}: {label!r} concurrently, {alone[name]!r} alone"


def test_status_and_health(running_service):
    url = running_service.webs[0]
    assert requests.get(f"{url}/healthz", timeout=10).text == "ok"
    status = requests.get(f"{url}/status", timeout=10).json()
    assert set(status["queue"]) >= {"visible", "in_flight", "dlq"}
    assert set(status["fleet"]) == {"pending", "running", "stopping", "stopped", "starting"}
    assert status["model"] == "efficientnet_lite0"


def test_repeated_bytes_answer_from_the_result_cache(running_service):
    url = running_service.webs[0]
    name, data = variants(1)[0]
    data = data + b"\x00cache-test"  # bytes no other test sends
    first = upload(url, data, name, accept="application/json").json()
    # The web tier fills the cache after it answers: wait for the entry, not for a time.
    s3 = boto3.client(
        "s3", endpoint_url=running_service.env["AWS_ENDPOINT_URL"], region_name="us-east-1"
    )
    assert first["model"] == "efficientnet_lite0" and first["version"]
    sha256 = hashlib.sha256(data).hexdigest()
    key = cache_key("efficientnet_lite0", first["version"], "default", sha256)
    for _ in range(100):
        if s3.list_objects_v2(Bucket=running_service.settings.output_bucket, Prefix=key)[
            "KeyCount"
        ]:
            break
        time.sleep(0.05)
    again = upload(url, data, "renamed.jpg", accept="application/json").json()
    assert "cache_hit" not in first["timings_ms"] and first["cached"] is False
    assert again["timings_ms"]["cache_hit"] == 1 and again["cached"] is True
    # The worker that classified it, named in the answer and in the cached copy of its result.
    assert first["instance"] and again["instance"] == first["instance"]
    assert upload(url, data, name).headers["X-Cache"] == "hit"  # plain-text clients learn it too
    assert again["label"] == first["label"] and again["top5"] == first["top5"]
    assert again["filename"] == "renamed.jpg"
