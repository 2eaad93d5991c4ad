"""3DMM landmark math, batched, written once for numpy arrays and torch tensors alike.

Each function is written against the array API standard (``array_api_compat.array_namespace``):
numpy in -> numpy ops and numpy out, so running an exported file needs no torch; a torch tensor in
-> torch ops, so ``landmarks(torch_params, fm)`` keeps the autograd graph (it is used in losses) and
traces into exported graphs like plain torch code. Anything that is not an array-API array (a list,
a numpy scalar) is read as a numpy float array (float32 unless it is float64).

Conventions (3DDFA / 3DDFA-V2, see the shared data README):
- params[:12] is the 3x4 matrix [s*R | t] row-major, then 40 shape and 10 expression weights;
- landmarks in crop pixels: V = sR @ (mean + Ws a_s + We a_e) + t, then x -= 1, y = size - y;
- Euler angles (degrees) follow AFLW2000-3D's Pose_Para: R = (Rz(roll) @ Ry(yaw) @ Rx(pitch)).T
  (checked against the ground truth in tests/test_aflw2000.py).
"""
from __future__ import annotations

import math
import weakref

import numpy as np
from array_api_compat import array_namespace, device, is_array_api_obj, is_numpy_array, is_torch_array

from edgefa.facemodel.base import N_EXPR, N_POSE, N_SHAPE, FaceModel


def _array(x):
    """An array-API array (a torch tensor) as it is; anything else as a float numpy array."""
    if is_array_api_obj(x) and not is_numpy_array(x):
        return x
    arr = np.asarray(x)
    return arr if arr.dtype in (np.float32, np.float64) else arr.astype(np.float32)


# id(numpy array) -> (weak reference to it, {(dtype, device): torch tensor}). The weak reference
# drops the entry when the array is collected, so an array that later gets the same id never sees
# another's tensors, and temporary arrays (index results, slices) do not pile up.
_TORCH_CONSTANTS: dict[int, tuple[weakref.ref, dict]] = {}


def _forget(key: int, ref: weakref.ref) -> None:
    entry = _TORCH_CONSTANTS.get(key)
    if entry is not None and entry[0] is ref:  # not a newer array that has taken the id since
        _TORCH_CONSTANTS.pop(key, None)


def _torch_const(arr: np.ndarray, like):
    """``arr`` as a torch tensor of ``like``'s dtype and device, made once per array, dtype and device:
    losses read face-model data on every call, and a host->device copy each time stalls a GPU.
    Face-model arrays are constants: an in-place change to one after its first use is not seen."""
    import torch  # loaded already: ``like`` is a torch tensor

    key = id(arr)
    entry = _TORCH_CONSTANTS.get(key)
    if entry is None or entry[0]() is not arr:
        entry = (weakref.ref(arr, lambda ref, key=key: _forget(key, ref)), {})
        _TORCH_CONSTANTS[key] = entry
    tensors = entry[1]
    slot = (like.dtype, like.device)
    if slot not in tensors:
        # copy=True: a CPU tensor sharing the array's memory would keep the array alive (never freed);
        # inference_mode(False): a plain tensor, which a later training step may save for backward
        with torch.inference_mode(False):
            tensors[slot] = torch.asarray(arr, dtype=like.dtype, device=like.device, copy=True)
    return tensors[slot]


def _const(arr: np.ndarray, like):
    """Face-model data (numpy) as an array of ``like``'s library, dtype and device; cached for torch."""
    if is_torch_array(like) and isinstance(arr, np.ndarray):
        import torch

        # only plain eager tensors: fake / functional tensors (torch.export) and torch.compile
        # tracing must get their own constants, not ones that outlive the trace
        if type(like) is torch.Tensor and not torch.compiler.is_compiling():
            return _torch_const(arr, like)
    return array_namespace(like).asarray(arr, dtype=like.dtype, device=device(like))


def _batched(x, ndim: int):
    """Add a batch axis to a single sample; return (array, squeeze_back)."""
    if x.ndim == ndim - 1:
        return array_namespace(x).expand_dims(x, axis=0), True
    return x, False


def dewhiten(params_w, fm: FaceModel):
    """Whitened (network output) -> raw parameters."""
    params_w = _array(params_w)
    return params_w * _const(fm.param_std, params_w) + _const(fm.param_mean, params_w)


def whiten(params, fm: FaceModel):
    """Raw parameters -> whitened (network target)."""
    params = _array(params)
    return (params - _const(fm.param_mean, params)) / _const(fm.param_std, params)


def split_params(params):
    """(B, 62) -> pose matrix (B, 3, 4), shape (B, 40), expression (B, 10)."""
    xp = array_namespace(params)
    pose = xp.reshape(params[..., :N_POSE], (*params.shape[:-1], 3, 4))
    alpha_shp = params[..., N_POSE:N_POSE + N_SHAPE]
    alpha_exp = params[..., N_POSE + N_SHAPE:N_POSE + N_SHAPE + N_EXPR]
    return pose, alpha_shp, alpha_exp


def model_space_vertices(alpha_shp, alpha_exp, mean, shape_basis, expr_basis):
    """Shape+expression weights (B, 40), (B, 10) -> model-space vertices (B, N, 3)."""
    xp = array_namespace(alpha_shp)
    mean = xp.reshape(_const(mean, alpha_shp), (-1,))
    offsets = alpha_shp @ _const(shape_basis, alpha_shp).T + alpha_exp @ _const(expr_basis, alpha_shp).T
    return xp.reshape(mean + offsets, (alpha_shp.shape[0], -1, 3))


