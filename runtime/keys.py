"""Where each object lives in the buckets: the one place a storage key is spelled.

The deployment's IAM policies grant these prefixes (deployment/iam.py builds its ARNs from
them), so a key moved here moves the grant with it.
"""

from __future__ import annotations

import re
import unicodedata

UPLOADS = "uploads/"  # input bucket: the uploaded bytes, one object per request id
RESULTS = "results/"  # output bucket: one JSON result per request id
CACHE = "cache/"  # output bucket: results by content hash, when the result cache is on
STARTED = "started/"  # output bucket: an asynchronous upload a worker has taken
JOBS = "jobs/"  # both buckets: a batch job's staged images, manifest and results
# Output bucket: what the scaler measured (boot times, throughput), kept across its restarts.
SCALER_ESTIMATES = "scaler/estimates.json"
# Input bucket: the model area, one package per `models/<name>/<version>/` (worker.package's
# files). Workers read it; only the operator writes it (deployment/iam.py).
MODELS = "models/"
# Beside a model's versions, `models/<name>/CURRENT`: an object whose body is the version its
# workers serve (a MODELS entry `s3://BUCKET/models/<name>/` follows it, worker.sources), as a
# symbolic link names its target. Upper case, as git's HEAD: it reads as no version's name.
MODEL_POINTER = "CURRENT"
# A version as a path segment of the model area and of the worker's cache: no '/', and no
# leading dot (so never `.` or `..`, which a local cache path would climb out of).
MODEL_VERSION = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")
# The service's own areas: a batch job may never name one as its source, however spelled.
SERVICE_AREAS = (UPLOADS, RESULTS, CACHE, STARTED, JOBS, MODELS)
# What expires after RESULT_EXPIRY_DAYS (runtime.resources), per bucket. The content cache does
# not: it belongs to no request, and an entry answers any later upload of the same bytes.
EXPIRING_INPUTS = (UPLOADS, JOBS)
EXPIRING_OUTPUTS = (RESULTS, STARTED, JOBS)
STAGED = "in/"  # under a job's prefix, input bucket: the images the web tier staged for it
MAX_PREFIX = 1024  # an S3 key's own limit, in characters here


def upload_key(request_id: str) -> str:
    return f"{UPLOADS}{request_id}"


def result_key(request_id: str) -> str:
    return f"{RESULTS}{request_id}.json"


def cache_key(model: str, version: str, preprocess: str, sha256: str) -> str:
    """Where a result is cached by content: the same bytes, model and model version give the
    same answer (a retrained model's new version never answers with the old one's results)."""
    return f"{CACHE}{model}/{version}/{preprocess}/{sha256}.json"


def model_package_prefix(name: str, version: str) -> str:
    """Where a model package lies in the input bucket's model area."""
    return f"{MODELS}{name}/{version}/"


def is_model_version(value: str) -> bool:
    return MODEL_VERSION.fullmatch(value) is not None


def model_area(name: str) -> str:
    """Every version of one model, and its pointer, lie under this prefix."""
    return f"{MODELS}{name}/"


def model_pointer_key(name: str) -> str:
    return f"{model_area(name)}{MODEL_POINTER}"


def followed_model(url: str) -> tuple[str, str] | None:
    """(bucket, model name) of a versionless `s3://BUCKET/models/NAME/` URL, which follows the
    pointer models/NAME/CURRENT; None for anything else (a version's prefix, a local path)."""
    bucket, prefix = split_s3_url(url) or ("", "")
    name = prefix[len(MODELS) : -1]
    if not bucket or not prefix.startswith(MODELS) or not name or "/" in name:
        return None
    return bucket, name


def split_s3_url(url: str) -> tuple[str, str] | None:
    """(bucket, prefix ending in '/') of an `s3://bucket/prefix/` URL; None for anything else
    (a MODELS entry that is a local path)."""
    if not url.startswith("s3://"):
        return None
    bucket, _, prefix = url[len("s3://") :].partition("/")
    if not bucket or not prefix.strip("/"):
        return None
    return bucket, prefix.rstrip("/") + "/"


def started_key(request_id: str) -> str:
    """Written by the worker when it takes an asynchronous upload: its state is `in progress`."""
    return f"{STARTED}{request_id}.json"


def job_prefix(job_id: str) -> str:
    """Everything of one batch job, in either bucket, lives under this prefix."""
    return f"{JOBS}{job_id}/"


def job_manifest_key(job_id: str) -> str:
    """The job as it was accepted (its total, source and creation time), in the output bucket:
    written last, so a job exists once it is whole (web.jobs.store)."""
    return f"{job_prefix(job_id)}job.json"


def job_outcome_prefix(job_id: str, ok: bool) -> str:
    """Where a job's finished images are listed: done/ or failed/, so progress is two listings."""
    return f"{job_prefix(job_id)}{'done' if ok else 'failed'}/"


def job_item_key(job_id: str, index: int, ok: bool) -> str:
    """One job image's result."""
    return f"{job_outcome_prefix(job_id, ok)}{index:07d}.json"


def staged_key(job_id: str, index: int) -> str:
    """A job image the web tier staged from an archive or a form: the only input of the job's
    own that a worker reads (anything else must lie under an allowed prefix)."""
    return f"{job_prefix(job_id)}{STAGED}{index:07d}"


class PrefixError(ValueError):
    """A job source prefix that is malformed or names a service area."""


_AREA_NAMES = frozenset(area.rstrip("/") for area in SERVICE_AREAS)


def source_prefix(raw: object) -> str:
    """`raw` as whole path segments ending in '/', the form every comparison uses.

    Why segments: S3 prefixes are plain string prefixes, so "jobs" (or "j") would list
    everything under "jobs/"; "albums/" lists only what lies under the folder "albums".
    """
    if not isinstance(raw, str) or not 0 < len(raw) <= MAX_PREFIX:
        raise PrefixError(f"must be a non-empty string of at most {MAX_PREFIX} characters")
    if raw.startswith("/") or "\\" in raw:
        raise PrefixError("must not start with '/' or hold a backslash")
    if any(unicodedata.category(ch)[0] == "C" for ch in raw):
        raise PrefixError("must not hold control characters")
    segments = raw.removesuffix("/").split("/")
    if any(segment in ("", ".", "..") for segment in segments):
        raise PrefixError("must not hold an empty, '.' or '..' segment")
    # Folded the way a person reads it: " Jobs" or full-width "ｊｏｂｓ" are refused too.
    if unicodedata.normalize("NFKC", segments[0]).strip().casefold() in _AREA_NAMES:
        raise PrefixError("names one of the service's own areas")
    return "/".join(segments) + "/"


def is_under(key: str, prefixes: tuple[str, ...]) -> bool:
    """Whether `key` lies under one of `prefixes` (each from source_prefix) as whole segments,
    with no empty, '.' or '..' segment of its own."""
    parts = key.split("/")
    if any(part in ("", ".", "..") for part in parts[:-1]) or parts[-1] in (".", ".."):
        return False
    return any(key.startswith(prefix) for prefix in prefixes)
