"""Batch jobs: many images staged in S3, one message each on the job lane, results by index.

A job lives under `jobs/<id>/` in both buckets: the staged images (`in/<index>`) in the input
bucket; the manifest (`job.json`) and one result per image (`done/<index>.json` or
`failed/<index>.json`) in the output bucket. Progress is two listings, and an image delivered twice
rewrites the same key, so nothing here needs a database.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
import unicodedata
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ClientError

from runtime import keys
from runtime.failures import is_not_found
from runtime.keys import (
    job_item_key,
    job_manifest_key,
    job_outcome_prefix,
    job_prefix,
    staged_key,
)
from runtime.messages import Request, Result
from runtime.sqs import chunks
from web.errors import JobRefused, PrefixNotAllowed, TooManyImages, Unavailable
from web.guards import Backlog
from web.jobs.archives import Entry

log = logging.getLogger(__name__)

RATE_WINDOW_S = 60.0  # the per-second rate is over the last minute (or the job's age)
IN_FLIGHT_PUTS = 16  # staged images in memory at once, at most
_CSV_CHUNK = 64
_FORMULA_PEEK = 64  # a formula hides behind this many leading characters, at most


@dataclass(frozen=True)
class JobLimits:
    max_images: int
    max_image_bytes: int
    prefixes: tuple[str, ...] = ()  # Settings.job_source_prefixes: empty, prefix jobs are off
    max_inflated_bytes: int | None = None  # an archive's bounds (web.jobs.members.Inflation)
    max_ratio: float | None = None


class JobStore:
    def __init__(
        self,
        *,
        s3,
        sqs,
        input_bucket: str,
        output_bucket: str,
        job_queue_url: str,
        limits: JobLimits,
        check_image: Callable[[bytes], str],
        deadline_s: float,
        uuidgen: Callable[[], uuid.UUID] = uuid.uuid4,
        clock: Callable[[], float] = time.time,
        backlog: Backlog | None = None,
        accepted: Callable[[], None] = lambda: None,  # a job was queued (the scaler's wake)
    ):
        self._s3, self._sqs = s3, sqs
        self._backlog = backlog  # the job lane's own bound (JOB_MAX_BACKLOG), beside uploads'
        self._accepted = accepted
        self._input, self._output = input_bucket, output_bucket
        self._queue_url = job_queue_url
        self.limits = limits
        self._check_image = check_image  # the upload checks: '' or why the bytes are refused
        self._deadline_s = deadline_s
        self._uuidgen, self._clock = uuidgen, clock
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="jobs")

    # Creating a job ------------------------------------------------------------------------

    def admit(self) -> None:
        """Overloaded (503) while the job lane holds more than JOB_MAX_BACKLOG images: checked
        before a body is read. A job admitted adds at most JOB_MAX_IMAGES."""
        if self._backlog is not None:
            self._backlog.check()

    def from_entries(self, entries: Iterable[Entry], source: str, model: str = "") -> dict:
        """Stage every good entry in the input bucket, then queue them all (or none); each
        image is classified by `model` ("" = the default)."""
        job_id = self._uuidgen().hex
        items, rejected, staged = [], [], deque()
        try:
            for index, entry in enumerate(entries):
                error = entry.error or self._check_image(entry.data)
                if error:
                    rejected.append(self._failure(index, entry.name, error))
                    continue
                key = staged_key(job_id, index)
                items.append(self._item(job_id, index, key, entry.name, model))
                staged.append(self._pool.submit(self._put, self._input, key, entry.data))
                while len(staged) > IN_FLIGHT_PUTS:
                    staged.popleft().result()
            for future in staged:
                future.result()
        except Exception:  # refused or failed part way: nothing of it stays
            for future in staged:  # let the puts in flight land, so that they are discarded too
                future.exception()
            self._discard(job_id)
            raise
        return self._start(job_id, source, items, rejected)

    def from_prefix(self, raw: object, model: str = "") -> dict:
        """Every object under `raw`, a folder the operator allows, in the input bucket; nothing
        is copied."""
        prefix = self._allowed_prefix(raw)
        with _aws("list the prefix"):
            objects = self._list(self._input, prefix, self.limits.max_images)
        if not objects:
            raise JobRefused(f"no objects under {prefix[:64]!r} in the input bucket")
        job_id = self._uuidgen().hex
        items, rejected = [], []
        for index, (key, size, _) in enumerate(objects):
            name = key[len(prefix) :]
            if not keys.is_under(key, (prefix,)):  # the worker would refuse it likewise
                rejected.append(self._failure(index, name, "unsafe object key (with '..' or '//')"))
            elif size > self.limits.max_image_bytes:
                limit = self.limits.max_image_bytes
                rejected.append(self._failure(index, name, f"larger than the {limit}-byte limit"))
            else:
                items.append(self._item(job_id, index, key, name, model))
        return self._start(job_id, f"s3:{prefix}", items, rejected)

    def _allowed_prefix(self, raw: object) -> str:
        allowed = self.limits.prefixes
        if not allowed:
            raise PrefixNotAllowed(
                "prefix jobs are off here (the operator allows them in JOB_PREFIXES)"
            )
        try:
            prefix = keys.source_prefix(raw)
        except keys.PrefixError as error:
            shown = raw[:64] if isinstance(raw, str) else type(raw).__name__
            raise JobRefused(f"'prefix' {shown!r} {error}") from None
        if not keys.is_under(prefix, allowed):
            raise PrefixNotAllowed(
                f"prefix {prefix[:64]!r} is not under one that JOB_PREFIXES allows"
            )
        return prefix

    def _item(self, job_id: str, index: int, key: str, name: str, model: str) -> Request:
        return Request(
            id=self._uuidgen().hex,
            key=key,
            filename=name,
            reply_to="",
            deadline=self._clock() + self._deadline_s,
            job=job_id,
            index=index,
            model=model,
        )

    def _failure(self, index: int, name: str, error: str) -> tuple[int, Result]:
        return index, Result(id=self._uuidgen().hex, filename=name, error=error)

    def _start(self, job_id: str, source: str, items: list, rejected: list) -> dict:
        total = len(items) + len(rejected)
        if total == 0:
            raise JobRefused("the job holds no files")
        manifest = {
            "id": job_id,
            "created": self._clock(),
            "source": source,
            "total": total,
            "rejected": len(rejected),
        }
        # Whole or not at all: the manifest goes last, and a job is found only by it. Anything
        # failing before it discards what was written; a queued image whose staged input is gone
        # and whose job has no manifest is dropped by the worker (worker.stages.fetch).
        writes = [
            self._pool.submit(
                self._put, self._output, job_item_key(job_id, i, False), r.encode().encode()
            )
            for i, r in rejected
        ]
        writes += [self._pool.submit(self._send, chunk) for chunk in chunks(items)]
        try:
            for future in writes:
                future.result()
            self._put(self._output, job_manifest_key(job_id), json.dumps(manifest).encode())
        except Exception:
            for future in writes:  # let the writes in flight land, so that they are discarded too
                future.exception()
            self._discard(job_id)
            raise
        log.info(
            "job %s: %d images queued, %d refused (%s)", job_id, len(items), len(rejected), source
        )
        if items:
            self._accepted()
        return manifest

    def _put(self, bucket: str, key: str, body: bytes) -> None:
        try:
            self._s3.put_object(Bucket=bucket, Key=key, Body=body)
        except Exception as error:  # noqa: BLE001 - any AWS failure: the client may retry
            raise Unavailable(f"could not store the job: {type(error).__name__}") from error

    def _send(self, batch: list[Request]) -> None:
        entries = [{"Id": str(i), "MessageBody": r.encode()} for i, r in enumerate(batch)]
        try:
            response = self._sqs.send_message_batch(QueueUrl=self._queue_url, Entries=entries)
        except Exception as error:  # noqa: BLE001
            raise Unavailable(f"could not queue the job: {type(error).__name__}") from error
        if response.get("Failed"):
            raise Unavailable(f"could not queue {len(response['Failed'])} of the job's images")

    def _discard(self, job_id: str) -> None:
        """Everything of the job in both buckets. Best effort: the lifecycle rule removes
        whatever is left, and without a manifest nothing of it is ever shown."""
        for bucket in (self._input, self._output):
            try:
                keys = [key for key, _, _ in self._list(bucket, job_prefix(job_id), None)]
                for start in range(0, len(keys), 1000):
                    objects = [{"Key": key} for key in keys[start : start + 1000]]
                    self._s3.delete_objects(Bucket=bucket, Delete={"Objects": objects})
            except Exception as error:  # noqa: BLE001
                log.warning("could not discard job %s (%s)", job_id, type(error).__name__)

    # Reading a job -------------------------------------------------------------------------

    def progress(self, job_id: str) -> dict | None:
        manifest = self._manifest(job_id)
        if manifest is None:
            return None
        with _aws("read the job's progress"):
            finished = {
                ok: self._list(self._output, job_outcome_prefix(job_id, ok)) for ok in (True, False)
            }
        done, failed = len(finished[True]), len(finished[False])
        now = self._clock()
        window = min(RATE_WINDOW_S, max(now - manifest["created"], 1.0))
        recent = sum(
            1 for listing in finished.values() for _, _, at in listing if at >= now - window
        )
        rate = recent / window
        left = manifest["total"] - done - failed
        return {
            **manifest,
            "state": "done" if left <= 0 else ("running" if done + failed else "queued"),
            "done": done,
            "failed": failed,
            "rate_per_s": round(rate, 3),
            "eta_s": 0.0 if left <= 0 else (round(left / rate, 1) if rate else None),
        }

    def rows(self, job_id: str) -> Iterator[bytes] | None:
        """The CSV, header first, then one row per finished image in the job's order: every
        result listed is a row. AWS failing before the first rows are read is Unavailable (a
        503 to retry); a result that cannot be read later is a row that says so."""
        if self._manifest(job_id) is None:
            return None
        with _aws("list the job's results"):
            keys = [
                key
                for ok in (True, False)
                for key, _, _ in self._list(self._output, job_outcome_prefix(job_id, ok))
            ]
        keys.sort(key=lambda key: key.rsplit("/", 1)[-1])
        first = list(self._pool.map(self._row, keys[:_CSV_CHUNK]))
        if any(isinstance(row, Exception) for row in first):
            raise Unavailable("could not read the job's results: try again")
        return self._csv(first, keys[_CSV_CHUNK:])

    def _csv(self, first: list, rest: list[str]) -> Iterator[bytes]:
        yield _csv_line(["filename", "label", "score", "error", "model", "version"])
        for row in first:
            yield _csv_line(row)
        for start in range(0, len(rest), _CSV_CHUNK):
            chunk = rest[start : start + _CSV_CHUNK]
            for key, row in zip(chunk, self._pool.map(self._row, chunk), strict=True):
                if isinstance(row, Exception):  # the status is sent: say so in the row
                    index = key.rsplit("/", 1)[-1].removesuffix(".json")
                    why = f"result {index} could not be read ({type(row).__name__}): try again"
                    row = ["", "", "", why, "", ""]
                yield _csv_line(row)

    def _row(self, key: str) -> list | Exception:
        try:
            body = self._s3.get_object(Bucket=self._output, Key=key)["Body"].read()
            result = Result.decode(body.decode())
        except Exception as error:  # noqa: BLE001 - the caller decides: a 503 or a row
            log.warning("could not read job result %s (%s)", key, type(error).__name__)
            return error
        score = result.top5[0].get("score", "") if result.top5 else ""
        return [result.filename, result.label, score, result.error, result.model, result.version]

    def _manifest(self, job_id: str) -> dict | None:
        try:
            body = self._s3.get_object(Bucket=self._output, Key=job_manifest_key(job_id))
            return json.loads(body["Body"].read())
        except ClientError as error:
            if is_not_found(error):
                return None
            raise Unavailable(f"could not read the job: {type(error).__name__}") from error
        except Exception as error:  # noqa: BLE001 - AWS away: a 503 to retry, never a 500
            raise Unavailable(f"could not read the job: {type(error).__name__}") from error

    def _list(self, bucket: str, prefix: str, limit: int | None = None) -> list[tuple]:
        """(key, size, last-modified epoch s) of the objects under prefix; over `limit`: refused."""
        found = []
        for page in self._s3.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix
        ):
            for obj in page.get("Contents", []):
                if obj["Key"].endswith("/"):
                    continue  # a console "folder" marker
                found.append((obj["Key"], obj["Size"], obj["LastModified"].timestamp()))
                if limit is not None and len(found) > limit:
                    raise TooManyImages(f"more than the {limit}-image limit of a job")
        return found


@contextmanager
def _aws(what: str) -> Iterator[None]:
    """AWS failing while the store reads: Unavailable (503 with Retry-After), never a 500."""
    try:
        yield
    except (ClientError, BotoCoreError) as error:
        raise Unavailable(f"could not {what}: {type(error).__name__}") from error


def _csv_line(fields: list) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer).writerow([_neutral(field) for field in fields])
    return buffer.getvalue().encode()


_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _neutral(value: object) -> object:
    """A filename that starts like a formula must not run as one in a spreadsheet."""
    if isinstance(value, str) and _starts_like_formula(value):
        return "'" + value
    return value


def _starts_like_formula(value: str) -> bool:
    # Spreadsheets skip leading spaces and fold full-width forms ("＝"), so the check does too:
    # NFKC turns NBSP, the other Unicode spaces and full-width signs into their ASCII forms.
    if value[:1] in _FORMULA_STARTS:
        return True
    for ch in unicodedata.normalize("NFKC", value[:_FORMULA_PEEK]):
        if not (ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf", "Zs")):
            return ch in _FORMULA_STARTS  # the first visible character decides
    return False
