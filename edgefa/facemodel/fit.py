"""Least-squares fit of the 62 parameters to given 68 landmarks (the reverse of ``landmarks``).

Alternates two linear problems, as in the classic 3DMM fitting recipe:
1. pose with the current shape fixed: a similarity (Umeyama) fit for 3D landmarks, or a
   scaled-orthographic fit (affine least squares, then the nearest scaled rotation) for 2D ones;
2. shape + expression with the pose fixed: ridge regression with the prior ``(w / param_std)^2``,
   which keeps the weights plausible when only 2D points constrain them.
"""
from __future__ import annotations

import torch

from edgefa.facemodel.base import N_EXPR, N_LANDMARKS, N_POSE, N_SHAPE, FaceModel
from edgefa.facemodel.geometry import _batched, _const, _numpy_in_out


def _umeyama(src: torch.Tensor, dst: torch.Tensor):
    """Similarity (s, R, t) minimising |s R src + t - dst|^2; src, dst (B, N, 3)."""
    mu_s, mu_d = src.mean(1, keepdim=True), dst.mean(1, keepdim=True)
    xs, xd = src - mu_s, dst - mu_d
    cov = xd.transpose(1, 2) @ xs / src.shape[1]
    u, sv, vh = torch.linalg.svd(cov)
    d = torch.ones_like(sv)
    d[:, 2] = torch.sign(torch.linalg.det(u @ vh))
    rot = u @ torch.diag_embed(d) @ vh
    var_s = (xs ** 2).sum((1, 2)) / src.shape[1]
    scale = (sv * d).sum(1) / var_s
    t = mu_d.squeeze(1) - scale.unsqueeze(1) * (rot @ mu_s.transpose(1, 2)).squeeze(2)
    return scale, rot, t


def _scaled_orthographic(src: torch.Tensor, dst2: torch.Tensor):
    """Scaled rotation (s, R) and 2D translation fitting x,y of dst2 (B, N, 2) from src (B, N, 3)."""
    ones = torch.ones_like(src[..., :1])
    a = torch.cat([src, ones], dim=-1)  # (B, N, 4)
    affine = torch.linalg.lstsq(a, dst2).solution.transpose(1, 2)  # (B, 2, 4)
    m = affine[:, :, :3]
    # nearest pair of orthogonal rows of equal norm: polar decomposition of the 2x3 block
    u, sv, vh = torch.linalg.svd(m, full_matrices=False)
    rows = u @ vh  # (B, 2, 3) orthonormal rows
    scale = sv.mean(1)
    r3 = torch.linalg.cross(rows[:, 0], rows[:, 1], dim=-1)
    rot = torch.cat([rows, r3.unsqueeze(1)], dim=1)
    centroid = (scale.view(-1, 1, 1) * (src @ rows.transpose(1, 2))).mean(1)  # (B, 2)
    t2 = dst2.mean(1) - centroid
    return scale, rot, t2


@_numpy_in_out
def fit_params(points, fm: FaceModel, iterations: int = 15, prior: float = 0.1):
    """Fit raw 62 params to landmarks in crop pixels, (B, 68, 2|3) or (68, 2|3).

    With 2D points the depth row of the pose comes from the rotation and t_z from the
    parameter mean (orthographic projection leaves it free).
    """
    pts, squeeze = _batched(points, 3)
    if pts.shape[-2] != N_LANDMARKS or pts.shape[-1] not in (2, 3):
        raise ValueError(f"fit_params: expected (B, 68, 2|3) landmarks, got {tuple(pts.shape)}")
    work = pts.to(torch.float64)
    is_3d = work.shape[-1] == 3
    # undo the crop-pixel convention: x + 1, y flipped back up
    target = work.clone()
    target[..., 0] = work[..., 0] + 1
    target[..., 1] = fm.size - work[..., 1]
    dims = 3 if is_3d else 2
    batch = work.shape[0]

    mean = _const(fm.mean, work).reshape(-1)
    basis = torch.cat([_const(fm.shape_basis, work), _const(fm.expr_basis, work)], dim=1)  # (204, 50)
    std = _const(fm.param_std[N_POSE:N_POSE + N_SHAPE + N_EXPR], work)
    coeff = torch.zeros(batch, N_SHAPE + N_EXPR, dtype=work.dtype, device=work.device)
    t_z = float(fm.param_mean[11])

    def fit_pose(coeff):
        shape = (mean + coeff @ basis.T).reshape(batch, N_LANDMARKS, 3)
        if is_3d:
            scale, rot, t = _umeyama(shape, target)
        else:
            scale, rot, t2 = _scaled_orthographic(shape, target[..., :2])
            t = torch.cat([t2, torch.full_like(t2[:, :1], t_z)], dim=1)
        return scale.view(-1, 1, 1) * rot, t  # sR (B, 3, 3), t (B, 3)

    for _ in range(iterations):
        sr, t = fit_pose(coeff)
        # residual after the mean shape, per landmark, in the observed dims
        resid = target - (mean.reshape(N_LANDMARKS, 3) @ sr.transpose(1, 2) + t.unsqueeze(1))[..., :dims]
        b = basis.reshape(N_LANDMARKS, 3, -1)  # (68, 3, 50)
        design = torch.einsum("bij,njk->bnik", sr[:, :dims], b).reshape(batch, N_LANDMARKS * dims, -1)
        lhs = design.transpose(1, 2) @ design
        # Gaussian prior on the weights; ``prior`` is the landmark noise variance in pixels^2
        reg = prior * torch.diag_embed((1.0 / std ** 2).expand(batch, -1))
        rhs = design.transpose(1, 2) @ resid.reshape(batch, -1, 1)
        coeff = torch.linalg.solve(lhs + reg, rhs).squeeze(-1)
    sr, t = fit_pose(coeff)

    pose = torch.cat([sr, t.unsqueeze(-1)], dim=-1).reshape(batch, N_POSE)
    out = torch.cat([pose, coeff], dim=1).to(pts.dtype)
    return out[0] if squeeze else out
