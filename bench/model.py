"""The physical limit: the bare model on prepared 224x224 tensors, nothing else.

Run in its own process (`python -m bench.model`), pinned with taskset by the harness, so its
thread count and cores are exactly those of the worker it is compared with. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BARRIER_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class ModelTiming:
    threads: int
    cpus: tuple[int, ...]
    img_s: dict[int, float]  # batch size -> median images per second
    cpu_ms: dict[int, float]  # batch size -> median CPU milliseconds per image (all threads)
    bs1_ms: float  # median latency of one batch-1 call
    decode_cpu_ms: float  # median CPU milliseconds to decode and preprocess one sample photo
    # The same for 12 MP phone photos, as the worker decodes them and decoding every pixel
    # (empty when the run was given no phone photos).
    phone_decode_cpu_ms: dict[str, float]
    runtime: str = "torch"  # what ran the model (MODEL_RUNTIME's choice, or the one asked for)
    # Of the sample and phone photos, the fraction whose top-1 on this runtime's worker path
    # equals PyTorch fp32's on today's (None: not measured in this run).
    top1_agreement: float | None = None

    @property
    def best_batch(self) -> int:
        return max(self.img_s, key=self.img_s.get)

    @property
    def best_img_s(self) -> float:
        return self.img_s[self.best_batch]


def measure(
    cpus: tuple[int, ...],
    threads: int,
    batches: tuple[int, ...],
    reps: int,
    min_s: float,
    phones: Path | None = None,
    runtime: str | None = None,
) -> ModelTiming:
    """Time the model in a fresh process on `cpus` with `threads` intra-op threads; with
    `phones` (a directory of phone photos) time their decoding too and measure the top-1
    agreement with PyTorch fp32. runtime: None, the one MODEL_RUNTIME picks."""
    (timing,) = measure_side_by_side([cpus], threads, batches, reps, min_s, phones, runtime)
    return timing


def by_runtime(
    cpus: tuple[int, ...],
    batches: tuple[int, ...],
    reps: int,
    min_s: float,
    measured: ModelTiming,
) -> dict[str, float]:
    """The bare model's CPU ms per image at its best pass size, one thread, for PyTorch (jit)
    and each ONNX runtime installed; `measured` is reused for its own runtime."""
    from worker.served import ONNX_RUNTIMES, available

    cpu_ms = {measured.runtime: measured.cpu_ms[measured.best_batch]}
    for runtime in ("torch", *(r for r in ONNX_RUNTIMES if available(r))):
        if runtime not in cpu_ms:
            timing = measure(cpus, 1, batches, reps, min_s, runtime=runtime)
            cpu_ms[runtime] = timing.cpu_ms[timing.best_batch]
    return cpu_ms


def measure_side_by_side(
    placements: list[tuple[int, ...]],
    threads: int,
    batches: tuple[int, ...],
    reps: int,
    min_s: float,
    phones: Path | None = None,
    runtime: str | None = None,
) -> list[ModelTiming]:
    """One model process per placement, all timing at once (they start behind a barrier)."""
    with tempfile.TemporaryDirectory(prefix="bench-barrier-") as barrier:
        processes = [
            subprocess.Popen(
                [
                    *taskset(cpus),
                    sys.executable,
                    "-m",
                    "bench.model",
                    f"--threads={threads}",
                    f"--batches={','.join(map(str, batches))}",
                    f"--reps={reps}",
                    f"--min-s={min_s}",
                    f"--barrier={barrier}",
                    f"--peers={len(placements)}",
                    *([f"--phones={phones}"] if phones else []),
                    *([f"--runtime={runtime}"] if runtime else []),
                ],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for cpus in placements
        ]
        outputs = []
        try:
            for process in processes:
                stdout, stderr = process.communicate(timeout=600)
                if process.returncode != 0:
                    raise RuntimeError(
                        f"bench.model failed ({process.returncode}): {stderr.strip()[-500:]}"
                    )
                outputs.append(json.loads(stdout.strip().splitlines()[-1]))
        finally:
            for process in processes:
                if process.poll() is None:
                    process.kill()
                    process.wait()
    return [
        ModelTiming(
            threads=threads,
            cpus=cpus,
            img_s={int(b): rate for b, rate in out["img_s"].items()},
            cpu_ms={int(b): ms for b, ms in out["cpu_ms"].items()},
            bs1_ms=out["bs1_ms"],
            decode_cpu_ms=out["decode_cpu_ms"],
            phone_decode_cpu_ms=out.get("phone_decode_cpu_ms", {}),
            runtime=out["runtime"],
            top1_agreement=out.get("top1_agreement"),
        )
        for cpus, out in zip(placements, outputs, strict=True)
    ]


def taskset(cpus: tuple[int, ...]) -> list[str]:
    return ["taskset", "-c", ",".join(map(str, cpus))]


def sample_photos() -> list[bytes]:
    return [path.read_bytes() for path in sorted((ROOT / "images").glob("*.jpg"))]


def prepared_tensors(classifier, photos: list[bytes]) -> list:
    """The real photos, decoded and preprocessed exactly as the worker does it."""
    return [classifier.prepare(_decode(classifier, data)) for data in photos]


def _decode(classifier, data: bytes, full: bool = False):
    from worker.imaging import decode

    min_side = None if full else classifier.min_side
    return decode(data, min_side=min_side, output=getattr(classifier, "pixels", "tensor"))


def top1_agreement(classifier, photos: list[bytes]) -> float:
    """Of `photos`, the fraction whose top-1 through `classifier` (the worker's decode and
    preprocessing for it) equals PyTorch fp32's through today's path (eager, torch transforms)."""
    from worker.models import load_classifier

    exact = load_classifier(classifier.name, optimize="eager", runtime="torch")
    ours = classifier.classify(prepared_tensors(classifier, photos))
    theirs = exact.classify(prepared_tensors(exact, photos))
    return sum(a[0][0] == b[0][0] for a, b in zip(ours, theirs, strict=True)) / len(photos)


def time_decode(classifier, photos: list[bytes], reps: int, full: bool = False) -> float:
    """Median CPU milliseconds per photo of the worker's decode + preprocess (outside the model);
    `full`: decoding every pixel, as the worker did before it decoded at the model's size."""
    per_photo = []
    for _ in range(max(reps, 3)):
        started = time.process_time()
        for data in photos:
            classifier.prepare(_decode(classifier, data, full))
        per_photo.append((time.process_time() - started) * 1e3 / len(photos))
    return statistics.median(per_photo)


