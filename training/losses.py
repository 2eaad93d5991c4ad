"""Training losses from the papers in shared/papers and from 3DDFA, batched torch, mean over the batch.

Parameter losses take *whitened* 62-vectors (the network output space, ``geometry.whiten``) and a
``FaceModel``; landmark losses take point tensors (B, N, D) in any consistent unit (crop pixels).
Losses with a ``reduction`` argument return the batch mean ("mean", the default) or one value per
sample ("none", shape (B,)) whose mean is that batch mean (``reduce_batch``): a caller masking out
unlabelled samples averages those instead of indexing the batch (no host sync on a GPU).
``build_loss(name, **kw)`` turns a config name into a callable.
"""
from __future__ import annotations

import functools
import inspect
import math

import numpy as np
import torch
import torch.nn.functional as F

from edgefa.errors import unknown_name_error
from edgefa.facemodel.base import FaceModel
from edgefa.facemodel.geometry import (
    dewhiten,
    euler_angles,
    landmarks,
    model_space_vertices,
    project_to_crop,
    split_params,
)

T_Z = 11  # index of the z translation in the 62 parameters
REDUCTIONS = ("mean", "none")


def reduce_batch(values: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Elementwise loss values (B, ...) -> their mean ("mean") or each sample's mean (B,) ("none").

    Every sample has as many elements, so the mean of the per-sample means is the batch mean."""
    if reduction == "mean":
        return values.mean()
    if reduction == "none":
        return values.reshape(values.shape[0], -1).mean(dim=1)
    raise unknown_name_error("reduction", reduction, REDUCTIONS)


def _vertices(params_raw: torch.Tensor, fm: FaceModel, dense_index: np.ndarray | None = None) -> torch.Tensor:
    """Raw params (B, 62) -> the 68 landmarks, plus the dense vertices ``dense_index`` if given, (B, N, 3)."""
    pts = landmarks(params_raw, fm)
    if dense_index is None or len(dense_index) == 0:
        return pts
    d = fm.dense
    rows = np.stack([3 * dense_index, 3 * dense_index + 1, 3 * dense_index + 2], 1).reshape(-1)
    pose, a_shp, a_exp = split_params(params_raw)
    extra = model_space_vertices(a_shp, a_exp, d.mean[dense_index], d.shape_basis[rows], d.expr_basis[rows])
    return torch.cat([pts, project_to_crop(extra, pose, fm.size)], dim=1)


def _resample_index(fm: FaceModel, resample: int, generator: torch.Generator | None) -> np.ndarray | None:
    if resample <= 0:
        return None
    if fm.dense is None:
        raise ValueError(f"wpdc_loss: resample={resample} needs a face model with a dense mesh; "
                         f"'{fm.name}' has none (use resample=0)")
    n = len(fm.dense.mean)
    if resample >= n:
        return np.arange(n)
    return torch.randperm(n, generator=generator)[:resample].numpy()


def wpdc_weights(pred_w, target_w, fm: FaceModel, resample: int = 0, normalize: str = "sum",
                 ignore_tz: bool = False, eps: float = 1e-6, generator: torch.Generator | None = None):
    """The detached WPDC importance weights (B, 62); see ``wpdc_loss``."""
    with torch.no_grad():
        # float64: V(p_i^de) - V(p) cancels to ~1e-5 px noise in float32 for parameters already right
        pw, tw = pred_w.detach().double(), target_w.detach().double()
        b, p = tw.shape
        index = _resample_index(fm, resample, generator)
        mixed = tw.unsqueeze(1).repeat(1, p, 1)  # row i: target with parameter i from the prediction
        diag = torch.arange(p, device=tw.device)
        mixed[:, diag, diag] = pw
        v_ref = _vertices(dewhiten(tw, fm), fm, index)
        v_mix = _vertices(dewhiten(mixed.reshape(b * p, p), fm), fm, index).reshape(b, p, *v_ref.shape[1:])
        w = (v_mix - v_ref.unsqueeze(1)).flatten(2).norm(dim=-1) + eps
        if ignore_tz:
            w[:, T_Z] = 0.0
        if normalize == "sum":
            return (w / w.sum(dim=1, keepdim=True)).to(pred_w.dtype)
        if normalize == "max":
            return (w / w.max(dim=1, keepdim=True).values).to(pred_w.dtype)
        raise unknown_name_error("wpdc normalisation", normalize, ("sum", "max"))


def wpdc_loss(pred_w, target_w, fm: FaceModel, resample: int = 0, normalize: str = "sum",
              ignore_tz: bool = False, eps: float = 1e-6, generator: torch.Generator | None = None,
              reduction: str = "mean"):
    """Weighted Parameter Distance Cost (Zhu et al., "Face Alignment Across Large Poses: A 3D Solution", CVPR 2016
    cost functions; 3DDFA's WPDCLoss code).

    For parameter i, p_i^de is the target with its i-th entry replaced by the prediction, and
        w_i = || V(p_i^de) - V(p_target) ||        (Frobenius norm over all vertices, crop pixels)
    with V the landmarks of ``fm`` on de-whitened params (plus ``resample`` random dense vertices,
    3DDFA's "resample" style uses 68 + 132). Weights are detached and computed exactly through the
    model (3DDFA's code uses a closed-form approximation with a fixed shape scale).
        normalize="sum" (default): w~ = w / sum(w); loss = mean_b sum_i w~_i (pred_w_i - target_w_i)^2
            -> a weighted average of squared whitened errors, on the scale of the plain parameter MSE.
        normalize="max" (3DDFA code): w~ = w / max(w); loss = mean_{b,i} w~_i (pred_w_i - target_w_i)^2.
    ``eps`` (1e-6, as in 3DDFA) keeps the weights defined when pred == target. ``ignore_tz=True`` sets
    w_11 = 0 like 3DDFA's code (its labels leave the z translation undefined); the default keeps it,
    since edgefa's labels do define t_z. ``reduction``: see ``reduce_batch``.
    """
    w = wpdc_weights(pred_w, target_w, fm, resample, normalize, ignore_tz, eps, generator)
    sq = w * (pred_w - target_w) ** 2
    return reduce_batch(sq.sum(dim=1) if normalize == "sum" else sq, reduction)


def vdc_loss(pred_w, target_w, fm: FaceModel, dense: bool = False, ignore_tz: bool = False,
             reduction: str = "mean"):
    """Vertex Distance Cost (3DDFA, Zhu et al. CVPR 2016 cost functions): E = ||V(p_pred) - V(p_target)||^2, here as
        loss = mean_b (1/N) sum_n || v_n(pred) - v_n(target) ||_2^2     (squared Euclidean, crop pixels^2)
    over the 68 landmarks (all dense vertices if ``dense``), on de-whitened params. (3DDFA's code
    averages over coordinates too, i.e. 1/3 of this.) ``ignore_tz`` copies the target t_z into the
    prediction, as 3DDFA's code does. ``reduction``: see ``reduce_batch``.
    """
    pred_raw, target_raw = dewhiten(pred_w, fm), dewhiten(target_w, fm)
    if ignore_tz:
        pred_raw = torch.cat([pred_raw[:, :T_Z], target_raw[:, T_Z:T_Z + 1], pred_raw[:, T_Z + 1:]], dim=1)
    vp, vt = landmarks(pred_raw, fm, dense=dense), landmarks(target_raw, fm, dense=dense)
    return reduce_batch(((vp - vt) ** 2).sum(dim=-1), reduction)


def param_l2_loss(pred_w, target_w, reduction: str = "mean"):
    """Plain mean squared error of the whitened parameters; ``reduction``: see ``reduce_batch``."""
    return reduce_batch((pred_w - target_w) ** 2, reduction)


def _wing(x: torch.Tensor, w: float, eps: float) -> torch.Tensor:
    ax = x.abs()
    c = w - w * math.log(1.0 + w / eps)
    return torch.where(ax < w, w * torch.log1p(ax / eps), ax - c)


def wing_loss(pred, target, w: float = 10.0, eps: float = 2.0, reduction: str = "mean"):
    """Wing loss (Feng et al., CVPR 2018; defaults w=10, eps=2), elementwise on x = pred - target:
        wing(x) = w ln(1 + |x|/eps)  if |x| < w,   |x| - C otherwise,   C = w - w ln(1 + w/eps);
    mean over all elements (``reduction``: see ``reduce_batch``).
    """
    return reduce_batch(_wing(pred - target, w, eps), reduction)


def wing_mse_loss(pred, target, w1: float = 1.5, w2: float = 0.5, wing_w: float = 10.0, wing_eps: float = 2.0,
                  mse_index=None, reduction: str = "mean"):
    """Hybrid Wing + MSE (Basak et al., dense-520 landmarks, Sec. 3.2, Eq. 2): L = w1 * Wing + w2 * MSE,
    w1 = 1.5, w2 = 0.5 (paper). Wing as in ``wing_loss``, MSE = mean of squared elementwise errors.
    The text quotes Wing's w=15, eps=3; the authors' training code uses WingLoss() = (10, 2), the default
    here. Their code applies MSE to the 68-keypoint subset of the 520 points: pass those indices (into
    the point axis -2) as ``mse_index``; None = all points. ``reduction``: see ``reduce_batch``.
    """
    p, t = (pred, target) if mse_index is None else (pred[..., mse_index, :], target[..., mse_index, :])
    return w1 * wing_loss(pred, target, wing_w, wing_eps, reduction) + w2 * reduce_batch((p - t) ** 2, reduction)


MULTITASK_WEIGHTS = {"landmarks": 1.0, "pose": 1.0, "params": 1.0}


def multitask_loss(pred: dict, target: dict, weights: dict | None = None, beta: float = 1.0):
    """Multi-task loss (Kim et al., MobileViT 3D landmarks + pose, Sec. 2, Eqs. 2-5), mean over the batch:
        L_lmk   = sum_n SmoothL1_beta(l_n - l_n*)        summed over landmarks and coordinates   (Eq. 2)
        L_pose  = sum_{i=1..3} |p_i - p_i*|              Euler angles, in the caller's unit      (Eq. 3)
        L_param = sum_{m in pose, shape, exp} ||a_m - a_m*||^2 = squared norm of the 62 (whitened) (Eq. 4)
        L_total = l1 L_lmk + l2 L_pose + l3 L_param                                              (Eq. 5)
    Keys in ``pred``/``target``: "landmarks" (B, N, D; a 3D prediction is cut to a 2D target's D),
    "pose" (B, 3), "params" (B, 62). The paper gives no lambda values: defaults are 1; ``weights``
    overrides them and a weight of 0 skips the term. Returns (total, {term: unweighted value}).
    """
    lam = dict(MULTITASK_WEIGHTS)
    for key, value in (weights or {}).items():
        if key not in lam:
            raise unknown_name_error("multitask loss term", key, lam)
        lam[key] = float(value)
    terms = {}
    for key, weight in lam.items():
        if weight == 0:
            continue
        if key not in pred or key not in target:
            raise ValueError(f"multitask_loss: term '{key}' has weight {weight} but "
                             f"{'pred' if key not in pred else 'target'} has no '{key}'")
        p, t = pred[key], target[key]
        if key == "landmarks":
            p = p[..., :t.shape[-1]]
            terms[key] = F.smooth_l1_loss(p, t, reduction="none", beta=beta).flatten(1).sum(1).mean()
        elif key == "pose":
            terms[key] = (p - t).abs().sum(-1).mean()
        else:
            terms[key] = ((p - t) ** 2).sum(-1).mean()
    if not terms:
        raise ValueError("multitask_loss: every term has weight 0")
    return sum(lam[k] * v for k, v in terms.items()), terms


def euler_angle_loss(pred_w, target_w, fm: FaceModel, unit: str = "deg", beta: float = 1.0,
                     target_angles=None, reduction: str = "mean"):
    """Euler Angles Loss (Trans3DHead, Sec. 3.4.1, Eq. 7): L = SmoothL1(E_p - E_t), mean over angles and batch.
    E = (yaw, pitch, roll) from ``geometry.euler_angles`` on de-whitened params (pose_to_rotation +
    rotation_to_euler, differentiable; AFLW2000-3D convention). Differences are wrapped to
    (-180, 180] degrees so roll +179 vs -179 costs 2 degrees. ``unit`` ("deg" default, or "rad") is the
    unit SmoothL1 (``beta``) sees; the paper leaves it unstated. ``target_angles`` (B, 3, degrees, e.g.
    AFLW2000-3D Pose_Para) replaces the target params' angles when given. ``reduction``: see
    ``reduce_batch``.
    """
    if unit not in ("deg", "rad"):
        raise unknown_name_error("angle unit", unit, ("deg", "rad"))
    e_pred = euler_angles(dewhiten(pred_w, fm))
    if target_angles is None:
        with torch.no_grad():
            target_angles = euler_angles(dewhiten(target_w.detach(), fm))
    diff = e_pred - torch.as_tensor(target_angles, dtype=e_pred.dtype, device=e_pred.device)
    diff = diff - 360.0 * torch.round(diff / 360.0)
    if unit == "rad":
        diff = diff * (math.pi / 180.0)
    return reduce_batch(F.smooth_l1_loss(diff, torch.zeros_like(diff), beta=beta, reduction="none"), reduction)


LANDMARK_KINDS = ("wing", "l1", "l2")


def masked_landmark_loss(pred_pts, target_pts, mask, kind: str = "wing", w: float = 10.0, eps: float = 2.0):
    """Landmark loss on visible points only (partial 2D supervision, e.g. AFLW's 21 points).

    pred_pts (B, N, D') with D' >= D (a 3D prediction is cut to the target's D), target_pts (B, N, D),
    mask (B, N) or (N,) visibility (bool or 0/1). Per point: "wing" sum_d wing(dx_d) (Feng et al. 2018),
    "l1" sum_d |dx_d|, "l2" sum_d dx_d^2 (squared distance). Loss = sum over visible points / number of
    visible points in the whole batch. Hidden targets may hold anything (NaN included); with no visible
    point the loss is 0 and still attached to the graph.
    """
    if kind not in LANDMARK_KINDS:
        raise unknown_name_error("landmark loss kind", kind, LANDMARK_KINDS)
    pred = pred_pts[..., :target_pts.shape[-1]]
    vis = torch.as_tensor(mask, device=pred.device).bool().expand(pred.shape[:-1])
    target = torch.where(vis.unsqueeze(-1), target_pts.to(pred.dtype), pred.detach())
    x = pred - target
    if kind == "wing":
        per_point = _wing(x, w, eps).sum(-1)
    elif kind == "l1":
        per_point = x.abs().sum(-1)
    else:
        per_point = (x ** 2).sum(-1)
    per_point = torch.where(vis, per_point, torch.zeros_like(per_point))
    return per_point.sum() / vis.sum().clamp(min=1).to(pred.dtype)


LOSSES = {
    "wpdc": wpdc_loss,
    "vdc": vdc_loss,
    "wing": wing_loss,
    "wing_mse": wing_mse_loss,
    "multitask": multitask_loss,
    "euler": euler_angle_loss,
    "masked_landmark": masked_landmark_loss,
}


def build_loss(name: str, **kw):
    """Loss by registry name with keyword options bound, e.g. ``build_loss("wing", w=15, eps=3)``."""
    if name not in LOSSES:
        raise unknown_name_error("loss", name, LOSSES)
    fn = LOSSES[name]
    params = inspect.signature(fn).parameters
    for key in kw:
        if key not in params:
            raise unknown_name_error(f"option of loss '{name}'", key, params)
    if not kw:
        return fn
    return functools.wraps(fn)(functools.partial(fn, **kw))


__all__ = ["LOSSES", "REDUCTIONS", "build_loss", "reduce_batch", "wpdc_loss", "wpdc_weights", "vdc_loss",
           "param_l2_loss", "wing_loss", "wing_mse_loss", "multitask_loss", "euler_angle_loss",
           "masked_landmark_loss"]
