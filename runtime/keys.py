"""Where each object lives in the buckets: the one place a storage key is spelled.

The deployment's IAM policies grant these prefixes (deployment/iam.py builds its ARNs from
them), so a key moved here moves the grant with it.
"""

from __future__ import annotations

UPLOADS = "uploads/"  # input bucket: the uploaded bytes, one object per request id
RESULTS = "results/"  # output bucket: one JSON result per request id
CACHE = "cache/"  # output bucket: results by content hash, when the result cache is on


def upload_key(request_id: str) -> str:
    return f"{UPLOADS}{request_id}"


def result_key(request_id: str) -> str:
    return f"{RESULTS}{request_id}.json"


def cache_key(model: str, preprocess: str, sha256: str) -> str:
    """Where a result is cached by content: the same bytes and model give the same answer."""
    return f"{CACHE}{model}/{preprocess}/{sha256}.json"
