"""Direct dense-landmark regression (shared/papers/dense-520-landmarks-mobilenetv2.md, Sec. 3.2): a
MobileNetV2 with a K x 3 output (K = 520 by default) regressing 3D points in crop pixels, trained with
the Wing + MSE hybrid (w1 1.5, w2 0.5; ``loss.dense`` in ``training.objectives``).

The points are the vertices picked by ``edgefa.facemodel.dense_sampling`` on the synthetic face
model's mesh, and the 68 landmark vertices are among them, so the 68-point subset is exact. Their
labels come from the synthetic faces' parameters (the mesh vertices of the labelled face), so this
model trains on synthetic data with ``face_model: synthetic``.

Integration with the parameter-centric pipeline (the smallest that keeps every tool working):
``forward`` returns 62 whitened parameters like every other model, obtained by fitting the 3DMM
(3D similarity + ridge shape, ``edgefa.facemodel.fit.LandmarkFit3D``: ``fit_params`` in plain tensor
ops) to the 68-point subset of the regressed points, so ``edgefa eval`` / the trainer's validation
measure the 68 landmarks through that fit (slightly smoother than the raw subset), and the model
exports (fit included) to ONNX / TFLite / CoreML like the others. In training mode it also returns
the dense points for their loss. Not integrated: the raw dense points are not a ``Predictor`` or
exported output (export ``forward_dense`` with ``torch.onnx`` yourself for the points alone).
"""
from __future__ import annotations

import timm
import torch
from torch import nn

from edgefa.models.registry import FaceRegressor, register_model


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
