"""The predictor interface every backend implements: a PyTorch model, an exported file."""
from __future__ import annotations

import numpy as np

from edgefa.facemodel.base import FaceModel
from edgefa.facemodel.geometry import euler_angles, landmarks


class Predictor:
    """uint8 BGR crops (B, S, S, 3) in; ``predict`` gives raw params, ``predict_geometry`` the
    landmarks (B, 68, 3) in pixels of a ``crop_size`` crop and yaw/pitch/roll (B, 3) in degrees."""

    name: str
    face_model: FaceModel | None

    @property
    def crop_size(self) -> int:
        return int(self.face_model.size)

    def predict(self, images: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def predict_geometry(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        params = self.predict(images).astype(np.float32)
        return landmarks(params, self.face_model), euler_angles(params.astype(np.float64))

    def predict_all(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Raw params (B, 62), landmarks (B, 68, 3) and yaw/pitch/roll (B, 3) from one model run."""
        params = self.predict(images).astype(np.float32)
        return params, landmarks(params, self.face_model), euler_angles(params.astype(np.float64))
