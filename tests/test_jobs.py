"""Batch jobs end to end: real moto over HTTP, real web and worker processes, the real model."""

from __future__ import annotations

import re
import signal
import tarfile

import requests

from tests.http_client import photos, upload, variants
from tests.job_client import (
    clients,
    corrupt_member,
    damaged_tar,
    flat_bmp,
    form_of,
    metadata_bomb,
    overlapping_zip,
    post_archive,
    queue_depth,
    results,
    tar_of,
    wait_done,
    with_folders,
    zip_of,
)
from tests.support.waiting import wait_until

BOMB = b"\0" * (30 * 1024 * 1024)  # deflates to ~30 KB; three times the one-image limit


def _labels() -> dict[str, list[str]]:
    return {name: accepted for name, _, accepted in photos()}


def test_jobs_from_archives_and_a_prefix(service_factory):
    service = service_factory(JOB_PREFIXES="albums")
    url = service.start_web()
    service.start_worker()
    good = [(f"folder/{name}", data) for name, data, _ in photos()]
    bad = {
        "../../escape.jpg": "unsafe path",
        "/abs/olute.jpg": "unsafe path",
        "notes.txt": "not an image",
        "bomb.jpg": "byte limit",
        "empty.jpg": "empty",
    }
    members = (
        good[:4]
        + [
            ("../../escape.jpg", good[0][1]),
            ("/abs/olute.jpg", good[0][1]),
            ("notes.txt", b"hello, not a photo"),
            ("bomb.jpg", BOMB),
            ("empty.jpg", b""),
        ]
        + good[4:]
    )

    accepted = post_archive(url, zip_of(members))
    assert accepted.status_code == 202, accepted.text
    job = accepted.json()
    assert accepted.headers["Location"] == f"/jobs/{job['id']}"
    assert (job["total"], job["rejected"]) == (len(members), len(bad))

    progress = wait_done(url, job["id"])
    assert (progress["done"], progress["failed"]) == (len(good), len(bad))
    # Finished just now: the last minute's rate counts the job's images, and nothing is left.
    assert progress["eta_s"] == 0.0 and progress["rate_per_s"] > 0
    rows = results(url, job["id"])
    assert [row["filename"] for row in rows] == [name for name, _ in members]
    labels = _labels()
    for row in rows:
        if row["filename"] in bad:
            assert bad[row["filename"]] in row["error"] and not row["label"], row
        else:
            assert row["label"] in labels[row["filename"].split("/")[-1]], row
            assert 0 < float(row["score"]) <= 1 and not row["error"]

    # The same images as a gzipped tar, with a symlink that must not be followed.
    accepted = post_archive(url, tar_of(good, links=("link.jpg",)), "application/x-tar")
    assert accepted.status_code == 202, accepted.text
    progress = wait_done(url, accepted.json()["id"])
    assert (progress["done"], progress["failed"]) == (len(good), 1)
    (link,) = [r for r in results(url, accepted.json()["id"]) if r["filename"] == "link.jpg"]
    assert "not a regular file" in link["error"]

    # A prefix of the input bucket: nothing copied, names relative to the prefix.
    s3, _ = clients(service)
    for name, data, _ in photos():
        s3.put_object(Bucket=service.settings.input_bucket, Key=f"albums/2024/{name}", Body=data)
    accepted = requests.post(f"{url}/jobs", json={"prefix": "albums/"}, timeout=60)
    assert accepted.status_code == 202, accepted.text
    progress = wait_done(url, accepted.json()["id"])
    assert (progress["done"], progress["failed"]) == (len(good), 0)
    rows = results(url, accepted.json()["id"])
    assert all(r["label"] in labels[r["filename"].removeprefix("2024/")] for r in rows)


def _json_body(url: str, body: dict):
    return requests.post(f"{url}/jobs", json=body, timeout=60)


def _text_field(url: str, text: str):
    body, content_type = form_of([], fields={"note": text})
    return post_archive(url, body, content_type)


def test_a_corrupt_member_is_its_own_failed_row(service_factory):
    """A zip member whose deflate stream is corrupt was a 500 refusing the whole job."""
    service = service_factory()
    url = service.start_web()
    archive = corrupt_member(zip_of([("bad.bmp", flat_bmp(100)), ("notes.txt", b"hi")]), "bad.bmp")
    accepted = post_archive(url, archive)
    assert accepted.status_code == 202, accepted.text
    assert (accepted.json()["total"], accepted.json()["rejected"]) == (2, 2)
    rows = {row["filename"]: row["error"] for row in results(url, accepted.json()["id"])}
    assert "corrupt compressed data" in rows["bad.bmp"] and "not an image" in rows["notes.txt"]


