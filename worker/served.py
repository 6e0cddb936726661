"""The models one worker holds, by name, and what runs them: the deployment's default (MODEL) and
the packages of MODELS, each with the decode its preprocessing wants; a request names one ("" =
the default). A package's model.onnx runs on an onnxruntime or OpenVINO session (below).

Rollout: a MODELS entry may change where its package is (worker.sources): a local path that is
a symbolic link to a package directory (`ln -sfn catdog-2 catdog` swaps it atomically), or a
versionless S3 entry whose pointer (models/NAME/CURRENT) names a version. Every ROLLOUT_CHECK_S
each worker looks where each points, loads and checks a new target off the model's thread, and
only then serves it: a request takes its model when its batch is fetched and keeps it to the
end, so requests in flight finish on the version they started with (their results say which).
A target that fails to load or to pass its check is refused with one line, once, and the version
in hand keeps serving; one that could not be read this time (S3 did not answer) is tried again.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from worker.imaging import ArrayTransform
from worker.imaging import decode as decode_image
from worker.models import TOP_K

log = logging.getLogger(__name__)

ROLLOUT_CHECK_S = 2.0  # how often a worker looks for a new version of its packages
# Resident memory a loaded package costs per byte of its model.onnx: 26 to 27 MiB for the
# 17.8 MiB EfficientNet-Lite0 artefact on onnxruntime and OpenVINO (`python -m bench.model_load`,
# a second copy in one process); rounded up.
MEMORY_PER_ARTEFACT_BYTE = 1.6


class OverBound(Exception):
    """Holding one more model would break WORKER_MODELS_MEMORY_MB (one line)."""


def footprint_mb(classifier) -> float:
    """The estimated memory of holding `classifier` (0 for one without an artefact: PyTorch)."""
    return getattr(classifier, "artefact_bytes", 0) * MEMORY_PER_ARTEFACT_BYTE / 2**20


def over_bound(classifiers, bound_mb: int) -> str:
    """Why holding all of `classifiers` at once breaks WORKER_MODELS_MEMORY_MB ('' if not)."""
    total = sum(footprint_mb(c) for c in classifiers)
    if total <= bound_mb:
        return ""
    return (
        f"holding {len(classifiers)} models needs about {total:.0f} MiB, more than the"
        f" {bound_mb} MiB of WORKER_MODELS_MEMORY_MB"
    )


@dataclass(frozen=True, eq=False)
class Served:
    classifier: object  # worker.torch_models.Classifier or worker.served.OnnxClassifier
    decode: Callable[[bytes], object]

    @classmethod
    def of(cls, classifier) -> Served:
        """JPEGs decode at the size the model resizes to, not at every pixel they carry; a model
        on onnxruntime or OpenVINO takes Pillow images (no torch in the process)."""
        return cls(
            classifier,
            functools.partial(
                decode_image,
                min_side=classifier.min_side,
                output=getattr(classifier, "pixels", "tensor"),
            ),
        )


class ServedModels:
    def __init__(self, default: Served, others: Mapping[str, Served] | None = None):
        self.default = default
        self._by_name = {default.classifier.name: default, **(others or {})}
        self._lock = threading.Lock()

    def replace(self, name: str, served: Served) -> None:
        """Serve `served` as `name` from the next request taken on; those holding the old one
        keep it (a new dict, never one changed under a reader)."""
        with self._lock:
            self._by_name = {**self._by_name, name: served}

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._by_name)

    def classifiers(self) -> list:
        return [served.classifier for served in self._by_name.values()]

    def get(self, name: str) -> Served | None:
        """The model a request names; None for one this worker does not hold."""
        return self.default if not name else self._by_name.get(name)


class Rollout:
    """Looks where each MODELS entry points and serves a new target once it has loaded."""

    def __init__(
        self,
        models: ServedModels,
        sources: Mapping[str, Callable[[], str]],
        load: Callable[[str, str], object],
        refusals: tuple[type[BaseException], ...],
        serving: Mapping[str, str] | None = None,
        bound_mb: int = 2**31,
        on_switch: Callable[[], object] | None = None,
        retried: tuple[type[BaseException], ...] = (),
    ):
        """sources: per name, a call saying where its package is now (worker.sources.watched),
        raising one of `refusals` with one line; load(name, where) -> classifier, raising one of
        `refusals` with one line, or one of `retried` when it could not read the package this
        time (not refused: tried again at the next look); serving: where each model in hand was
        loaded from (default: where its source says now); on_switch: called after a new version
        is served (the worker retags its instance)."""
        self._models, self._load = models, load
        self._refusals, self._retried = refusals, retried
        self._sources = dict(sources)
        self._serving = {n: (serving or {}).get(n) or where() for n, where in sources.items()}
        self._refused: dict[str, str] = {}  # name -> the target refused last
        # (name, "where" or "load") -> the last line said of a look that failed that way
        self._said: dict[tuple[str, str], str] = {}
        self._bound_mb = bound_mb  # WORKER_MODELS_MEMORY_MB: the old version is held too
        self._on_switch = on_switch

    def serving(self, name: str) -> str:
        """Where the package `name` is served from now."""
        return self._serving[name]

    def check(self) -> None:
        for name, where in self._sources.items():
            try:
                target = where()
            except self._refusals as error:
                self._say_once(name, "where", f"{error}; {self._serving[name]} keeps serving")
                continue
            self._said.pop((name, "where"), None)
            if target in (self._serving[name], self._refused.get(name)):
                continue
            try:
                classifier = self._load(name, target)
                # Requests in flight hold the old version until they finish: count both.
                problem = over_bound([*self._models.classifiers(), classifier], self._bound_mb)
                if problem:
                    raise OverBound(problem)
            except self._retried as error:
                self._say_once(
                    name,
                    "load",
                    f"{target} not loaded now ({error}); tried again at the next look;"
                    f" {self._serving[name]} keeps serving",
                )
                continue
            except (*self._refusals, OverBound) as error:
                self._refused[name] = target
                log.warning(
                    "model %s: %s refused (%s); %s keeps serving",
                    name,
                    target,
                    error,
                    self._serving[name],
                )
                continue
            self._said.pop((name, "load"), None)
            self._models.replace(name, Served.of(classifier))
            self._serving[name] = target
            log.info("model %s: now serving version %s from %s", name, classifier.version, target)
            if self._on_switch is not None:
                self._on_switch()

    def _say_once(self, name: str, kind: str, line: str) -> None:
        # A pointer unread or a package unreachable for minutes is one line, not one a look.
        if self._said.get((name, kind)) != line:
            self._said[name, kind] = line
            log.warning("model %s: %s", name, line)


# ---- Runtimes ------------------------------------------------------------------------------------
# The runtimes that run a package's model.onnx (one `Session.run(batch) -> logits` each), and the
# classifier over a session (`OnnxClassifier`). Imported lazily: `import onnxruntime` or
# `import openvino` costs a tenth of a second, `import torch` two (docs/performance.md), and a
# worker pays only for the one it uses.

ONNX_RUNTIMES = ("openvino", "onnxruntime")


def available(runtime: str) -> bool:
    return importlib.util.find_spec(runtime) is not None


class Session:
    """A compiled model for one runtime. `device` says where it runs (logged at start)."""

    runtime: str
    device: str

    def run(self, batch: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError


class OnnxRuntimeSession(Session):
    runtime = "onnxruntime"

    def __init__(self, path: Path, threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # warnings about unused initialisers are not ours
        # Where CUDA is present the runtime's GPU provider takes the model (issue 23 item 5).
        providers = [
            p for p in ("CUDAExecutionProvider",) if p in ort.get_available_providers()
        ] + ["CPUExecutionProvider"]
        self._session = ort.InferenceSession(str(path), options, providers=providers)
        self._input = self._session.get_inputs()[0].name
        self.device = "cuda" if self._session.get_providers()[0].startswith("CUDA") else "cpu"

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self._session.run(None, {self._input: batch})[0]


class OpenVinoSession(Session):
    runtime = "openvino"
    device = "cpu"

    def __init__(self, path: Path, threads: int, cache_dir: Path | None):
        import openvino as ov

        config = {
            # OpenVINO's default on a CPU with bf16 is bf16: about one label in fifteen changes
            # on real photos (issue 23's table). The service answers as the fp32 model does.
            "INFERENCE_PRECISION_HINT": "f32",
            "NUM_STREAMS": 1,
            "PERFORMANCE_HINT": "LATENCY",
        }
        if threads > 0:
            config["INFERENCE_NUM_THREADS"] = threads
        if cache_dir is not None:
            # The compiled blob is kept: a later start loads it instead of compiling again.
            config["CACHE_DIR"] = str(cache_dir)
        compiled = ov.Core().compile_model(str(path), "CPU", config)
        self._request = compiled.create_infer_request()

    def run(self, batch: np.ndarray) -> np.ndarray:
        # share_inputs: no copy of the batch; the outputs are copied out before the next call.
        outputs = self._request.infer({0: batch}, share_inputs=True)
        return np.array(outputs[0], copy=True)


def open_session(runtime: str, path: Path, threads: int, cache_dir: Path | None = None) -> Session:
    """Raise RuntimeError (one line) when the runtime is missing or refuses the file."""
    if not available(runtime):
        raise RuntimeError(f"runtime {runtime} is not installed")
    try:
        if runtime == "onnxruntime":
            return OnnxRuntimeSession(path, threads)
        if runtime == "openvino":
            return OpenVinoSession(path, threads, cache_dir)
    except Exception as exc:  # noqa: BLE001 - each runtime has its own error types
        first = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise RuntimeError(f"{runtime} cannot load {path}: {first}") from None
    raise RuntimeError(f"runtime {runtime!r} is not known")


@dataclass(frozen=True, eq=False)
class OnnxClassifier:
    """The Classifier interface (prepare, classify, name, categories, min_side, forward_batch)
    on an ONNX runtime session."""

    name: str
    version: str
    session: Session
    transform: ArrayTransform
    categories: Sequence[str]
    forward_batch: int
    min_side: int | None
    top1_agreement: float  # on the sample photos, against PyTorch fp32 (1.0: all agree)
    artefact_bytes: int = 0  # the size of its model.onnx: what holding it costs (worker.served)
    pixels: str = "pil"  # what decode() hands prepare(): a PIL image, no torch tensor

    @property
    def runtime(self) -> str:
        return self.session.runtime

    def prepare(self, image) -> np.ndarray:
        if hasattr(image, "permute"):  # a (3, H, W) torch tensor, as torch's decode gives
            image = np.asarray(image.permute(1, 2, 0))
        return self.transform(image)

    def classify(self, arrays: Sequence[np.ndarray]) -> list[list[tuple[str, float]]]:
        """Top-5 (label, probability) per array, best first; passes of at most forward_batch."""
        results: list = [None] * len(arrays)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, array in enumerate(arrays):
            groups.setdefault(tuple(array.shape), []).append(i)
        for indices in groups.values():
            for start in range(0, len(indices), self.forward_batch):
                chunk = indices[start : start + self.forward_batch]
                probs = softmax(self.session.run(np.stack([arrays[i] for i in chunk])))
                for row, i in enumerate(chunk):
                    top = np.argsort(-probs[row], kind="stable")[:TOP_K]
                    results[i] = [(self.categories[c], float(probs[row, c])) for c in top]
        return results


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits.astype(np.float32) - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)
