"""Synthetic face crops rendered from the procedural face model: edgefa's built-in data.

Each sample is a pure function of (seed, index): a parameter vector drawn by ``sample_params``
and an image rendered from it (``edgefa.data.render``). Its labels are the model's own: the 68
landmarks are ``geometry.landmarks(params)`` and the pose is ``geometry.euler_angles(params)``,
so labels and pixels agree exactly. The crop framing follows the 3DDFA 120x120 crops of
AFLW2000-3D: the landmarks' bounding box spans 60-75% of the crop, centred within a few pixels.

``contour=True`` (``synthetic:...,contour=true``) labels the 17 jaw points contour-aware instead
(``edgefa.facemodel.contour``, RDR Sec. 1): where the parallel line of each meets the visible face
outline, as a 2D annotator would mark them. Off by default: the parameters (and the evaluation
protocol of AFLW2000-3D, whose jaw points are fixed 3DMM vertices) follow the fixed vertices, so
with it on, ``pts68`` no longer equals ``landmarks(params)`` on the jaw at large yaw.
"""
from __future__ import annotations

import numpy as np

from edgefa.data.base import make_sample
from edgefa.data.render import render_face
from edgefa.facemodel import geometry
from edgefa.facemodel.base import FaceModel
from edgefa.facemodel.synthetic import synthetic_face_model
from edgefa.facemodel.synthetic_params import (  # noqa: F401  (re-exported: the dataset's draws)
    rotation_matrices,
    sample_expressions,
    sample_params,
    sample_params_batch,
)


class SyntheticFaces:
    """Rendered synthetic face crops with exact 68-landmark, pose and 3DMM labels.

    Sample i depends only on (seed, i), so shuffling and DataLoader workers do not change it.
    """

    def __init__(self, n: int = 500, seed: int = 0, size: int = 120, face_model: FaceModel | None = None,
                 occlusion: float = 0.3, contour: bool = False):
        self.face_model = face_model if face_model is not None else synthetic_face_model()
        if self.face_model.dense is None:
            raise ValueError(f"face model '{self.face_model.name}' has no dense mesh to render")
        if self.face_model.size != size:
            raise ValueError(f"face model '{self.face_model.name}' is for {self.face_model.size} px crops, "
                             f"not {size}")
        self.n, self.seed, self.size, self.occlusion = int(n), int(seed), int(size), float(occlusion)
        self.contour = bool(contour)  # spec values "true"/"false" arrive as booleans (edgefa.specs)
        self.names = [f"synthetic-{self.seed}-{i:06d}" for i in range(self.n)]

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.n:
            raise IndexError(f"index {index} out of range for {self.n} synthetic faces")
        rng = np.random.default_rng([self.seed, index])
        params = sample_params(rng, self.face_model)
        image = render_face(params, self.face_model, rng, occlusion=self.occlusion)
        if self.contour:
            from edgefa.facemodel.contour import contour_landmarks

            pts68 = contour_landmarks(params, self.face_model)
        else:
            pts68 = geometry.landmarks(params, self.face_model)
        pose = geometry.euler_angles(params)
        return make_sample(image, index, roi_box=None, pts68=pts68, pose=pose, params=params)
