"""The models one worker holds, by name: the deployment's default (MODEL) and the packages of
MODELS, each with the decode its preprocessing wants. A request names one ("" = the default)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from worker.imaging import decode as decode_image


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

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._by_name)

    def get(self, name: str) -> Served | None:
        """The model a request names; None for one this worker does not hold."""
        return self.default if not name else self._by_name.get(name)
