"""Asynchronous uploads end to end: 202 at once, then the stored result by id (real processes)."""

from __future__ import annotations

import boto3
import requests

from runtime.keys import result_key, started_key
from tests.http_client import photos, upload
from tests.support.waiting import wait_until

ASYNC = {"Prefer": "respond-async"}


def poll(url: str, location: str, limit_s: float = 240) -> requests.Response:
    def answered() -> tuple[requests.Response] | None:
        response = requests.get(url + location, timeout=10)  # falsy when 4xx: wrapped
        return (response,) if response.status_code != 202 else None

    (response,) = wait_until(answered, f"{location} to answer other than 202", limit_s, 0.5)
    return response


def submit(url: str, data: bytes, name: str, path: str = "/upload", **headers) -> requests.Response:
    return requests.post(
        url + path, files={"myfile": (name, data)}, headers={**ASYNC, **headers}, timeout=30
    )


def test_async_upload_is_queued_then_answered(service_factory):
    service = service_factory()
    url = service.start_web()  # no worker yet: the request can only be queued
    name, data, accepted = photos()[0]
    response = submit(url, data, name)
    assert response.status_code == 202, response.text
    body = response.json()
    assert response.headers["Location"] == f"/results/{body['id']}" == body["location"]
    assert response.headers["Preference-Applied"] == "respond-async"
    pending = requests.get(url + response.headers["Location"], timeout=10)
    assert pending.status_code == 202
    assert pending.json() == {"id": body["id"], "state": "queued"}

    service.start_worker()
    done = poll(url, response.headers["Location"])
    assert done.status_code == 200, done.text
    assert done.json()["label"] in accepted and done.json()["filename"] == name

    # The worker marked it taken before the result: without the result, it reads "in progress".
    s3 = boto3.client("s3", endpoint_url=service.env["AWS_ENDPOINT_URL"])
    s3.head_object(Bucket=service.settings.output_bucket, Key=started_key(body["id"]))
    s3.delete_object(Bucket=service.settings.output_bucket, Key=result_key(body["id"]))
    again = requests.get(url + response.headers["Location"], timeout=10)
    assert again.status_code == 202 and again.json()["state"] == "in progress"


def test_async_on_root_with_client_id_and_bad_input(running_service):
    url = running_service.webs[0]
    name, data, accepted = photos()[1]
    request_id = "b" * 31 + "1"
    response = submit(url, data, name, path="/", **{"X-Request-Id": request_id})
    assert response.status_code == 202 and response.json()["id"] == request_id
    assert poll(url, f"/results/{request_id}").json()["label"] in accepted
    # A retry of the same submission gets the same id, not a second classification.
    assert submit(url, data, name, **{"X-Request-Id": request_id}).json()["id"] == request_id
    # Bad input is refused before anything is queued, as for a synchronous upload.
    refused = submit(url, b"not an image at all", "x.jpg")
    assert refused.status_code == 415 and "not an image" in refused.text
    # Without the preference, the same endpoint still answers synchronously.
    assert upload(url, data, name).status_code == 200


def test_unknown_async_id_is_404(running_service):
    response = requests.get(f"{running_service.webs[0]}/results/{'c' * 32}", timeout=10)
    assert response.status_code == 404


def test_results_uploads_and_jobs_expire_by_lifecycle_rules(running_service):
    s3 = boto3.client("s3", endpoint_url=running_service.env["AWS_ENDPOINT_URL"])
    days = running_service.settings.result_expiry_days
    wanted = {
        running_service.settings.input_bucket: {"uploads/": days, "jobs/": days},
        running_service.settings.output_bucket: {
            p: days for p in ("results/", "started/", "jobs/")
        },
    }
    for bucket in wanted:
        rules = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
        expiring = {
            rule["Filter"]["Prefix"]: rule["Expiration"]["Days"]
            for rule in rules
            if rule["Status"] == "Enabled"
        }
        assert expiring == wanted[bucket]
        assert "cache/" not in expiring  # the content cache outlives any one request
