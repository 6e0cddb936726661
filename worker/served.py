"""The models one worker holds, by name: the deployment's default (MODEL) and the packages of
MODELS, each with the decode its preprocessing wants. A request names one ("" = the default).

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
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from worker.imaging import decode as decode_image

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
    classifier: object  # worker.torch_models.Classifier or worker.exported.OnnxClassifier
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