def time_batches(classifier, tensors, batches, reps: int, min_s: float, ready=None) -> dict:
    for size in batches:  # first calls pay for oneDNN's kernel selection: not the model's rate
        for _ in range(2):
            classifier.classify(_batch(tensors, size))
    if ready is not None:
        ready()
    rates: dict[int, list[float]] = {size: [] for size in batches}
    cpu_ms: dict[int, list[float]] = {size: [] for size in batches}
    bs1: list[float] = []
    # Repetitions outermost: a noisy moment on a shared machine hurts one rep of each size,
    # not every rep of one size.
    for _ in range(reps):
        for size in batches:
            batch = _batch(tensors, size)
            calls, started, cpu_started = 0, time.perf_counter(), time.process_time()
            while True:
                call = time.perf_counter()
                classifier.classify(batch)
                now = time.perf_counter()
                if size == 1:
                    bs1.append(now - call)
                calls += 1
                if now - started >= min_s and calls >= 2:
                    break
            rates[size].append(calls * size / (now - started))
            cpu_ms[size].append((time.process_time() - cpu_started) * 1e3 / (calls * size))
    if not bs1:
        for _ in range(5):
            call = time.perf_counter()
            classifier.classify(_batch(tensors, 1))
            bs1.append(time.perf_counter() - call)
    return {
        "img_s": {size: statistics.median(r) for size, r in rates.items()},
        "cpu_ms": {size: statistics.median(c) for size, c in cpu_ms.items()},
        "bs1_ms": statistics.median(bs1) * 1e3,
    }


def _batch(tensors, size: int) -> list:
    return [tensors[i % len(tensors)] for i in range(size)]


def wait_for_peers(directory: str, peers: int) -> None:
    """Say this process is ready, then wait until `peers` processes are."""
    Path(directory, f"ready-{os.getpid()}").touch()
    deadline = time.monotonic() + BARRIER_TIMEOUT_S
    while len(list(Path(directory).glob("ready-*"))) < peers:
        if time.monotonic() > deadline:
            raise TimeoutError("the other model processes never became ready")
        time.sleep(0.01)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.model", description=__doc__)
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batches", default="1,2,4,8")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--min-s", type=float, default=0.5, help="least seconds per timing")
    parser.add_argument("--barrier", help="directory where side-by-side runs meet before timing")
    parser.add_argument("--peers", type=int, default=1, help="processes meeting at the barrier")
    parser.add_argument("--phones", help="directory of phone photos whose decoding is timed too")
    parser.add_argument("--runtime", help="torch|onnxruntime|openvino|auto (default MODEL_RUNTIME)")
    args = parser.parse_args(argv)

    from runtime.settings import Settings
    from worker.models import load_classifier

    # The same form of the model the worker runs (MODEL_RUNTIME, MODEL_OPTIMIZE): the limit
    # the service is measured against is the fastest this model goes here.
    settings = Settings.from_env()
    classifier = load_classifier(
        args.model,
        threads=args.threads,
        optimize=settings.model_optimize,
        runtime=args.runtime or settings.model_runtime,
        cache_dir=settings.model_cache_dir,
    )
    batches = tuple(int(b) for b in args.batches.split(","))
    ready = (lambda: wait_for_peers(args.barrier, args.peers)) if args.barrier else None
    photos = sample_photos()
    tensors = prepared_tensors(classifier, photos)
    result = time_batches(classifier, tensors, batches, args.reps, args.min_s, ready)
    result["decode_cpu_ms"] = time_decode(classifier, photos, args.reps)
    if args.phones:
        # Three photos (the JPEG work does not vary much between them); 3 reps, as for the rest.
        phones = [path.read_bytes() for path in sorted(Path(args.phones).glob("*.jpg"))[:3]]
        result["phone_decode_cpu_ms"] = {
            "scaled": time_decode(classifier, phones, 3),
            "full": time_decode(classifier, phones, 3, full=True),
        }
        all_phones = [path.read_bytes() for path in sorted(Path(args.phones).glob("*.jpg"))]
        result["top1_agreement"] = top1_agreement(classifier, photos + all_phones)
    result["runtime"] = getattr(classifier, "runtime", "torch")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
