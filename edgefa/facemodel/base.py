"""The face-model interface shared by the BFM slice and the synthetic model.

A face model is a linear 3DMM over the 68 landmarks: ``mean`` (68, 3) plus a shape basis
(204, 40) and an expression basis (204, 10), rows interleaved x0 y0 z0 x1 ... as in 3DDFA.
Model space is x right (image), y up, z toward the camera. ``param_mean`` / ``param_std``
whiten the 62 parameters (12 pose + 40 shape + 10 expression) a network regresses.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

N_POSE, N_SHAPE, N_EXPR = 12, 40, 10
N_PARAMS = N_POSE + N_SHAPE + N_EXPR
N_LANDMARKS = 68


@dataclass(frozen=True, eq=False)
class DenseMesh:
    """A dense triangle mesh of the same 3DMM; ``landmark_index`` picks the 68 landmarks."""

    mean: np.ndarray  # (N, 3)
    shape_basis: np.ndarray  # (3N, 40)
    expr_basis: np.ndarray  # (3N, 10)
    triangles: np.ndarray  # (T, 3) int32
    landmark_index: np.ndarray  # (68,) int
    extras: dict = field(default_factory=dict)  # per-vertex attributes, e.g. region labels


@dataclass(frozen=True, eq=False)
class FaceModel:
    name: str
    mean: np.ndarray  # (68, 3)
    shape_basis: np.ndarray  # (204, 40)
    expr_basis: np.ndarray  # (204, 10)
    param_mean: np.ndarray  # (62,)
    param_std: np.ndarray  # (62,)
    size: int = 120  # crop size (pixels) the pose parameters refer to
    dense: DenseMesh | None = None

    def __post_init__(self):
        checks = {
            "mean": (self.mean, (N_LANDMARKS, 3)),
            "shape_basis": (self.shape_basis, (3 * N_LANDMARKS, N_SHAPE)),
            "expr_basis": (self.expr_basis, (3 * N_LANDMARKS, N_EXPR)),
            "param_mean": (self.param_mean, (N_PARAMS,)),
            "param_std": (self.param_std, (N_PARAMS,)),
        }
        for key, (arr, shape) in checks.items():
            if tuple(arr.shape) != shape:
                raise ValueError(f"face model '{self.name}': {key} has shape {arr.shape}, expected {shape}")

    def state_dict(self) -> dict:
        """Plain arrays, so a checkpoint can carry its own face model (loadable tensors only)."""
        return {
            "name": self.name,
            "size": self.size,
            "mean": self.mean,
            "shape_basis": self.shape_basis,
            "expr_basis": self.expr_basis,
            "param_mean": self.param_mean,
            "param_std": self.param_std,
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> FaceModel:
        arrays = {k: np.asarray(state[k], dtype=np.float32) for k in
                  ("mean", "shape_basis", "expr_basis", "param_mean", "param_std")}
        return cls(name=str(state["name"]), size=int(state["size"]), **arrays)
