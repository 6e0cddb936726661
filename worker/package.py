"""A model package: a directory with manifest.json, labels.txt and the network as model.onnx.

The one loading path for every model the worker serves. The built-in models become packages by
export (worker.export); a user's own model will be packaged the same way (issue 22). ONNX is the
artefact because every runtime reads it: onnxruntime and OpenVINO load the file itself, and
PyTorch stays the exact reference the export is checked against.

Reading a package imports neither torch nor any runtime: a worker that runs the package on
onnxruntime or OpenVINO never pays for `import torch`. Every problem is one line (PackageError).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

MANIFEST = "manifest.json"
LABELS = "labels.txt"
ARTEFACT = "model.onnx"
FORMATS = ("onnx",)
INTERPOLATIONS = ("bicubic", "bilinear", "nearest")
COLOUR_MODES = ("RGB",)


class PackageError(ValueError):
    """A package that is missing a file, has a malformed manifest, or does not match its hash."""


class Unreadable(PackageError):
    """A package (or the pointer naming one) that could not be read this time: S3 did not
    answer, or refused the read. Unlike a missing or malformed package, it may read later."""


@dataclass(frozen=True)
class Preprocessing:
    """How a decoded image becomes the network's input: resize the short side to `resize_side`
    (None: no resize), crop the centre `crop` x `crop` (None: no crop), scale to [0, 1], then
    subtract `mean` and divide by `std` per channel."""

    resize_side: int | None = 256
    crop: int | None = 224
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = "bicubic"
    colour_mode: str = "RGB"

    def check(self) -> None:
        for name in ("resize_side", "crop"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise PackageError(f"preprocessing.{name} must be a positive integer or null")
        for name in ("mean", "std"):
            value = getattr(self, name)
            if len(value) != 3 or not all(isinstance(v, int | float) for v in value):
                raise PackageError(f"preprocessing.{name} must be three numbers")
        if not all(v > 0 for v in self.std):
            raise PackageError("preprocessing.std must be three positive numbers")
        if self.interpolation not in INTERPOLATIONS:
            raise PackageError(f"preprocessing.interpolation must be {'|'.join(INTERPOLATIONS)}")
        if self.colour_mode not in COLOUR_MODES:
            raise PackageError(f"preprocessing.colour_mode must be {'|'.join(COLOUR_MODES)}")


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    format: str
    sha256: str  # of the artefact: a package whose file changed is refused, never half-trusted
    preprocessing: Preprocessing
    # Where the package came from (for an export: the weights' hash and the exporter's
    # versions). Shown, never interpreted.
    source: dict = dataclasses.field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise PackageError(f"{MANIFEST} is not JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise PackageError(f"{MANIFEST} must be a JSON object")
        pre = raw.get("preprocessing", {})
        if not isinstance(pre, dict):
            raise PackageError("preprocessing must be a JSON object")
        _known(raw, cls, MANIFEST)
        _known(pre, Preprocessing, "preprocessing")
        missing = [
            f.name for f in dataclasses.fields(cls) if f.name not in raw and f.name != "source"
        ]
        if missing:
            raise PackageError(f"{MANIFEST} lacks {', '.join(missing)}")
        for key in ("name", "version", "format", "sha256"):
            if not isinstance(raw[key], str) or not raw[key]:
                raise PackageError(f"{MANIFEST}: {key} must be a non-empty string")
        if raw["format"] not in FORMATS:
            raise PackageError(f"format {raw['format']!r} is not accepted: {'|'.join(FORMATS)}")
        try:
            preprocessing = Preprocessing(
                **{k: tuple(v) if k in ("mean", "std") else v for k, v in pre.items()}
            )
        except TypeError as exc:
            raise PackageError(f"preprocessing is malformed: {exc}") from None
        preprocessing.check()
        return cls(
            name=raw["name"],
            version=raw["version"],
            format=raw["format"],
            sha256=raw["sha256"],
            preprocessing=preprocessing,
            source=dict(raw.get("source") or {}),
        )


@dataclass(frozen=True)
class ModelPackage:
    root: Path
    manifest: Manifest
    labels: tuple[str, ...]

    @property
    def artefact(self) -> Path:
        return self.root / ARTEFACT


def _known(raw: dict, cls: type, where: str) -> None:
    unknown = sorted(set(raw) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise PackageError(f"{where} has unknown fields: {', '.join(unknown)}")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def load_package(root: str | Path, *, check_hash: bool = True) -> ModelPackage:
    """Read and check a package directory; raise PackageError with one line."""
    root = Path(root)
    if not root.is_dir():
        raise PackageError(f"model package {root} is not a directory")
    for name in (MANIFEST, LABELS, ARTEFACT):
        if not (root / name).is_file():
            raise PackageError(f"model package {root} has no {name}")
    manifest = Manifest.from_json((root / MANIFEST).read_text(encoding="utf-8"))
    labels = tuple(
        line.strip() for line in (root / LABELS).read_text(encoding="utf-8").splitlines()
    )
    labels = tuple(label for label in labels if label)
    if not labels:
        raise PackageError(f"{root / LABELS} names no class")
    if check_hash and sha256_file(root / ARTEFACT) != manifest.sha256:
        raise PackageError(f"{root / ARTEFACT} does not match the sha256 in {MANIFEST}")
    return ModelPackage(root=root, manifest=manifest, labels=labels)


def write_package(
    root: str | Path,
    artefact: Path,
    labels: list[str] | tuple[str, ...],
    *,
    name: str,
    version: str,
    preprocessing: Preprocessing,
    source: dict | None = None,
) -> ModelPackage:
    """Write a package into `root` (created) from an ONNX file already there or elsewhere."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    target = root / ARTEFACT
    if Path(artefact).resolve() != target.resolve():
        target.write_bytes(Path(artefact).read_bytes())
    preprocessing.check()
    manifest = Manifest(
        name=name,
        version=version,
        format="onnx",
        sha256=sha256_file(target),
        preprocessing=preprocessing,
        source=dict(source or {}),
    )
    (root / LABELS).write_text("".join(f"{label}\n" for label in labels), encoding="utf-8")
    (root / MANIFEST).write_text(manifest.to_json(), encoding="utf-8")
    return load_package(root)
