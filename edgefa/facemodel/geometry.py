"""3DMM landmark math, batched, for torch tensors and numpy arrays alike.

Each function is written once in torch; numpy inputs are converted in and out, so
``landmarks(np_params, fm)`` returns numpy and ``landmarks(torch_params, fm)`` keeps the
autograd graph (it is used in losses and traced into exported graphs).

Conventions (3DDFA / 3DDFA-V2, see the shared data README):
- params[:12] is the 3x4 matrix [s*R | t] row-major, then 40 shape and 10 expression weights;
- landmarks in crop pixels: V = sR @ (mean + Ws a_s + We a_e) + t, then x -= 1, y = size - y;
- Euler angles (degrees) follow AFLW2000-3D's Pose_Para: R = (Rz(roll) @ Ry(yaw) @ Rx(pitch)).T
  (checked against the ground truth in tests/test_aflw2000.py).
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch

from edgefa.facemodel.base import N_EXPR, N_POSE, N_SHAPE, FaceModel


def _numpy_in_out(fn):
    """Run a torch implementation on numpy inputs too, returning numpy of the input's float type."""

    @functools.wraps(fn)
    def wrapper(x, *args, **kwargs):
        if isinstance(x, torch.Tensor):
            return fn(x, *args, **kwargs)
        arr = np.asarray(x)
        dtype = arr.dtype if arr.dtype in (np.float32, np.float64) else np.float32
        out = fn(torch.from_numpy(np.ascontiguousarray(arr, dtype=dtype)), *args, **kwargs)
        if isinstance(out, tuple):
            return tuple(o.detach().cpu().numpy() for o in out)
        return out.detach().cpu().numpy()

    return wrapper


