"""The module that gets exported: the bare network, or the network with pre- and post-processing.

- bare (default): normalised float NCHW at the network's input size in, the 62 *whitened*
  parameters out; an app de-whitens with ``edgefa.param_mean`` / ``edgefa.param_std`` from the
  file's metadata and needs the face-model bases for landmarks.
- ``postprocess=True``: a uint8 NHWC crop (face-model crop size, RGB or BGR as recorded) in;
  out come ``landmarks`` (B, 68, 3) in crop pixels, ``pose`` (B, 3) yaw/pitch/roll in degrees
  and the raw ``params`` (B, 62). Normalisation, resize, de-whitening and the 3DMM landmark
  math are in the graph, so a phone app needs no BFM files.

Everything is written with ops that ONNX, LiteRT and CoreML all convert (no ``linalg.cross``,
no boolean indexing): the pose math is ``edgefa.facemodel.geometry``'s own; ``tests/test_export.py``
pins the graph's outputs to the library's.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgefa.facemodel.base import N_EXPR, N_POSE, N_SHAPE, FaceModel
from edgefa.facemodel.geometry import pose_matrix_to_euler, project_to_crop
from edgefa.runtime.formats import POST_OUTPUTS, RAW_OUTPUTS
from edgefa.runtime.inputs import prepare_input


def _f32(arr) -> torch.Tensor:
    return torch.as_tensor(np.asarray(arr, dtype=np.float32))


class ExportGraph(nn.Module):
    def __init__(self, model: nn.Module, face_model: FaceModel, postprocess: bool = False,
                 input_color: str = "RGB"):
        super().__init__()
        if input_color not in ("RGB", "BGR"):
            raise ValueError(f"input_color must be RGB or BGR, got {input_color!r}")
        self.net = model.eval()
        self.postprocess = bool(postprocess)
        self.net_size = int(model.input_size)
        self.fm_size = int(face_model.size)  # the crop the pose parameters (and landmarks) refer to
        self.crop_size = self.fm_size if postprocess else self.net_size
        self.input_color = input_color if postprocess else model.input_color
        self.swap_channels = self.input_color != model.input_color
        self.norm_mean = float(model.input_mean)
        self.norm_std = float(model.input_std)
        self.face_model_name = face_model.name
        # buffers (not python floats) so exporters keep them as named constants
        self.register_buffer("param_mean", _f32(face_model.param_mean))
        self.register_buffer("param_std", _f32(face_model.param_std))
        self.register_buffer("lm_mean", _f32(face_model.mean).reshape(1, -1))
        self.register_buffer("lm_basis", torch.cat([_f32(face_model.shape_basis), _f32(face_model.expr_basis)], 1).T.contiguous())

    @property
    def output_meanings(self) -> dict[str, str]:
        return dict(POST_OUTPUTS if self.postprocess else RAW_OUTPUTS)

    def input_spec(self) -> dict:
        """The ``edgefa.input`` metadata: enough for any app to feed the file correctly."""
        if self.postprocess:
            return {"size": [self.crop_size, self.crop_size], "layout": "NHWC", "dtype": "uint8",
                    "color": self.input_color, "mean": [0.0] * 3, "std": [1.0] * 3}
        return {"size": [self.net_size, self.net_size], "layout": "NCHW", "dtype": "float32",
                "color": self.input_color, "mean": [self.norm_mean] * 3, "std": [self.norm_std] * 3}

    def prepare(self, crops_bgr: np.ndarray) -> np.ndarray:
        """uint8 BGR crops (B, S, S, 3) from any dataset -> this graph's input, in numpy."""
        return prepare_input(crops_bgr, self.input_spec())

    def example_input(self, batch: int = 1) -> torch.Tensor:
        if self.postprocess:
            return torch.randint(0, 256, (batch, self.crop_size, self.crop_size, 3), dtype=torch.uint8)
        return torch.randn(batch, 3, self.net_size, self.net_size)

    def _preprocess(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 3, 1, 2).to(torch.float32)
        if self.swap_channels:  # slices + concat: converts everywhere, unlike flip / fancy indexing
            x = torch.cat([x[:, 2:3], x[:, 1:2], x[:, 0:1]], dim=1)
        if self.crop_size != self.net_size:
            x = F.interpolate(x, size=(self.net_size, self.net_size), mode="bilinear", align_corners=False)
        return (x - self.norm_mean) / self.norm_std

    def geometry(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw params (B, 62) -> landmarks (B, 68, 3) in crop pixels and yaw/pitch/roll (B, 3)."""
        pose = params[:, :N_POSE].reshape(-1, 3, 4)
        alphas = params[:, N_POSE:N_POSE + N_SHAPE + N_EXPR]
        # one matmul over the buffers (named constants in the file), then geometry's own projection
        verts = (self.lm_mean + alphas @ self.lm_basis).reshape(-1, self.lm_mean.shape[1] // 3, 3)
        return project_to_crop(verts, pose, self.fm_size), pose_matrix_to_euler(pose)

    def forward(self, x: torch.Tensor):
        if not self.postprocess:
            return self.net(x)
        params = self.net(self._preprocess(x)) * self.param_std + self.param_mean
        lms, angles = self.geometry(params)
        return lms, angles, params
