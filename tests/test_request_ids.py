"""Finding 1 and 2 of issue 11: a client-chosen X-Request-Id cannot hijack another submission's
answer or poison the result cache, and a cache hit reveals nothing of the first uploader.

Real web and worker processes against moto, the real model on real photos.
"""

from __future__ import annotations

import io
import time
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest
import requests
from PIL import Image

from tests.conftest import IMAGES, photo_labels
from tests.faults import wait_in_flight
from tests.http_client import upload

SLOW_ID = "a1" * 16


def _big_jpeg(name: str, side: int = 5000) -> bytes:
    """A photo upscaled near the pixel limit: seconds of decoding and resizing in the worker."""
    image = Image.open(IMAGES / name).convert("RGB").resize((side, side))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def two_webs(moto_endpoint, tmp_path_factory):
    from tests.conftest import Service

    # Generous: on a loaded machine the first answer waits for the model to load.
    service = Service(
        moto_endpoint, tmp_path_factory.mktemp("ids"), "ids11", RESULT_TIMEOUT_S="300"
    )
    urls = service.provision()
    service.start_worker()
    first, second = service.start_web(), service.start_web()
    kwargs = {"endpoint_url": moto_endpoint, "region_name": "us-east-1"}
    yield service, first, second, boto3.client("sqs", **kwargs), urls["request_queue_url"]
    service.stop()


def test_a_reused_request_id_never_takes_over_a_waiting_request(two_webs):
    service, web, other_web, sqs, queue_url = two_webs
    labels = photo_labels()
    slow = _big_jpeg("rocket.jpg")
    target = (IMAGES / "chelsea.jpg").read_bytes()
    with ThreadPoolExecutor(max_workers=1) as pool:
        first = pool.submit(
            upload, web, slow, "rocket.jpg", accept="application/json", request_id=SLOW_ID
        )
        wait_in_flight(sqs, queue_url, limit_s=300)
        # The attack: the same id with other bytes, on the same web process and on another.
        same_web = upload(web, target, "chelsea.jpg", accept="application/json", request_id=SLOW_ID)
        across = upload(
            other_web, target, "chelsea.jpg", accept="application/json", request_id=SLOW_ID
        )
        answer = first.result()
    assert same_web.status_code == 409, same_web.text
    assert across.status_code == 409, across.text
    assert "already in use" in same_web.json()["reason"]
    assert answer.status_code == 200, answer.text
    assert answer.json()["label"] in labels["rocket.jpg"]
    # Reusing the finished id for other bytes is refused too; for the same bytes it is a retry.
    reused = upload(web, target, "chelsea.jpg", accept="application/json", request_id=SLOW_ID)
    assert reused.status_code == 409, reused.text
    retry = upload(web, slow, "rocket.jpg", accept="application/json", request_id=SLOW_ID)
    assert retry.status_code == 200 and retry.json()["label"] == answer.json()["label"]
    # The cache was not poisoned: the target's bytes answer with the target's own label, from
    # the worker and then from the cache.
    for _ in range(2):
        honest = upload(web, target, "chelsea.jpg", accept="application/json")
        assert honest.status_code == 200, honest.text
        assert honest.json()["label"] in labels["chelsea.jpg"]


def test_a_cache_hit_reveals_nothing_of_the_first_uploader(two_webs):
    service, web, other_web, _, _ = two_webs
    data = (IMAGES / "coffee.jpg").read_bytes()
    first = upload(web, data, "alice-private.jpg", accept="application/json")
    assert first.status_code == 200, first.text
    second = None
    for _ in range(50):  # the cache is filled in the background after the first answer
        second = upload(other_web, data, "bob.jpg", accept="application/json")
        if second.json().get("timings_ms", {}).get("cache_hit"):
            break
        time.sleep(0.1)
    assert second.status_code == 200, second.text
    body = second.json()
    assert body["timings_ms"].get("cache_hit") == 1
    assert body["label"] == first.json()["label"]
    assert body["id"] != first.json()["id"]
    assert "alice" not in second.text
    # The hit's own id finds its own result, with its own filename.
    stored = None
    for _ in range(50):
        stored = requests.get(f"{other_web}/results/{body['id']}", timeout=10)
        if stored.status_code == 200:
            break
        time.sleep(0.1)
    assert stored.status_code == 200, stored.text
    assert stored.json()["filename"] == "bob.jpg"
    assert "alice" not in stored.text
