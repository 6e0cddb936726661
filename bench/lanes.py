"""Interactive latency while a batch job runs: the two-lane design, measured.

A job of photos (half of them thumbnails) is queued on the job lane; once the workers are on it,
the same number of sequential uploads as the idle `seq` run goes through the interactive lane.
The ratio of the two medians is the cost a running job puts on a person waiting at the page.
"""

from __future__ import annotations

import io
import json
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass

from bench.client import Batch, Uploader
from bench.photos import Photos
from embedded.stack import StackError


@dataclass(frozen=True)
class LaneRun:
    job_images: int
    under_job: Batch
    job_left: int  # job images not finished after the last upload (0: the job ended too soon)


def run(uploader: Uploader, photos: Photos, base_url: str, job_images: int, uploads: int):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for photo in photos.mixed(job_images):
            archive.writestr(photo.filename, photo.data)
    job = _json(base_url + "/jobs", buffer.getvalue())
    deadline = time.monotonic() + 120
    while _json(f"{base_url}/jobs/{job['id']}")["done"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    under_job = uploader.sequential(photos.full(uploads))
    progress = _json(f"{base_url}/jobs/{job['id']}")
    return LaneRun(job_images, under_job, progress["total"] - progress["done"] - progress["failed"])


def _json(url: str, body: bytes | None = None) -> dict:
    request = urllib.request.Request(  # noqa: S310 - the bench's own loopback URL
        url,
        data=body,
        headers={"Content-Type": "application/zip", "Accept": "application/json"} if body else {},
    )
    try:
        with urllib.request.urlopen(request, timeout=300) as response:  # noqa: S310
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        raise StackError(f"{url}: {error.code} {error.read()[:200]!r}") from None
