"""The batch-job endpoints: POST /jobs, GET /jobs/<id>, GET /jobs/<id>/results.csv.

POST /jobs takes one of three bodies: a zip or tar archive (any Content-Type but the two below),
a multipart form of image files (the page's folder upload), or JSON `{"prefix": "..."}` naming
objects already in the input bucket. An archive is spooled to a temporary file (its members are
read back one at a time), so the web tier never holds a whole archive in memory.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator

import falcon

from runtime.messages import is_request_id
from web.errors import TooManyImages
from web.guards import MODEL_FIELD, JobRate, UploadMemory, chosen_model
from web.jobs import archives
from web.jobs.archives import Entry
from web.jobs.store import IN_FLIGHT_PUTS, JobStore

_CHUNK = 1024 * 1024
MAX_FIELD_BYTES = 64 * 1024  # a JSON body, or a form field that is not a file


class JobsResource:
    def __init__(
        self,
        jobs: JobStore | None,
        max_archive_bytes: int,
        memory: UploadMemory | None = None,
        models: tuple[str, ...] = (),
        rate: JobRate | None = None,
    ):
        self._jobs = jobs
        self._rate = rate
        self._max_archive_bytes = max_archive_bytes
        self._memory = memory
        self._models = models  # what `?model=` may name (Settings.model_names)

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        jobs = _enabled(self._jobs)
        if self._rate is None:
            return self._create(req, resp, jobs)
        self._rate.take(req)  # 429 past JOB_RATE_PER_MIN, before the body is read
        try:
            return self._create(req, resp, jobs)
        except BaseException:
            self._rate.give_back(req)  # no job was created: it does not count
            raise

    def _create(self, req: falcon.Request, resp: falcon.Response, jobs: JobStore) -> None:
        jobs.admit()  # 503 past JOB_MAX_BACKLOG
        model = chosen_model(req.get_param(MODEL_FIELD) or "", self._models)
        content_type = req.content_type or ""
        if content_type.startswith("application/json"):
            manifest = jobs.from_prefix(_json_prefix(req), model)
        elif content_type.startswith("multipart/form-data"):
            self._hold(req, jobs, req.content_length)
            manifest = jobs.from_entries(_form_entries(req, jobs.limits), "form", model)
        else:
            with self._spooled(req) as file:
                self._hold(req, jobs, None)  # members inflate: the body bounds nothing
                limits = jobs.limits
                found = archives.entries(
                    file,
                    max_images=limits.max_images,
                    max_bytes=limits.max_image_bytes,
                    max_inflated_bytes=limits.max_inflated_bytes,
                    max_ratio=limits.max_ratio,
                )
                manifest = jobs.from_entries(found, "archive", model)
        resp.status = falcon.HTTP_202
        resp.location = f"/jobs/{manifest['id']}"
        resp.media = {
            **manifest,
            "location": resp.location,
            "results": f"{resp.location}/results.csv",
        }

    def _hold(self, req: falcon.Request, jobs: JobStore, body_bytes: int | None) -> None:
        """Count the job's images in memory against the uploads' budget (web.guards.UploadMemory):
        the one being read and those being staged, never more than a form's body itself."""
        if self._memory is not None:
            working_set = (IN_FLIGHT_PUTS + 1) * jobs.limits.max_image_bytes
            self._memory.take(req, min(working_set, body_bytes or working_set))

    def _spooled(self, req: falcon.Request):
        if req.content_length and req.content_length > self._max_archive_bytes:
            raise falcon.HTTPContentTooLarge(description=self._too_large())
        file, size = _server_spool(req)
        if file is None:  # a server that streams the body: spool it once here
            file, size = tempfile.TemporaryFile(), 0  # noqa: SIM115 - returned to a with-block
            while chunk := req.bounded_stream.read(_CHUNK):
                size += len(chunk)
                if size > self._max_archive_bytes:
                    break
                file.write(chunk)
        if size > self._max_archive_bytes:
            file.close()
            raise falcon.HTTPContentTooLarge(description=self._too_large())
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


def _server_spool(req: falcon.Request):
    """(file, size) of the body as the server spooled it (Waitress: memory, then a temporary
    file), read in place rather than copied to a second file; (None, 0) if not seekable."""
    stream = req.stream
    if not (hasattr(stream, "seekable") and stream.seekable()):
        return None, 0
    stream.seek(0, 2)
    size = stream.tell()
    stream.seek(0)
    if size != (req.content_length or 0):  # not the body alone: copy it instead
        return None, 0
    return stream, size


def _json_prefix(req: falcon.Request) -> object:
    """The "prefix" of a JSON body of at most MAX_FIELD_BYTES, read no further than that."""
    if req.content_length and req.content_length > MAX_FIELD_BYTES:
        raise _field_too_large("the JSON body")
    raw = req.bounded_stream.read(MAX_FIELD_BYTES + 1)
    if len(raw) > MAX_FIELD_BYTES:
        raise _field_too_large("the JSON body")
    try:
        body = json.loads(raw)
    except ValueError:
        raise falcon.HTTPBadRequest(description="the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise falcon.HTTPBadRequest(description='the JSON body must be {"prefix": "..."}')
    return body.get("prefix")


def _field_too_large(what: str) -> falcon.HTTPContentTooLarge:
    return falcon.HTTPContentTooLarge(description=f"{what} is larger than {MAX_FIELD_BYTES} bytes")


def _drain(stream) -> None:
    while stream.read(_CHUNK):
        pass


def _form_entries(req: falcon.Request, limits) -> Iterator[Entry]:
    """Each file part of a multipart form, bounded like an archive member."""
    count = 0
    try:
        for part in req.get_media():
            if not part.filename:  # another field: skipped, never held past the cap
                if len(part.stream.read(MAX_FIELD_BYTES + 1)) > MAX_FIELD_BYTES:
                    raise _field_too_large(f"form field {part.name[:64]!r}")
                continue
            count += 1
            if count > limits.max_images:
                raise TooManyImages.limit(limits.max_images, "form")
            name, unsafe = archives.display_name(part.filename)
            data = part.stream.read(limits.max_image_bytes + 1)
            if unsafe:
                yield Entry(name, error=unsafe)
            elif len(data) > limits.max_image_bytes:
                _drain(part.stream)
                yield Entry(name, error=f"larger than the {limits.max_image_bytes}-byte limit")
            else:
                yield Entry(name, data=data)
    except falcon.MediaMalformedError:
        raise falcon.HTTPBadRequest(description="malformed multipart body") from None
