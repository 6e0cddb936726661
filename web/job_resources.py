"""The batch-job endpoints: POST /jobs, GET /jobs/<id>, GET /jobs/<id>/results.csv.

POST /jobs takes one of three bodies: a zip or tar archive (any Content-Type but the two below),
a multipart form of image files (the page's folder upload), or JSON `{"prefix": "..."}` naming
objects already in the input bucket. An archive is spooled to a temporary file (its members are
read back one at a time), so the web tier never holds a whole archive in memory.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator

import falcon

from runtime.messages import is_request_id
from web import archives
from web.archives import Entry
from web.errors import TooManyImages
from web.jobs import JobStore

_CHUNK = 1024 * 1024


class JobsResource:
    def __init__(self, jobs: JobStore | None, max_archive_bytes: int):
        self._jobs = jobs
        self._max_archive_bytes = max_archive_bytes

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        jobs = _enabled(self._jobs)
        content_type = req.content_type or ""
        if content_type.startswith("application/json"):
            body = req.get_media()
            if not isinstance(body, dict):
                raise falcon.HTTPBadRequest(description='the JSON body must be {"prefix": "..."}')
            manifest = jobs.from_prefix(body.get("prefix"))
        elif content_type.startswith("multipart/form-data"):
            manifest = jobs.from_entries(_form_entries(req, jobs.limits), "form")
        else:
            with self._spooled(req) as file:
                limits = jobs.limits
                found = archives.entries(
                    file, max_images=limits.max_images, max_bytes=limits.max_image_bytes
                )
                manifest = jobs.from_entries(found, "archive")
        resp.status = falcon.HTTP_202
        resp.location = f"/jobs/{manifest['id']}"
        resp.media = {
            **manifest,
            "location": resp.location,
            "results": f"{resp.location}/results.csv",
        }

    def _spooled(self, req: falcon.Request):
        if req.content_length and req.content_length > self._max_archive_bytes:
            raise falcon.HTTPContentTooLarge(description=self._too_large())
        file = tempfile.TemporaryFile()  # noqa: SIM115 - returned to a with-block
        size = 0
        while chunk := req.bounded_stream.read(_CHUNK):
            size += len(chunk)
            if size > self._max_archive_bytes:
                file.close()
                raise falcon.HTTPContentTooLarge(description=self._too_large())
            file.write(chunk)
        if size == 0:
            file.close()
            raise falcon.HTTPBadRequest(
                description="empty body: send a zip or tar archive, a form of images, "
                'or JSON {"prefix": "..."}'
            )
        return file

    def _too_large(self) -> str:
        return f"archive is larger than the {self._max_archive_bytes}-byte limit of a job"


class JobResource:
    def __init__(self, jobs: JobStore | None):
        self._jobs = jobs

    def on_get(self, req: falcon.Request, resp: falcon.Response, job_id: str) -> None:
        progress = _enabled(self._jobs).progress(job_id) if is_request_id(job_id) else None
        if progress is None:
            raise falcon.HTTPNotFound(description=f"no job {job_id[:64]!r}")
        resp.media = progress


class JobResultsResource:
    def __init__(self, jobs: JobStore | None):
        self._jobs = jobs

    def on_get(self, req: falcon.Request, resp: falcon.Response, job_id: str) -> None:
        rows = _enabled(self._jobs).rows(job_id) if is_request_id(job_id) else None
        if rows is None:
            raise falcon.HTTPNotFound(description=f"no job {job_id[:64]!r}")
        resp.content_type = "text/csv; charset=utf-8"
        resp.downloadable_as = f"{job_id}.csv"
        resp.stream = rows


def _enabled(jobs: JobStore | None) -> JobStore:
    if jobs is None:
        raise falcon.HTTPServiceUnavailable(description="batch jobs are not provisioned here")
    return jobs


def _form_entries(req: falcon.Request, limits) -> Iterator[Entry]:
    """Each file part of a multipart form, bounded like an archive member."""
    count = 0
    try:
        for part in req.get_media():
            if not part.filename:
                part.stream.read()  # skip other fields
                continue
            count += 1
            if count > limits.max_images:
                raise TooManyImages(
                    f"the form holds more than the {limits.max_images}-image limit of a job"
                )
            name, unsafe = archives.display_name(part.filename)
            data = part.stream.read(limits.max_image_bytes + 1)
            if unsafe:
                yield Entry(name, error=unsafe)
            elif len(data) > limits.max_image_bytes:
                part.stream.read()
                yield Entry(name, error=f"larger than the {limits.max_image_bytes}-byte limit")
            else:
                yield Entry(name, data=data)
    except falcon.MediaMalformedError:
        raise falcon.HTTPBadRequest(description="malformed multipart body") from None
