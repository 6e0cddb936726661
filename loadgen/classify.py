"""`python -m loadgen classify DIR --url URL --out results.csv`: a folder as one batch job.

The folder's images go into a tar written to a temporary file (never held in memory) and streamed
to POST /jobs; a progress bar follows GET /jobs/<id> until the job is done, then the job's CSV is
written to --out. Ctrl-C stops watching, not the job: the job id is printed to fetch it later.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

from tqdm import tqdm

from loadgen.client import USER_AGENT, Target, TargetError, check_reachable
from loadgen.inputs import IMAGE_SUFFIXES, InputError

PROG = "loadgen classify"
DEFAULT_URL = "http://127.0.0.1:3000"
EXIT_INPUT, EXIT_FAILED, EXIT_INTERRUPTED = 1, 3, 130


class JobError(RuntimeError):
    """The service refused or lost the job; the message is one line."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m {PROG}", description=__doc__.split("\n")[0])
    p.add_argument("folder", metavar="DIR", help="folder of images (searched recursively)")
    p.add_argument("--url", default=DEFAULT_URL, help=f"the service (default {DEFAULT_URL})")
    p.add_argument("--out", default="results.csv", help="CSV to write (default results.csv)")
    p.add_argument("--api-key", default="", help="the service's API key, if it has one")
    p.add_argument("--poll", type=float, default=1.0, help="seconds between progress reads")
    p.add_argument("--timeout", type=float, default=600.0, help="socket timeout (default 600)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        base = _base(args.url)
        images = _images(Path(args.folder))
        check_reachable(base, 5.0)
        with tempfile.TemporaryFile() as archive:
            _tar(images, Path(args.folder), archive)
            job = _submit(base, archive, args)
        print(f"{PROG}: job {job['id']}: {job['total']} files", file=sys.stderr)
        progress = _watch(base, job, args)
        rows = _download(base, job["id"], Path(args.out), args)
    except (InputError, TargetError, JobError, OSError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        print(f"{PROG}: stopped watching; the job runs on", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(
        f"{PROG}: {progress['done']} classified, {progress['failed']} failed; "
        f"{rows} rows written to {args.out}",
        file=sys.stderr,
    )
    return 0 if progress["failed"] == 0 else EXIT_FAILED


def _base(url: str) -> Target:
    target = Target.parse(url)
    path = urlsplit(url).path.rstrip("/")
    # Accept the upload URL too (…/upload): jobs live beside it.
    path = path.removesuffix("/upload")
    return Target(target.scheme, target.host, target.port, path)


def _images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise InputError(f"not a folder: {folder}")
    found = sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not found:
        raise InputError(f"no image files ({' '.join(sorted(IMAGE_SUFFIXES))}) in {folder}")
    return found


def _tar(images: list[Path], folder: Path, file) -> None:
    with tarfile.open(fileobj=file, mode="w") as archive:
        for path in images:
            archive.add(path, arcname=path.relative_to(folder).as_posix(), recursive=False)
    file.seek(0)


def _headers(args, extra: dict | None = None) -> dict:
    headers = {"User-Agent": USER_AGENT, "Accept": "application/json", **(extra or {})}
    if args.api_key:
        headers["X-Api-Key"] = args.api_key
    return headers


def _request(base: Target, method: str, path: str, args, body=None, headers=None):
    conn = base.connect(args.timeout)
    try:
        conn.request(method, base.path + path, body=body, headers=_headers(args, headers))
        response = conn.getresponse()
        return response, conn
    except BaseException:
        conn.close()
        raise


def _json(base: Target, method: str, path: str, args, body=None, headers=None) -> dict:
    response, conn = _request(base, method, path, args, body, headers)
    with contextlib.closing(conn):
        data = response.read()
    if response.status >= 300:
        raise JobError(f"{method} {path}: {response.status} {_reason(data)}")
    return json.loads(data)


def _reason(data: bytes) -> str:
    try:
        return json.loads(data).get("reason", "")
    except (ValueError, AttributeError):
        return data.decode("utf-8", "replace").strip()[:200]


def _submit(base: Target, archive, args) -> dict:
    size = archive.seek(0, 2)
    archive.seek(0)
    headers = {"Content-Type": "application/x-tar", "Content-Length": str(size)}
    return _json(base, "POST", "/jobs", args, body=archive, headers=headers)


def _watch(base: Target, job: dict, args) -> dict:
    with tqdm(total=job["total"], unit="img", desc="classify", file=sys.stderr) as bar:
        while True:
            progress = _json(base, "GET", f"/jobs/{job['id']}", args)
            finished = progress["done"] + progress["failed"]
            bar.update(finished - bar.n)
            eta = progress.get("eta_s")
            bar.set_postfix(
                failed=progress["failed"],
                rate=f"{progress['rate_per_s']:g}/s",
                eta="-" if eta is None else f"{eta:.0f}s",
                refresh=False,
            )
            if progress["state"] == "done":
                return progress
            time.sleep(args.poll)


def _download(base: Target, job_id: str, out: Path, args) -> int:
    response, conn = _request(base, "GET", f"/jobs/{job_id}/results.csv", args)
    with contextlib.closing(conn):
        if response.status != 200:
            raise JobError(f"results.csv: {response.status} {_reason(response.read())}")
        lines = 0
        with out.open("wb") as file:
            while chunk := response.read(64 * 1024):
                file.write(chunk)
                lines += chunk.count(b"\n")
    return max(lines - 1, 0)
