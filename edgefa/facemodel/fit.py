"""Least-squares fit of the 62 parameters to given 68 landmarks (the reverse of ``landmarks``).

Alternates two linear problems, as in the classic 3DMM fitting recipe:
1. pose with the current shape fixed: a similarity (Umeyama) fit for 3D landmarks, or a
   scaled-orthographic fit (affine least squares, then the nearest scaled rotation) for 2D ones;
2. shape + expression with the pose fixed: ridge regression with the prior ``(w / param_std)^2``,
   which keeps the weights plausible when only 2D points constrain them.
"""
from __future__ import annotations

import functools

import numpy as np
import torch

from edgefa.facemodel.base import N_EXPR, N_LANDMARKS, N_POSE, N_SHAPE, FaceModel
from edgefa.facemodel.geometry import _batched, _const


def _numpy_in_out(fn):
    """Run a torch implementation on numpy inputs too, returning numpy of the input's float type
    (the fit needs SVD / least squares, which the array-API geometry does not cover)."""

    @functools.wraps(fn)
    def wrapper(x, *args, **kwargs):
        if isinstance(x, torch.Tensor):
            return fn(x, *args, **kwargs)
        arr = np.asarray(x)
        dtype = arr.dtype if arr.dtype in (np.float32, np.float64) else np.float32
        return fn(torch.from_numpy(np.ascontiguousarray(arr, dtype=dtype)), *args, **kwargs).detach().cpu().numpy()

    return wrapper


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


def polar_rotation(m: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Orthogonal polar factor U V^T of (B, 3, 3) matrices by scaled Newton iteration (Higham 1986):
    X <- (g X + X^-T / g) / 2, g = sqrt(|X^-1|_F / |X|_F), with X^-T = cofactor(X) / det(X) written out
    (5 steps reach float32 precision for face point clouds; more for ill-conditioned matrices).
    The same rotation as Umeyama's SVD when det(m) > 0, in ops every exporter converts (no SVD).
    A mirrored point set (det < 0) gets the improper factor: Umeyama's sign fix needs the SVD."""
    nxt = torch.tensor([1, 2, 0], device=m.device)
    prv = torch.tensor([2, 0, 1], device=m.device)
    x = m
    for _ in range(steps):
        # cofactor rows (x1 x x2, x2 x x0, x0 x x1) for all rows and columns at once
        a, b = x.index_select(1, nxt), x.index_select(1, prv)
        cof = a.index_select(2, nxt) * b.index_select(2, prv) - a.index_select(2, prv) * b.index_select(2, nxt)
        det = (x * cof).sum((1, 2), keepdim=True) / 3.0  # each row's dot with its cofactor row is det
        inv_t = cof / det
        g = torch.sqrt(torch.sqrt((inv_t * inv_t).sum((1, 2), keepdim=True) / (x * x).sum((1, 2), keepdim=True)))
        x = 0.5 * (g * x + inv_t / g)
    return x


class LandmarkFit3D(torch.nn.Module):
    """``fit_params`` for 3D landmarks as a module of plain tensor ops, so a model that regresses
    points (``dense_mobilenetv2``) exports with its fit to ONNX / TFLite / CoreML. Same alternation
    (similarity, then ridge shape + expression with the same prior) in float32; the ridge solve uses
    that for a rotation R, (sR B)^T (sR B) = s^2 B^T B, so one eigen-decomposition done here, in float64,
    turns every solve into matrix products."""

    def __init__(self, fm: FaceModel, iterations: int = 15, prior: float = 0.1, polar_steps: int = 5):
        super().__init__()
        f64 = torch.float64  # buffers derive from the face model: not saved (persistent=False)
        basis = torch.cat([torch.as_tensor(fm.shape_basis, dtype=f64), torch.as_tensor(fm.expr_basis, dtype=f64)], 1)
        std = torch.as_tensor(fm.param_std[N_POSE:N_POSE + N_SHAPE + N_EXPR], dtype=f64)
        p = std / prior ** 0.5  # P = diag(prior / std^2)^(-1/2)
        lam, q = torch.linalg.eigh(p[:, None] * (basis.T @ basis) * p[None, :])
        self.iterations, self.polar_steps, self.size = int(iterations), int(polar_steps), float(fm.size)
        self.register_buffer("mean", torch.as_tensor(fm.mean, dtype=f64).reshape(N_LANDMARKS, 3).float(),
                             persistent=False)
        self.register_buffer("basis_t", basis.T.contiguous().float(), persistent=False)  # (50, 204)
        self.register_buffer("pq", (p[:, None] * q).float(), persistent=False)  # P Q
        self.register_buffer("eig", lam.clamp_min(0).float(), persistent=False)

    def _pose(self, shape: torch.Tensor, target: torch.Tensor):
        mu_s, mu_d = shape.mean(1, keepdim=True), target.mean(1, keepdim=True)
        xs, xd = shape - mu_s, target - mu_d
        cov = xd.transpose(1, 2) @ xs / shape.shape[1]
        rot = polar_rotation(cov, self.polar_steps)
        scale = (rot * cov).sum((1, 2)) / ((xs * xs).sum((1, 2)) / shape.shape[1])
        t = mu_d.squeeze(1) - scale.unsqueeze(1) * (mu_s.squeeze(1).unsqueeze(1) @ rot.transpose(1, 2)).squeeze(1)
        return scale, rot, t

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """(B, 68, 3) landmarks in crop pixels -> raw 62 params (B, 62)."""
        target = torch.stack([points[..., 0] + 1.0, self.size - points[..., 1], points[..., 2]], dim=-1)
        coeff = torch.zeros(points.shape[0], self.basis_t.shape[0], dtype=points.dtype, device=points.device)
        for step in range(self.iterations + 1):
            shape = self.mean + (coeff @ self.basis_t).reshape(-1, N_LANDMARKS, 3)
            scale, rot, t = self._pose(shape, target)
            if step == self.iterations:  # the last pose is fitted to the final shape
                break
            resid = target - (self.mean @ rot.transpose(1, 2) * scale.view(-1, 1, 1) + t.unsqueeze(1))
            rhs = scale.unsqueeze(1) * ((resid @ rot).reshape(points.shape[0], -1) @ self.basis_t.T)  # s B^T R^T r
            scaled = (rhs @ self.pq) / (scale.unsqueeze(1) ** 2 * self.eig + 1.0)
            coeff = scaled @ self.pq.T
        pose = torch.cat([scale.view(-1, 1, 1) * rot, t.unsqueeze(-1)], dim=-1).reshape(-1, N_POSE)
        return torch.cat([pose, coeff], dim=1)