def project_to_crop(vertices, pose, size: int):
    """Model-space (B, N, 3) -> crop pixels (B, N, 3), x right, y down (3DDFA convention)."""
    xp = array_namespace(vertices, pose)
    v = vertices @ xp.matrix_transpose(pose[:, :, :3]) + xp.expand_dims(pose[:, :, 3], axis=1)
    return xp.stack([v[..., 0] - 1, size - v[..., 1], v[..., 2]], axis=-1)


def landmarks(params, fm: FaceModel, dense: bool = False):
    """Raw 62 params (B, 62) or (62,) -> landmarks in crop pixels (B, 68, 3) or (68, 3).

    ``dense=True`` returns every vertex of ``fm.dense`` instead of the 68 landmarks.
    """
    params, squeeze = _batched(_array(params), 2)
    pose, a_shp, a_exp = split_params(params)
    if dense:
        if fm.dense is None:
            raise ValueError(f"face model '{fm.name}' has no dense mesh")
        bases = fm.dense.mean, fm.dense.shape_basis, fm.dense.expr_basis
    else:
        bases = fm.mean, fm.shape_basis, fm.expr_basis
    pts = project_to_crop(model_space_vertices(a_shp, a_exp, *bases), pose, fm.size)
    return pts[0] if squeeze else pts


def pose_to_rotation(pose):
    """Pose matrix (B, 3, 4) -> scale (B,), rotation (B, 3, 3), translation (B, 3) as in 3DDFA's P2sRt.

    Written in ops every exporter converts (no linalg.norm / linalg.cross): the export graph uses it."""
    xp = array_namespace(pose)
    r1, r2 = pose[:, 0, :3], pose[:, 1, :3]
    n1, n2 = xp.sqrt(xp.sum(r1 * r1, axis=-1)), xp.sqrt(xp.sum(r2 * r2, axis=-1))
    r1, r2 = r1 / xp.expand_dims(n1, axis=-1), r2 / xp.expand_dims(n2, axis=-1)
    r3 = xp.stack([r1[:, 1] * r2[:, 2] - r1[:, 2] * r2[:, 1],
                   r1[:, 2] * r2[:, 0] - r1[:, 0] * r2[:, 2],
                   r1[:, 0] * r2[:, 1] - r1[:, 1] * r2[:, 0]], axis=-1)
    return (n1 + n2) / 2, xp.stack([r1, r2, r3], axis=1), pose[:, :, 3]


def rotation_to_euler(rot):
    """Rotation (B, 3, 3) -> (B, 3) yaw, pitch, roll in degrees, AFLW2000-3D ``Pose_Para`` convention.

    The pose matrix's rotation is ``(Rz(roll) @ Ry(yaw) @ Rx(pitch)).T`` in that convention (found
    by matching the 3DDFA-V2 peer's rotations to the ground truth; 3DDFA-V2's own matrix2angle
    gets yaw right but pitch/roll 10-25 degrees off on AFLW2000-3D). Export-friendly ops.
    """
    xp = array_namespace(rot)
    m = xp.matrix_transpose(rot)
    sin_yaw = xp.clip(-m[:, 2, 0], -1.0, 1.0)
    yaw = xp.asin(sin_yaw)
    pitch = xp.atan2(m[:, 2, 1], m[:, 2, 2])
    roll = xp.atan2(m[:, 1, 0], m[:, 0, 0])
    # at |yaw| = 90 degrees pitch and roll are not separable: put it all in pitch, roll = 0
    locked = xp.abs(sin_yaw) > 0.9999
    pitch_locked = xp.where(sin_yaw > 0, xp.atan2(m[:, 0, 1], m[:, 0, 2]), xp.atan2(-m[:, 0, 1], -m[:, 0, 2]))
    pitch = xp.where(locked, pitch_locked, pitch)
    roll = xp.where(locked, xp.zeros_like(roll), roll)
    return xp.stack([yaw, pitch, roll], axis=-1) * (180.0 / math.pi)


def pose_matrix_to_euler(pose):
    """(B, 3, 4) [sR|t] -> (B, 3) yaw, pitch, roll in degrees (the export graph's pose output)."""
    return rotation_to_euler(pose_to_rotation(pose)[1])


def euler_angles(params):
    """Raw params (B, 62) or (62,) -> yaw, pitch, roll in degrees (AFLW2000-3D Pose_Para signs)."""
    params, squeeze = _batched(_array(params), 2)
    out = pose_matrix_to_euler(split_params(params)[0])
    return out[0] if squeeze else out


def euler_to_rotation(angles):
    """(B, 3) yaw, pitch, roll in degrees -> rotation (B, 3, 3); inverse of ``rotation_to_euler``."""
    angles, squeeze = _batched(_array(angles), 2)
    xp = array_namespace(angles)
    rad = angles * (math.pi / 180.0)
    yaw, pitch, roll = rad[..., 0], rad[..., 1], rad[..., 2]
    one, zero = xp.ones_like(yaw), xp.zeros_like(yaw)

    def mat(rows):
        return xp.stack([xp.stack(r, axis=-1) for r in rows], axis=-2)

    rx = mat([[one, zero, zero], [zero, xp.cos(pitch), -xp.sin(pitch)], [zero, xp.sin(pitch), xp.cos(pitch)]])
    ry = mat([[xp.cos(yaw), zero, xp.sin(yaw)], [zero, one, zero], [-xp.sin(yaw), zero, xp.cos(yaw)]])
    rz = mat([[xp.cos(roll), -xp.sin(roll), zero], [xp.sin(roll), xp.cos(roll), zero], [zero, zero, one]])
    rot = xp.matrix_transpose(rz @ ry @ rx)
    return rot[0] if squeeze else rot
