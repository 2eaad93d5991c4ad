"""Run an .onnx file in onnxruntime (CPU), with pinned threads; onnxruntime alone (no torch, no onnx)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgefa.errors import EdgefaError

ONNX_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(uint8)": "uint8",
              "tensor(int8)": "int8", "tensor(double)": "float64", "tensor(int64)": "int64"}


def session(model_or_path, threads: int | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    src = model_or_path.SerializeToString() if hasattr(model_or_path, "SerializeToString") else str(model_or_path)
    return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])


class OnnxRunner:
    def __init__(self, path: str | Path, threads: int | None = None):
        path = Path(path)
        try:
            self.session = session(path, threads)
        except Exception as exc:
            raise EdgefaError(f"{path}: not a loadable ONNX model ({type(exc).__name__}: {str(exc)[:160]})") from None
        # the file's metadata_props as onnxruntime reads them: running needs no `onnx` package
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        first = self.session.get_inputs()[0]
        self.input_name = first.name
        # what the graph takes, to check against the edgefa.input metadata (None: a dynamic dimension)
        self.input_shape = [d if isinstance(d, int) else None for d in first.shape]
        self.input_dtype = ONNX_TYPES.get(first.type, first.type)
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self.session.run(None, {self.input_name: x})))


def load(path: str | Path, threads: int | None = None) -> OnnxRunner:
    return OnnxRunner(path, threads)