def _const(arr: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(arr, dtype=like.dtype, device=like.device)


def _batched(x: torch.Tensor, ndim: int):
    """Add a batch axis to a single sample; return (tensor, squeeze_back)."""
    if x.dim() == ndim - 1:
        return x.unsqueeze(0), True
    return x, False


@_numpy_in_out
def dewhiten(params_w, fm: FaceModel):
    """Whitened (network output) -> raw parameters."""
    return params_w * _const(fm.param_std, params_w) + _const(fm.param_mean, params_w)


@_numpy_in_out
def whiten(params, fm: FaceModel):
    """Raw parameters -> whitened (network target)."""
    return (params - _const(fm.param_mean, params)) / _const(fm.param_std, params)


def split_params(params: torch.Tensor):
    """(B, 62) -> pose matrix (B, 3, 4), shape (B, 40), expression (B, 10)."""
    pose = params[..., :N_POSE].reshape(*params.shape[:-1], 3, 4)
    alpha_shp = params[..., N_POSE:N_POSE + N_SHAPE]
    alpha_exp = params[..., N_POSE + N_SHAPE:N_POSE + N_SHAPE + N_EXPR]
    return pose, alpha_shp, alpha_exp


def model_space_vertices(alpha_shp, alpha_exp, mean, shape_basis, expr_basis):
    """Shape+expression weights (B, 40), (B, 10) -> model-space vertices (B, N, 3)."""
    mean = _const(mean, alpha_shp).reshape(-1)
    offsets = alpha_shp @ _const(shape_basis, alpha_shp).T + alpha_exp @ _const(expr_basis, alpha_shp).T
    return (mean + offsets).reshape(alpha_shp.shape[0], -1, 3)


def project_to_crop(vertices: torch.Tensor, pose: torch.Tensor, size: int) -> torch.Tensor:
    """Model-space (B, N, 3) -> crop pixels (B, N, 3), x right, y down (3DDFA convention)."""
    v = vertices @ pose[:, :, :3].transpose(1, 2) + pose[:, :, 3].unsqueeze(1)
    x = v[..., 0] - 1
    y = size - v[..., 1]
    return torch.stack([x, y, v[..., 2]], dim=-1)


@_numpy_in_out
def landmarks(params, fm: FaceModel, dense: bool = False):
    """Raw 62 params (B, 62) or (62,) -> landmarks in crop pixels (B, 68, 3) or (68, 3).

    ``dense=True`` returns every vertex of ``fm.dense`` instead of the 68 landmarks.
    """
    params, squeeze = _batched(params, 2)
    pose, a_shp, a_exp = split_params(params)
    if dense:
        if fm.dense is None:
            raise ValueError(f"face model '{fm.name}' has no dense mesh")
        bases = fm.dense.mean, fm.dense.shape_basis, fm.dense.expr_basis
    else:
        bases = fm.mean, fm.shape_basis, fm.expr_basis
    pts = project_to_crop(model_space_vertices(a_shp, a_exp, *bases), pose, fm.size)
    return pts[0] if squeeze else pts


def pose_to_rotation(pose: torch.Tensor):
    """Pose matrix (B, 3, 4) -> scale (B,), rotation (B, 3, 3), translation (B, 3) as in 3DDFA's P2sRt.

    Written in ops every exporter converts (no linalg.norm / linalg.cross): the export graph uses it."""
    r1, r2 = pose[:, 0, :3], pose[:, 1, :3]
    n1, n2 = torch.sqrt((r1 * r1).sum(-1)), torch.sqrt((r2 * r2).sum(-1))
    r1, r2 = r1 / n1.unsqueeze(-1), r2 / n2.unsqueeze(-1)
    r3 = torch.stack([r1[:, 1] * r2[:, 2] - r1[:, 2] * r2[:, 1],
                      r1[:, 2] * r2[:, 0] - r1[:, 0] * r2[:, 2],
                      r1[:, 0] * r2[:, 1] - r1[:, 1] * r2[:, 0]], dim=-1)
    return (n1 + n2) / 2, torch.stack([r1, r2, r3], dim=1), pose[:, :, 3]


def rotation_to_euler(rot: torch.Tensor) -> torch.Tensor:
    """Rotation (B, 3, 3) -> (B, 3) yaw, pitch, roll in degrees, AFLW2000-3D ``Pose_Para`` convention.

    The pose matrix's rotation is ``(Rz(roll) @ Ry(yaw) @ Rx(pitch)).T`` in that convention (found
    by matching the 3DDFA-V2 peer's rotations to the ground truth; 3DDFA-V2's own matrix2angle
    gets yaw right but pitch/roll 10-25 degrees off on AFLW2000-3D). Export-friendly ops.
    """
    m = rot.transpose(1, 2)
    sin_yaw = (-m[:, 2, 0]).clamp(-1.0, 1.0)
    yaw = torch.asin(sin_yaw)
    pitch = torch.atan2(m[:, 2, 1], m[:, 2, 2])
    roll = torch.atan2(m[:, 1, 0], m[:, 0, 0])
    # at |yaw| = 90 degrees pitch and roll are not separable: put it all in pitch, roll = 0
    locked = sin_yaw.abs() > 0.9999
    pitch_locked = torch.where(sin_yaw > 0, torch.atan2(m[:, 0, 1], m[:, 0, 2]),
                               torch.atan2(-m[:, 0, 1], -m[:, 0, 2]))
    pitch = torch.where(locked, pitch_locked, pitch)
    roll = torch.where(locked, torch.zeros_like(roll), roll)
    return torch.stack([yaw, pitch, roll], dim=-1) * (180.0 / math.pi)


def pose_matrix_to_euler(pose: torch.Tensor) -> torch.Tensor:
    """(B, 3, 4) [sR|t] -> (B, 3) yaw, pitch, roll in degrees (the export graph's pose output)."""
    return rotation_to_euler(pose_to_rotation(pose)[1])


@_numpy_in_out
def euler_angles(params):
    """Raw params (B, 62) or (62,) -> yaw, pitch, roll in degrees (AFLW2000-3D Pose_Para signs)."""
    params, squeeze = _batched(params, 2)
    out = pose_matrix_to_euler(split_params(params)[0])
    return out[0] if squeeze else out


@_numpy_in_out
def euler_to_rotation(angles):
    """(B, 3) yaw, pitch, roll in degrees -> rotation (B, 3, 3); inverse of ``rotation_to_euler``."""
    angles, squeeze = _batched(angles, 2)
    yaw, pitch, roll = (angles * (math.pi / 180.0)).unbind(-1)
    one, zero = torch.ones_like(yaw), torch.zeros_like(yaw)

    def mat(rows):
        return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)

    rx = mat([[one, zero, zero], [zero, pitch.cos(), -pitch.sin()], [zero, pitch.sin(), pitch.cos()]])
    ry = mat([[yaw.cos(), zero, yaw.sin()], [zero, one, zero], [-yaw.sin(), zero, yaw.cos()]])
    rz = mat([[roll.cos(), -roll.sin(), zero], [roll.sin(), roll.cos(), zero], [zero, zero, one]])
    rot = (rz @ ry @ rx).transpose(-1, -2)
    return rot[0] if squeeze else rot
