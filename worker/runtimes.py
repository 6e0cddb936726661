"""The runtimes that run a package's model.onnx: one `Session.run(batch) -> logits` each.

Imported lazily: `import onnxruntime` or `import openvino` costs a tenth of a second, `import
torch` two (docs/performance.md), and a worker pays only for the one it uses.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

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
