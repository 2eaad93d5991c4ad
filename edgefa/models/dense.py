"""Direct dense-landmark regression (shared/papers/dense-520-landmarks-mobilenetv2.md, Sec. 3.2): a
MobileNetV2 regressing K x 3 points (K = 520) with the Wing + MSE hybrid loss; ``forward`` fits the
3DMM to the 68-point subset so it predicts, evaluates and exports like every other model.
How it fits the parameter-centric pipeline: docs/papers.md#dense.
"""
from __future__ import annotations

import timm
import torch
from torch import nn

from edgefa.models.base import FaceRegressor, register_model


class DenseRegressor(FaceRegressor):
    def __init__(self, backbone: str = "mobilenetv2_100", k: int = 520, iterations: int = 3,
                 input_size: int = 120, fit_iterations: int = 10, drop_rate: float = 0.0):
        super().__init__()
        from edgefa.facemodel.dense_sampling import sample_dense_vertices
        from edgefa.facemodel.geometry import landmarks
        from edgefa.facemodel.synthetic import synthetic_face_model

        self.face_model = synthetic_face_model()  # the mesh the points live on (not a module: not saved)
        self.input_size, self.k, self.fit_iterations = int(input_size), int(k), int(fit_iterations)
        index = sample_dense_vertices(self.face_model.dense, self.k, iterations)
        slots = {int(v): i for i, v in enumerate(index)}
        self.register_buffer("dense_index", torch.as_tensor(index))
        self.register_buffer("dense_lmk68", torch.as_tensor([slots[int(v)] for v in self.face_model.dense.landmark_index]))
        mean = landmarks(self.face_model.param_mean, self.face_model, dense=True)[index]
        self.register_buffer("mean_points", torch.as_tensor(mean, dtype=torch.float32))  # start: the mean face
        # pretrained=False: edgefa never downloads weights at run time
        self.net = timm.create_model(backbone, pretrained=False, num_classes=3 * self.k, drop_rate=drop_rate)
        head = self.net.get_classifier()
        nn.init.normal_(head.weight, std=1e-3)
        nn.init.zeros_(head.bias)
        self.point_scale = self.face_model.size / 4.0  # network units: a quarter of the crop
        from edgefa.facemodel.fit import LandmarkFit3D

        self.fit = LandmarkFit3D(self.face_model, iterations=self.fit_iterations)

    def forward_dense(self, x: torch.Tensor) -> torch.Tensor:
        """(B, K, 3) points in crop pixels (x right, y down, z depth), ``dense_index`` order."""
        return self.mean_points + self.net(x).reshape(-1, self.k, 3) * self.point_scale

    def params_from_points(self, points: torch.Tensor) -> torch.Tensor:
        """Whitened 62 params of the 3DMM fitted to the 68-point subset (no gradient: the points
        have their own loss)."""
        from edgefa.facemodel.geometry import whiten

        return whiten(self.fit(points.detach().float().index_select(1, self.dense_lmk68)), self.face_model)

    def forward(self, x: torch.Tensor):
        points = self.forward_dense(x)
        params = self.params_from_points(points)
        if self.training:
            return {"params": params, "dense": points, "dense_index": self.dense_index, "dense_lmk68": self.dense_lmk68}
        return params


def _build(**cfg) -> DenseRegressor:
    return DenseRegressor(**cfg)


register_model("dense_mobilenetv2", _build, family="dense", backbone="mobilenetv2_100", k=520)
