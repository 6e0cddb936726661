"""The models one worker holds, by name: the deployment's default (MODEL) and the packages of
MODELS, each with the decode its preprocessing wants. A request names one ("" = the default).

Rollout: a MODELS path may be a symbolic link to a package directory. Publishing a version is
writing its package beside the old one and pointing the link at it (`ln -sfn catdog-2 catdog`
swaps it atomically). Every ROLLOUT_CHECK_S each worker looks where its links point, loads and
checks a new target off the model's thread, and only then serves it: a request takes its model
when its batch is fetched and keeps it to the end, so requests in flight finish on the version
they started with (their results say which). A target that fails to load or to pass its check
is refused with one line, once, and the version in hand keeps serving.
"""

from __future__ import annotations

import functools
import logging
import os
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
    """Looks where each MODELS path points and serves a new target once it has loaded."""

    def __init__(
        self,
        models: ServedModels,
        paths: Mapping[str, str],
        load: Callable[[str, str], object],
        refusals: tuple[type[BaseException], ...],
        serving: Mapping[str, str] | None = None,
        bound_mb: int = 2**31,
        on_switch: Callable[[], object] | None = None,
    ):
        """load(name, package dir) -> classifier, raising one of `refusals` with one line;
        serving: the directory each model in hand was loaded from (default: where it points);
        on_switch: called after a new version is served (the worker retags its instance)."""
        self._models, self._load, self._refusals = models, load, refusals
        self._paths = dict(paths)
        self._serving = {name: os.path.realpath(path) for name, path in self._paths.items()}
        self._serving.update({n: p for n, p in (serving or {}).items() if n in self._paths})
        self._refused: dict[str, str] = {}
        self._bound_mb = bound_mb  # WORKER_MODELS_MEMORY_MB: the old version is held too
        self._on_switch = on_switch

    def serving(self, name: str) -> str:
        """The package directory `name` is served from now."""
        return self._serving[name]

    def check(self) -> None:
        for name, path in self._paths.items():
            target = os.path.realpath(path)
            if target in (self._serving[name], self._refused.get(name)):
                continue
            try:
                classifier = self._load(name, target)
                # Requests in flight hold the old version until they finish: count both.
                problem = over_bound([*self._models.classifiers(), classifier], self._bound_mb)
                if problem:
                    raise OverBound(problem)
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
            self._models.replace(name, Served.of(classifier))
            self._serving[name] = target
            log.info("model %s: now serving version %s from %s", name, classifier.version, target)
            if self._on_switch is not None:
                self._on_switch()