def test_bad_jobs_are_refused_whole_and_leave_nothing(service_factory):
    service = service_factory()
    # No worker: nothing may be queued. One image's worth is 4 MiB, so an archive may inflate to
    # 50 times its size plus 4 MiB (JOB_MAX_RATIO).
    url = service.start_web(JOB_MAX_IMAGES="3", MAX_UPLOAD_BYTES=str(4 * 2**20))
    images = [(name, data) for name, data in variants(4)]
    flat = flat_bmp()
    s3, sqs = clients(service)
    cases = [
        (post_archive(url, zip_of(images)), 413, "4"),
        (post_archive(url, tar_of(images), "application/gzip"), 413, "image limit"),
        (post_archive(url, b"PK\x03\x04 but not really a zip"), 400, "zip"),
        (post_archive(url, b"just some text"), 400, "not a zip or tar"),
        # Under 1 KB declaring 16 MiB of long name: refused before tarfile reads the name.
        (post_archive(url, metadata_bomb(tarfile.GNUTYPE_LONGNAME, 2**24)), 400, "declares"),
        (post_archive(url, metadata_bomb(tarfile.XGLTYPE, 2**24)), 400, "global pax"),
        # Directories count toward the limit: they cost as much to list as files.
        (post_archive(url, with_folders(images[:1], 3, "zip")), 413, "image limit"),
        (post_archive(url, with_folders(images[:1], 3, "tar"), "application/x-bzip2"), 413, "3"),
        # Three valid 3 MB images in a few hundred bytes: the first is staged, then refused
        # (and discarded) at the second, before it is read.
        (
            post_archive(url, tar_of([(f"{i}.bmp", flat) for i in range(3)], mode="w:bz2")),
            400,
            "inflates past",
        ),
        # One deflated image listed three times: older CPython would inflate it three times.
        (post_archive(url, overlapping_zip("same.bmp", flat, 3)), 400, "overlapping zip"),
        # tarfile alone takes a damaged header for the end: 2 of 3 members, no word of the third.
        (post_archive(url, damaged_tar(images[:3], after=2), "application/gzip"), 400, "damaged"),
        # A JSON body or a form's text field is capped, never read whole.
        (_json_body(url, {"prefix": "a" * 100_000}), 413, "JSON body is larger"),
        (_text_field(url, "n" * 100_000), 413, "form field 'note'"),
        (post_archive(url, b""), 400, "empty body"),
        (
            requests.post(f"{url}/jobs", json={"prefix": "uploads/"}, timeout=10),
            403,
            "JOB_PREFIXES",
        ),
        (requests.post(f"{url}/jobs", json={"prefix": "albums/"}, timeout=10), 403, "JOB_PREFIXES"),
        (requests.post(f"{url}/jobs", json=["x"], timeout=10), 400, "prefix"),
        (requests.get(f"{url}/jobs/{'d' * 32}", timeout=10), 404, "no job"),
        (requests.get(f"{url}/jobs/{'d' * 32}/results.csv", timeout=10), 404, "no job"),
        (requests.get(f"{url}/jobs/..%2F..%2Fetc", timeout=10), 404, ""),
    ]
    for response, status, reason in cases:
        assert response.status_code == status, (response.status_code, response.text)
        assert reason in response.text and "Traceback" not in response.text
        assert len(response.text.strip().splitlines()) == 1
    assert queue_depth(sqs, service.settings.job_queue) == 0
    listing = s3.list_objects_v2(Bucket=service.settings.input_bucket, Prefix="jobs/")
    assert listing.get("KeyCount", 0) == 0


