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
from edgefa.runtime.formats import format_of_path
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
        return self.runner.run(prepare_input(images, self.input_contract))

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
