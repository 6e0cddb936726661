"""The model registry: a name in, a ready classifier out, or one line that says why not.

A built-in model (EfficientNet-Lite0 with its offline weights, or a torchvision model by name) is
exported once to a model package (worker.package: model.onnx, labels, preprocessing) in
MODEL_CACHE_DIR, checked against PyTorch fp32 on the sample photos, and run by the runtime
MODEL_RUNTIME names. `auto` takes the fastest installed of RUNTIME_PREFERENCE whose answers match
PyTorch's (timed once per machine and remembered); any refusal (runtime missing, export or check
failed) is one logged line and PyTorch serves instead. A worker whose package is already in the
cache never imports torch.

`python -m worker.models export NAME` makes the package ahead of time (the worker image does);
`package` makes one of a user's network, `check` reads one again, and `publish` points a model
in S3 at one of its versions (docs/models.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from importlib import util
from pathlib import Path

from runtime.settings import MODEL_RUNTIMES, PREPROCESSES

log = logging.getLogger(__name__)

DEFAULT_MODEL = "efficientnet_lite0"
TOP_K = 5
# The runtimes `auto` tries, each timed once per artefact and machine (worker.exported). On this
# project's CPU both cost 6 to 8 CPU ms per image against PyTorch jit's 15 to 16, and which of the
# two wins changes with the machine's load (docs/performance.md): a fixed order would be a guess.
# The order breaks ties only.
RUNTIME_PREFERENCE = ("openvino", "onnxruntime")


class ModelError(RuntimeError):
    """A model that is not known, not available offline, or whose weights do not fit."""


class ModelUnreadable(ModelError):
    """A package that could not be read this time (S3 did not answer): at start it stops the
    worker as any ModelError does; in a rollout it is tried again, not refused."""


def load_classifier(
    name: str,
    preprocess: str = "default",
    threads: int = 0,
    *,
    optimize: str,
    runtime: str = "torch",
    cache_dir: str | Path = ".run/models",
):
    """Load `name` once; raise ModelError with one line when no runtime can serve it.

    optimize: the PyTorch form ('jit' or 'eager') when PyTorch serves. runtime: one of
    MODEL_RUNTIMES; the worker passes MODEL_RUNTIME ('auto' by default), tests and the bench
    say which they want."""
    if preprocess not in PREPROCESSES:
        raise ModelError(f"preprocess {preprocess!r} is not known: choose default or reference")
    if runtime not in MODEL_RUNTIMES:
        raise ModelError(f"runtime {runtime!r} is not known: choose {'|'.join(MODEL_RUNTIMES)}")
    if runtime != "torch" and preprocess == "reference":
        # Reference inputs keep every image's own size: one pass per shape, where PyTorch's
        # eager model is as fast as any export.
        log.info("preprocess reference: the model runs on torch")
        runtime = "torch"
    if runtime != "torch":
        from worker import exported

        try:
            return exported.load(name, runtime, _threads(threads), Path(cache_dir))
        except exported.Refused as refusal:
            if util.find_spec("torch") is None:  # the worker image: exported packages only
                raise ModelError(f"model {name}: {refusal}") from None
            log.warning("model %s: %s; PyTorch serves instead", name, refusal)
    elif util.find_spec("torch") is None:
        raise ModelError(
            "runtime torch: PyTorch is not installed here (the worker image "
            "serves exported packages: MODEL_RUNTIME=auto, onnxruntime or openvino)"
        )
    from worker import torch_models

    classifier = torch_models.load_classifier(name, preprocess, threads, optimize=optimize)
    # The PyTorch path runs on the CPU (it always has); a GPU serves through onnxruntime's
    # CUDA provider where onnxruntime-gpu is installed (worker.served).
    log.info("model %s runs on torch (cpu, passes of %d)", name, classifier.forward_batch)
    return dataclasses.replace(classifier, version=_torch_version(name))


def _torch_version(name: str) -> str:
    # The same version as its package's: one name for the same weights, whatever runs them.
    from worker import exported

    try:
        return exported.version_of(exported.source_of(name))
    except exported.Refused:
        return ""


def load_package_classifier(
    name: str, path: str | Path, threads: int = 0, *, runtime: str, cache_dir: str | Path
):
    """The package at `path` (a MODELS entry) served as `name`; ModelError with one line when
    it is not a sound package, is named otherwise, or no runtime can serve it.

    A package runs on an ONNX runtime only (PyTorch has no code for a user's network), so
    MODEL_RUNTIME=torch serves it as `auto` would."""
    from worker import exported
    from worker.package import PackageError, load_package

    try:
        package = load_package(path)
    except PackageError as error:
        raise ModelError(f"model {name}: {error}") from None
    if package.manifest.name != name:
        raise ModelError(f"model {name}: the package at {path} is named {package.manifest.name!r}")
    try:
        return exported.serve(
            name,
            package,
            "auto" if runtime == "torch" else runtime,
            _threads(threads),
            Path(cache_dir),
        )
    except exported.Refused as refusal:
        raise ModelError(f"model {name}: {refusal}") from None


def _threads(threads: int) -> int:
    # What torch takes by default: one intra-op thread per core this process may run on.
    return threads if threads > 0 else len(os.sched_getaffinity(0))


def fastest_pass(
    seconds_for: Callable[[int], float], sizes: Sequence[int], repeats: int = 3, warmups: int = 2
) -> int:
    """Of `sizes`, the pass size with the least time per image (see pass_timings)."""
    per_image = pass_timings(seconds_for, sizes, repeats, warmups)
    return min(per_image, key=per_image.get)


def pass_timings(
    seconds_for: Callable[[int], float], sizes: Sequence[int], repeats: int = 3, warmups: int = 2
) -> dict[int, float]:
    """Seconds per image at each of `sizes`: the best of `repeats` timings each, after
    `warmups` untimed passes in which the runtime specialises for the size. Which size wins
    differs between processes and runtimes on one machine (docs/performance.md)."""
    per_image = {}
    for size in sizes:
        for _ in range(warmups):
            seconds_for(size)
        per_image[size] = min(seconds_for(size) for _ in range(repeats)) / size
    log.info(
        "forward passes of %d: ms per image by pass size %s",
        min(per_image, key=per_image.get),
        ", ".join(f"{size}: {s * 1e3:.1f}" for size, s in per_image.items()),
    )
    return per_image


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.models", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", help="export, verify and cache a built-in model")
    export.add_argument(
        "names", nargs="*", help=f"{DEFAULT_MODEL} or torchvision model names (default: MODEL)"
    )
    export.add_argument("--cache-dir", help="default: MODEL_CACHE_DIR")
    package = commands.add_parser(
        "package", help="make and check a model package from a network and its labels"
    )
    package.add_argument(
        "--network",
        required=True,
        help="ONNX (.onnx), TorchScript (.pt .pth .ts .torchscript .jit) or torch.export (.pt2)",
    )
    package.add_argument("--labels", required=True, help="text file: one class name per line")
    package.add_argument("--name", required=True)
    package.add_argument("--version", required=True)
    package.add_argument("--out", required=True, help="the package directory to write")
    package.add_argument("--resize-side", type=int, default=256)
    package.add_argument("--crop", type=int, default=224)
    package.add_argument("--mean", default="0.485,0.456,0.406", help="three numbers")
    package.add_argument("--std", default="0.229,0.224,0.225", help="three numbers")
    package.add_argument("--interpolation", default="bicubic")
    check = commands.add_parser("check", help="check a model package already made")
    check.add_argument("package_dir", help="the package directory")
    publish = commands.add_parser(
        "publish",
        help="point a model in S3 at one of its versions, once that version's package is whole",
    )
    publish.add_argument("model_url", help="s3://BUCKET/models/NAME/ (what MODELS names)")
    publish.add_argument("--version", required=True, help="a version under it, uploaded already")
    args = parser.parse_args(argv)
    if args.command == "package":
        return _package(args)
    if args.command == "check":
        return _check(args)
    if args.command == "publish":
        return _publish(args)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from runtime.settings import ConfigError, Settings
    from worker import (
        exported,
        models,  # run as __main__, this module is not the one the others import
    )

    try:
        settings = Settings.from_env()
    except ConfigError as error:
        print(f"worker.models: {error}", file=sys.stderr)
        return 2
    cache_dir = Path(args.cache_dir or settings.model_cache_dir)
    for name in args.names or [settings.model]:
        started = time.perf_counter()
        try:
            package = exported.ensure_package(name, cache_dir)
        except (exported.Refused, models.ModelError) as error:
            print(f"worker.models: {name}: {error}", file=sys.stderr)
            return 1
        print(f"{name}: {package.root} ({time.perf_counter() - started:.1f} s)")
    return 0


def _check(args) -> int:
    from worker.package import PackageError
    from worker.packaging import check_package

    try:
        package = check_package(Path(args.package_dir))
    except PackageError as error:
        print(f"worker.models: {error}", file=sys.stderr)
        return 1
    manifest = package.manifest
    print(f"{manifest.name} {manifest.version}: {package.root} ({len(package.labels)} classes, ok)")
    return 0


def _publish(args) -> int:
    """Credentials come from the environment, as for any AWS client (boto3's chain)."""
    from runtime.clients import make_client
    from runtime.settings import ConfigError, Settings
    from worker.package import PackageError
    from worker.remote import publish

    try:
        s3 = make_client("s3", Settings.from_env(), pool_size=4)
        package, before = publish(s3, args.model_url, args.version)
    except (ConfigError, PackageError) as error:
        print(f"worker.models: {error}", file=sys.stderr)
        return 1
    manifest = package.manifest
    was = f"version {before}" if before else "no version"
    print(f"{manifest.name}: version {manifest.version} published ({was} before)")
    return 0


def _package(args) -> int:
    import warnings

    # torch warns about its own deprecations while it reads and exports a network: the
    # command's output is its one line of result or refusal.
    warnings.simplefilter("ignore")
    from worker.package import PackageError, Preprocessing
    from worker.packaging import make_package

    try:
        mean, std = (tuple(float(v) for v in text.split(",")) for text in (args.mean, args.std))
        pre = Preprocessing(
            resize_side=args.resize_side,
            crop=args.crop,
            mean=mean,
            std=std,
            interpolation=args.interpolation,
        )
        made = make_package(
            Path(args.network),
            Path(args.labels),
            Path(args.out),
            name=args.name,
            version=args.version,
            preprocessing=pre,
        )
    except ValueError as error:  # PackageError is one; so is a malformed --mean or --std
        reason = error if isinstance(error, PackageError) else f"--mean/--std: {error}"
        print(f"worker.models: {reason}", file=sys.stderr)
        return 1
    print(f"{made.manifest.name} {made.manifest.version}: {made.root} ({len(made.labels)} classes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
