"""A model package in S3 (a MODELS entry `NAME=s3://BUCKET/PREFIX/`, in a stack the input
bucket's model area `models/<name>/<version>/`): copied once into MODEL_CACHE_DIR, then loaded
like any package (worker.package checks its SHA-256, so a copy that changed is fetched again)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from runtime.failures import describe, is_not_found
from runtime.keys import split_s3_url
from worker.exported import REFERENCE
from worker.package import ARTEFACT, LABELS, MANIFEST, PackageError, load_package

FILES = (MANIFEST, LABELS, ARTEFACT, REFERENCE)


def fetch_package(s3, url: str, cache_dir: Path) -> Path:
    """The local copy of the package at `url`; PackageError with one line when it cannot be."""
    bucket, prefix = split_s3_url(url) or ("", "")
    if not bucket:
        raise PackageError(f"{url} is not s3://BUCKET/PREFIX/")
    local = Path(cache_dir) / "s3" / bucket / prefix
    try:
        load_package(local)
        return local  # fetched before and whole
    except PackageError:
        pass
    local.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=local.parent, prefix=f".{local.name}-"))
    try:
        for name in FILES:
            try:
                s3.download_file(bucket, prefix + name, str(work / name))
            except Exception as error:  # noqa: BLE001 - boto3 raises several kinds
                reason = (
                    "does not exist"
                    if is_not_found(error)
                    else f"cannot be read: {describe(error)}"
                )
                raise PackageError(f"s3://{bucket}/{prefix}{name} {reason}") from None
        load_package(work)  # checked before it replaces anything
        shutil.rmtree(local, ignore_errors=True)
        work.rename(local)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return local
