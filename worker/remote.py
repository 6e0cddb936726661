"""A model package in S3 (a MODELS entry `NAME=s3://BUCKET/PREFIX/`, in a stack the input
bucket's model area `models/<name>/<version>/`): copied once into MODEL_CACHE_DIR, then loaded
like any package (worker.package checks its SHA-256, so a copy that changed is fetched again).

Publishing a version (`python -m worker.models publish`) points the model's pointer,
`models/<name>/CURRENT`, at a version whose package is there and whole; the workers that follow
it (worker.sources) switch to it."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from runtime.failures import describe, is_not_found
from runtime.keys import (
    followed_model,
    is_model_version,
    model_package_prefix,
    model_pointer_key,
    split_s3_url,
)
from runtime.messages import is_model_name
from worker.exported import REFERENCE
from worker.package import (
    ARTEFACT,
    LABELS,
    MANIFEST,
    ModelPackage,
    PackageError,
    Unreadable,
    load_package,
)

FILES = (MANIFEST, LABELS, ARTEFACT, REFERENCE)


def fetch_package(s3, url: str, cache_dir: Path) -> Path:
    """The local copy of the package at `url`; PackageError with one line when it cannot be
    (Unreadable when S3 did not answer: it may later)."""
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
        _download(s3, bucket, prefix, work)
        load_package(work)  # checked before it replaces anything
        shutil.rmtree(local, ignore_errors=True)
        work.rename(local)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return local


def _download(s3, bucket: str, prefix: str, work: Path) -> None:
    for name in FILES:
        try:
            s3.download_file(bucket, prefix + name, str(work / name))
        except Exception as error:  # noqa: BLE001 - boto3 raises several kinds
            where = f"s3://{bucket}/{prefix}{name}"
            if is_not_found(error):
                raise PackageError(f"{where} does not exist") from None
            raise Unreadable(f"{where} cannot be read: {describe(error)}") from None


def publish(s3, url: str, version: str) -> tuple[ModelPackage, str]:
    """Point the versionless `url` (s3://BUCKET/models/NAME/) at `version`, once the package at
    models/NAME/<version>/ is there and whole: every file, a sound manifest naming NAME and
    `version`, labels, and the artefact its SHA-256 says. Running the network is each worker's
    check, on its own runtime and CPU. Returns (the package, the version the pointer named
    before: '' if none); PackageError with one line, and nothing written, when it is refused."""
    followed = followed_model(url)
    if followed is None:
        raise PackageError(f"{url} is not s3://BUCKET/models/NAME/ (a model, not a version)")
    bucket, name = followed
    if not is_model_name(name):
        raise PackageError(f"{name[:64]!r} is not a model name (lowercase letters, digits, . _ -)")
    if not is_model_version(version):
        raise PackageError(
            f"--version {version[:64]!r} is not a version (letters, digits, . _ -; no leading .)"
        )
    prefix = model_package_prefix(name, version)
    with tempfile.TemporaryDirectory(prefix="publish-") as work:
        _download(s3, bucket, prefix, Path(work))
        package = load_package(work)
    manifest = package.manifest
    if (manifest.name, manifest.version) != (name, version):
        raise PackageError(
            f"s3://{bucket}/{prefix} holds {manifest.name} version {manifest.version},"
            f" not {name} version {version}"
        )
    key = model_pointer_key(name)
    try:
        before = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode().strip()
    except Exception as error:  # noqa: BLE001 - boto3 raises several kinds
        if not is_not_found(error):
            raise Unreadable(f"s3://{bucket}/{key} cannot be read: {describe(error)}") from None
        before = ""
    try:
        s3.put_object(
            Bucket=bucket, Key=key, Body=f"{version}\n".encode(), ContentType="text/plain"
        )
    except Exception as error:  # noqa: BLE001
        raise PackageError(f"s3://{bucket}/{key} cannot be written: {describe(error)}") from None
    return package, before
