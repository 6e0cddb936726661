"""Where each object lives in the buckets: the one place a storage key is spelled.

The deployment's IAM policies grant these prefixes (deployment/iam.py builds its ARNs from
them), so a key moved here moves the grant with it.
"""

from __future__ import annotations

UPLOADS = "uploads/"  # input bucket: the uploaded bytes, one object per request id
RESULTS = "results/"  # output bucket: one JSON result per request id
CACHE = "cache/"  # output bucket: results by content hash, when the result cache is on
STARTED = "started/"  # output bucket: an asynchronous upload a worker has taken
JOBS = "jobs/"  # both buckets: a batch job's staged images, manifest and results


def upload_key(request_id: str) -> str:
    return f"{UPLOADS}{request_id}"


def result_key(request_id: str) -> str:
    return f"{RESULTS}{request_id}.json"


def cache_key(model: str, preprocess: str, sha256: str) -> str:
    """Where a result is cached by content: the same bytes and model give the same answer."""
    return f"{CACHE}{model}/{preprocess}/{sha256}.json"


def started_key(request_id: str) -> str:
    """Written by the worker when it takes an asynchronous upload: its state is `in progress`."""
    return f"{STARTED}{request_id}.json"


def job_prefix(job_id: str) -> str:
    """Everything of one batch job, in either bucket, lives under this prefix."""
    return f"{JOBS}{job_id}/"


def job_item_key(job_id: str, index: int, ok: bool) -> str:
    """One job image's result: under done/ or failed/, so progress is two listings."""
    return f"{job_prefix(job_id)}{'done' if ok else 'failed'}/{index:07d}.json"
