"""Run a .tflite file in ai-edge-litert (XNNPACK by default), or tflite-runtime where that is all
there is. The edgefa metadata is one JSON object in the flatbuffer's ``Model.metadata`` list."""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np

from edgefa.errors import EdgefaError
from edgefa.runtime.formats import INPUT_NAME, POST_OUTPUTS, RAW_OUTPUTS

METADATA_NAME = "edgefa"  # Model.metadata entry holding a JSON object of all metadata keys


def schema_module():
    for name in ("ai_edge_litert.schema_py_generated", "litert_converter.schema_py_generated"):
        with contextlib.suppress(ImportError):
            return __import__(name, fromlist=["Model"])
    return None


def read_metadata(content: bytes) -> dict[str, str]:
    """The ``edgefa`` entry of ``Model.metadata`` ({} when absent or no schema module is installed)."""
    schema = schema_module()
    if schema is None:
        return {}
    model = schema.Model.GetRootAs(content, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name() == METADATA_NAME.encode():
            buf = model.Buffers(entry.Buffer())
            data = (content[buf.Offset():buf.Offset() + buf.Size()] if buf.Offset() > 1
                    else buf.DataAsNumpy().tobytes())
            return json.loads(data.decode())
    return {}


def interpreter(path: str | None = None, content: bytes | None = None, threads: int | None = None):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # the design card's runtime; ai-edge-litert is its maintained successor
        from tflite_runtime.interpreter import Interpreter
    return Interpreter(model_path=path, model_content=content, num_threads=threads)


class TFLiteRunner:
    def __init__(self, path: str | Path, threads: int | None = None):
        path = Path(path)
        try:
            content = path.read_bytes()
            if content[4:8] != b"TFL3":
                raise ValueError("no TFL3 file identifier")
            self.interpreter = interpreter(str(path), threads=threads)
            self.runner = self.interpreter.get_signature_runner()
            self.metadata = read_metadata(content)
        except Exception as exc:
            raise EdgefaError(f"{path}: not a loadable TFLite model ({type(exc).__name__}: {str(exc)[:160]})") from None
        self.inputs = self.runner.get_input_details()
        self.input_name = INPUT_NAME if INPUT_NAME in self.inputs else next(iter(self.inputs))  # non-edgefa file
        self.input = self.inputs[self.input_name]
        # what the graph takes, to check against the edgefa.input metadata (None: a dynamic dimension)
        self.input_shape = [None if d < 0 else int(d) for d in self.input.get("shape_signature", self.input["shape"])]
        self.input_dtype = np.dtype(self.input["dtype"]).name
        self.input_quantized = self._quant(self.input) is not None  # int8 I/O: run() quantizes float crops
        self.outputs = self.runner.get_output_details()
        # signature outputs come sorted by name: put them back in the graph's order
        order = list(json.loads(self.metadata.get("edgefa.outputs", "{}"))) or list({**POST_OUTPUTS, **RAW_OUTPUTS})
        self.output_names = [n for n in order if n in self.outputs] + [n for n in self.outputs if n not in order]

    @staticmethod
    def _quant(detail) -> tuple[float, int] | None:
        scale, zero = detail["quantization"]
        return (scale, zero) if scale and np.issubdtype(detail["dtype"], np.integer) else None

    def _feed(self, x: np.ndarray) -> np.ndarray:
        dtype, q = self.input["dtype"], self._quant(self.input)
        if q and not np.issubdtype(x.dtype, np.integer):  # int8 I/O: quantize what graph.prepare gives
            info = np.iinfo(dtype)
            return np.clip(np.round(x / q[0] + q[1]), info.min, info.max).astype(dtype)
        return x.astype(dtype, copy=False)

    def _fetch(self, name: str, y: np.ndarray) -> np.ndarray:
        q = self._quant(self.outputs[name])
        return (y.astype(np.float32) - q[1]) * np.float32(q[0]) if q else y

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        x = self._feed(np.asarray(x))
        batch = int(self.input["shape"][0])
        chunks = [self.runner(**{self.input_name: x[i:i + batch]}) for i in range(0, len(x), batch)]
        return {n: np.concatenate([self._fetch(n, c[n]) for c in chunks]) for n in self.output_names}


def load(path: str | Path, threads: int | None = None) -> TFLiteRunner:
    return TFLiteRunner(path, threads)