def test_a_prefix_job_reads_only_allowed_prefixes_never_another_clients_job(service_factory):
    """Round three's finding 1: {"prefix": "jobs"} listed every other client's staged images."""
    service = service_factory(JOB_PREFIXES="albums", API_KEY="k3y")
    url = service.start_web()  # no worker: what is queued stays countable
    key = {"X-Api-Key": "k3y"}
    victim = requests.post(
        f"{url}/jobs",
        data=zip_of(variants(3)),
        headers={**key, "Content-Type": "application/zip"},
        timeout=60,
    )
    assert victim.status_code == 202, victim.text
    s3, sqs = clients(service)
    for name in ("albums/a.jpg", "albumsX/b.jpg"):
        s3.put_object(Bucket=service.settings.input_bucket, Key=name, Body=b"x")
    refused = [
        ("jobs", 400), ("job", 403), ("j", 403), ("jobs/", 400), ("./jobs", 400),
        ("albums/../jobs", 400), ("/albums", 400), ("albums//x", 400), ("uploads", 400),
        ("albumsX", 403), ("", 400), ("alb", 403), ("ｊｏｂｓ", 400), ("albums\\x", 400),
    ]  # fmt: skip
    for prefix, status in refused:
        response = requests.post(f"{url}/jobs", json={"prefix": prefix}, headers=key, timeout=10)
        assert response.status_code == status, (prefix, response.status_code, response.text)
        assert len(response.text.strip().splitlines()) == 1 and "Traceback" not in response.text
    no_key = requests.post(f"{url}/jobs", json={"prefix": "albums"}, timeout=10)
    assert no_key.status_code == 401, no_key.text
    allowed = requests.post(f"{url}/jobs", json={"prefix": "albums"}, headers=key, timeout=10)
    assert allowed.status_code == 202 and allowed.json()["total"] == 1, allowed.text
    # Only the victim's three images and the allowed prefix's one were queued.
    assert queue_depth(sqs, service.settings.job_queue) == 3 + 1


def test_duplicate_delivery_classifies_each_image_once(service_factory):
    service = service_factory()
    url = service.start_web()
    images = variants(6)
    job = post_archive(url, zip_of(images)).json()
    # Every message delivered twice: each copy sent again before any worker runs.
    _, sqs = clients(service)
    queue_url = sqs.get_queue_url(QueueName=service.settings.job_queue)["QueueUrl"]
    bodies = []
    while messages := sqs.receive_message(
        QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
    ).get("Messages", []):
        bodies += [m["Body"] for m in messages]
        for message in messages:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    assert len(bodies) == len(images)
    for body in bodies + bodies:
        sqs.send_message(QueueUrl=queue_url, MessageBody=body)

    service.start_worker(BATCH_MAX="4")  # copies land in one batch and across batches
    progress = wait_done(url, job["id"])
    assert (progress["done"], progress["failed"]) == (len(images), 0)
    rows = results(url, job["id"])
    assert sorted(r["filename"] for r in rows) == sorted(name for name, _ in images)
    _wait_empty(sqs, service.settings.job_queue)
    log = service.log("worker-0")
    classified = sum(int(n) for n in re.findall(r"batch of \d+: (\d+) classified", log))
    assert classified == len(images), log[-3000:]
    assert "already classified" in log or "while the first is in hand" in log


def test_job_survives_a_worker_killed_with_sigkill(service_factory):
    service = service_factory(VISIBILITY_TIMEOUT_S="5", BATCH_MAX="4")
    url = service.start_web()
    first = service.start_worker()
    images = variants(40)
    job = post_archive(url, zip_of(images)).json()
    _wait_progress(url, job["id"], at_least=1)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    service.start_worker()
    progress = wait_done(url, job["id"], limit_s=400)
    assert (progress["done"], progress["failed"]) == (len(images), 0)
    rows = results(url, job["id"])
    assert [r["filename"] for r in rows] == [name for name, _ in images]
    assert all(r["label"] and not r["error"] for r in rows)


def _wait_progress(url: str, job_id: str, at_least: int, limit_s: float = 240) -> None:
    def progress() -> dict | None:
        progress = requests.get(f"{url}/jobs/{job_id}", timeout=10).json()
        return progress if progress["done"] >= at_least else None

    progress = wait_until(progress, f"{at_least} images of the job classified", limit_s, 0.05)
    assert progress["done"] < progress["total"], "the job finished before the kill"


def _wait_empty(sqs, queue: str, limit_s: float = 60) -> None:
    wait_until(lambda: queue_depth(sqs, queue) == 0, f"{queue} to empty", limit_s, every_s=0.5)


def test_interactive_uploads_go_before_a_running_job(service_factory):
    """Lane priority: with a long job queued on one worker, each upload is answered while the
    job is still far from done (one queue, first come first served, would answer it last)."""
    service = service_factory()
    url = service.start_web()
    images = [(f"{copy}-{name}", data) for copy in range(3) for name, data in variants(100)]
    service.start_worker()
    job = post_archive(url, zip_of(images)).json()
    _wait_progress(url, job["id"], at_least=1)
    for name, data, accepted in photos()[:5]:
        response = upload(url, data, name)
        assert response.status_code == 200, response.text
        assert response.text.split(":", 1)[1] in accepted
        progress = requests.get(f"{url}/jobs/{job['id']}", timeout=10).json()
        assert progress["total"] - progress["done"] >= 50, progress
