"""Run any exported file like a PyTorch model: ``edgefa eval --model face.onnx`` and the benchmarks.

The file's own metadata (``edgefa.input``, ``edgefa.outputs``, ``edgefa.param_mean/std``) says how
to feed it and read it, so this is also the reference for what an app must do. Needs no torch:
numpy input preparation and geometry, the face model's bases from numpy/scipy.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edgefa.errors import EdgefaError
from edgefa.fileio import refuse_special_file
from edgefa.runtime.formats import POST_OUTPUTS, RAW_OUTPUTS, format_of_path
from edgefa.runtime.inputs import InputContract, prepare_input
from edgefa.runtime.predictor import Predictor


def load_runner(path: str | Path, threads: int | None = None):
    path = Path(path)
    fmt = format_of_path(path)
    if fmt is None:
        raise EdgefaError(f"{path}: not an exported model (expected {', '.join(sorted({'.onnx', '.tflite', '.mlpackage'}))})")
    if not path.exists():
        raise EdgefaError(f"{path}: file not found")
    refuse_special_file(path, "model file")  # a FIFO would block the runtime's read forever
    return fmt, fmt.runner_module().load(path, threads=threads)


def dims(shape) -> str:
    """[None, 3, 64, 64] -> 'Bx3x64x64' (None: a dynamic dimension; the first is the batch)."""
    return "x".join("B" if d is None and i == 0 else "?" if d is None else str(d) for i, d in enumerate(shape))


def check_input(path: Path, contract: InputContract, runner) -> None:
    """The edgefa.input metadata against the input the graph really takes (runners that know it:
    onnxruntime, LiteRT): a tampered or mismatched file is one line here, not a runtime shape error."""
    shape = getattr(runner, "input_shape", None)
    if shape is None:
        return
    h, w = contract.size
    want = [None, 3, h, w] if contract.layout == "NCHW" else [None, h, w, 3]
    fits = len(shape) == 4 and all(g is None or e is None or g == e for g, e in zip(shape, want))
    # int8 I/O: the runner quantizes the float crops the contract describes
    dtype_fits = runner.input_dtype == contract.dtype or getattr(runner, "input_quantized", False)
    if not (fits and dtype_fits):
        raise EdgefaError(f"{path}: metadata says input {dims(want)} {contract.dtype} {contract.layout}, "
                          f"but the graph takes {dims(shape)} {runner.input_dtype}")


def expected_outputs(path: Path, meta: dict, postprocess: bool, graph_names: list[str]) -> dict[str, tuple]:
    """Check the graph's output names against edgefa.outputs and what a (post-processing) file must
    give; returns the shape each output must have, checked on every run (None: any size)."""
    try:
        listed = list(json.loads(meta.get("edgefa.outputs", "{}")))
        n_params = len(json.loads(meta["edgefa.param_mean"])) if "edgefa.param_mean" in meta else None
    except (ValueError, TypeError) as exc:
        raise EdgefaError(f"{path}: edgefa.outputs / edgefa.param_mean metadata is not JSON ({exc})") from None
    needed = list(POST_OUTPUTS if postprocess else RAW_OUTPUTS)
    if (listed and sorted(listed) != sorted(graph_names)) or any(n not in graph_names for n in needed):
        said = f"metadata says outputs {', '.join(listed)}" if listed else "metadata lists no outputs"
        raise EdgefaError(f"{path}: {said}, but the graph has {', '.join(graph_names)} "
                          f"(a {'post-processing' if postprocess else 'raw'} edgefa file gives {', '.join(needed)})")
    shapes = {"params": (None, n_params), "landmarks": (None, 68, 3), "pose": (None, 3)}
    return {n: shapes[n] for n in needed}


class ArtifactPredictor(Predictor):
    def __init__(self, path: str | Path, threads: int | None = None):
        self.path = Path(path)
        self.format, self.runner = load_runner(path, threads)
        meta = self.runner.metadata
        if "edgefa.input" not in meta:
            raise EdgefaError(f"{path}: no edgefa.input metadata (not exported by edgefa export?)")
        self.input_spec = json.loads(meta["edgefa.input"])
        try:  # a damaged spec fails here, naming the file, not at the first batch
            self.input_contract = InputContract.read(self.input_spec)
        except EdgefaError as exc:
            raise EdgefaError(f"{path}: edgefa.input metadata: {exc}") from None
        self.postprocess = json.loads(meta.get("edgefa.postprocess", "false"))
        check_input(self.path, self.input_contract, self.runner)
        self.output_shapes = expected_outputs(self.path, meta, self.postprocess, self.runner.output_names)
        self.name = self.path.name
        self._crop_size = int(meta.get("edgefa.crop_size", self.input_spec["size"][0]))
        self.face_model = None if self.postprocess else self._face_model(meta)

    @property
    def crop_size(self) -> int:
        return self._crop_size

    def _face_model(self, meta: dict):
        """A bare file outputs whitened params: de-whiten with its metadata, bases from the face model."""
        from dataclasses import replace

        name = meta.get("edgefa.face_model", "synthetic-0")
        if name.startswith("synthetic-") and name.split("-", 1)[1].isdigit():
            from edgefa.facemodel.synthetic import synthetic_face_model

            fm = synthetic_face_model(int(name.split("-", 1)[1]))
        else:  # bfm68 bases are not ours to embed: read them from the usual place ($EDGEFA_SHARED)
            from edgefa.facemodel.bfm import load_bfm68
            from edgefa.paths import find_bfm68

            fm = load_bfm68(find_bfm68(None))
        return replace(fm, param_mean=np.asarray(json.loads(meta["edgefa.param_mean"]), np.float32),
                       param_std=np.asarray(json.loads(meta["edgefa.param_std"]), np.float32))

    def outputs(self, images: np.ndarray) -> dict[str, np.ndarray]:
        out = self.runner.run(prepare_input(images, self.input_contract))
        for name, want in self.output_shapes.items():  # a wrong shape would fail far away, in the geometry
            got = tuple(np.shape(out[name]))
            if len(got) != len(want) or got[0] != len(images) or any(w is not None and g != w for g, w in zip(got[1:], want[1:])):
                raise EdgefaError(f"{self.path}: the graph's output '{name}' is {dims(got)} for {len(images)} crop(s), "
                                  f"but an edgefa file gives {dims(want)}")
        return out

    def predict(self, images: np.ndarray) -> np.ndarray:
        out = self.outputs(images)
        if self.postprocess:
            return out["params"]
        return out["params"] * self.face_model.param_std + self.face_model.param_mean

    def predict_geometry(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not self.postprocess:
            return super().predict_geometry(images)
        out = self.outputs(images)
        return out["landmarks"], out["pose"]

    def predict_all(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not self.postprocess:
            return super().predict_all(images)
        out = self.outputs(images)
        return out["params"], out["landmarks"], out["pose"]
