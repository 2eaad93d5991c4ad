"""The training objective: whichever labels a batch has, each weighted by the recipe.

- ``params``: 3DMM parameters where known (synthetic faces), WPDC or plain L2 on whitened params;
- ``landmarks``: 68 ground-truth points where known, 2D distance in % of the crop;
- ``pts21``: the visible AFLW points mapped onto their 68-point counterparts (Wing, in % of crop);
- ``yaw``: yaw error in degrees where known (AFLW gives yaw but not pitch/roll);
- ``distill``: the teacher's parameters on the same augmented crop, VDC / WPDC / L2;
- ``euler``: SmoothL1 on yaw, pitch and roll (degrees) where all three are known (Trans3DHead Eq. 7).

Models whose training-mode forward returns a dict (``params`` plus training-only outputs, passed here
as ``aux``) add:
- ``branch_landmarks``: the query decoder's landmark branch (``aux["landmarks"]``, crop pixels) against
  the 68 ground-truth points, SmoothL1 in % of the crop (Trans3DHead's L_lmk);
- ``dense``: directly regressed dense points (``aux["dense"]`` at mesh vertices ``aux["dense_index"]``)
  against the face model's dense vertices from the parameter labels, Wing + MSE in % of the crop
  (dense-520 paper Eq. 2, w1 1.5, w2 0.5, MSE on ``aux["dense_lmk68"]``, the 68-landmark subset).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from edgefa.data.aflw_train import AFLW21_TO_68
from edgefa.facemodel.base import FaceModel
from edgefa.facemodel.geometry import euler_angles, landmarks, whiten
from edgefa.training.losses import (
    euler_angle_loss,
    masked_landmark_loss,
    vdc_loss,
    wing_mse_loss,
    wpdc_loss,
)

IDX21 = [i for i, j in sorted(AFLW21_TO_68.items()) if j is not None]
IDX68 = [AFLW21_TO_68[i] for i in IDX21]


def _param_distance(kind: str, pred_w, target_w, fm):
    if kind == "wpdc":
        return wpdc_loss(pred_w, target_w, fm)
    if kind == "vdc":
        return vdc_loss(pred_w, target_w, fm)
    return ((pred_w - target_w) ** 2).mean()


def loss_terms(pred_w: torch.Tensor, batch: dict, fm: FaceModel, cfg: dict,
               teacher_raw: torch.Tensor | None = None, aux: dict | None = None) -> dict:
    """Each active term, unweighted, on ``pred_w``'s device; ``cfg`` is the recipe's ``loss`` section."""
    dev = pred_w.device
    batch = {k: v.to(dev) for k, v in batch.items() if k != "image"}
    mean = torch.as_tensor(fm.param_mean, device=dev)
    std = torch.as_tensor(fm.param_std, device=dev)
    pred_raw = pred_w * std + mean
    pred_pts = landmarks(pred_raw, fm)
    pct = 100.0 / fm.size
    terms = {}
    params = batch["params"]
    have = torch.isfinite(params).all(dim=1)
    if cfg["params"] and have.any():
        terms["params"] = _param_distance(cfg["param_loss"], pred_w[have], whiten(params[have], fm), fm)
    pts68 = batch["pts68"][..., :2]
    have = torch.isfinite(pts68).all(dim=(1, 2))
    if cfg["landmarks"] and have.any():
        terms["landmarks"] = pct * (pred_pts[have, :, :2] - pts68[have]).norm(dim=-1).mean()
    pts21 = batch["pts21"][:, IDX21]
    visible = torch.isfinite(pts21[..., 0])
    if cfg["pts21"] and visible.any():
        terms["pts21"] = pct * masked_landmark_loss(pred_pts[:, IDX68, :2], torch.nan_to_num(pts21), visible,
                                                    kind="wing")
    yaw = batch["pose"][:, 0]
    have = torch.isfinite(yaw)
    if cfg["yaw"] and have.any():
        pred_yaw = euler_angles(pred_raw[have])[:, 0]
        terms["yaw"] = (pred_yaw - yaw[have]).abs().mean()
    if cfg["distill"] and teacher_raw is not None:
        terms["distill"] = _param_distance(cfg["distill_loss"], pred_w, whiten(teacher_raw.to(dev), fm), fm)
    angles = batch["pose"]
    have = torch.isfinite(angles).all(dim=1)
    if cfg.get("euler") and have.any():
        terms["euler"] = euler_angle_loss(pred_w[have], None, fm, target_angles=angles[have])
    terms.update(_aux_terms(aux or {}, batch, fm, cfg, pct))
    return terms


def _aux_terms(aux: dict, batch: dict, fm: FaceModel, cfg: dict, pct: float) -> dict:
    terms = {}
    pts68 = batch["pts68"][..., :2]
    have = torch.isfinite(pts68).all(dim=(1, 2))
    if cfg.get("branch_landmarks") and "landmarks" in aux and have.any():
        pred = aux["landmarks"][have, :, :2].float()
        terms["branch_landmarks"] = F.smooth_l1_loss(pct * pred, pct * pts68[have])
    params = batch["params"]
    have = torch.isfinite(params).all(dim=1)
    if cfg.get("dense") and "dense" in aux and have.any():
        if fm.dense is None:
            raise ValueError(f"loss.dense: face model '{fm.name}' has no dense mesh to take dense labels from")
        index = aux["dense_index"].long()
        target = landmarks(params[have], fm, dense=True)[:, index]
        terms["dense"] = wing_mse_loss(pct * aux["dense"][have].float(), pct * target, w1=1.5, w2=0.5,
                                       mse_index=aux["dense_lmk68"].long())
    return terms


def weighted(terms: dict, cfg: dict, like: torch.Tensor) -> list[torch.Tensor]:
    """The recipe's weight times each term (their sum is the loss; PCGrad takes them one by one);
    with no active term, one zero that still depends on ``like`` (the prediction) for backward."""
    return [cfg[k] * v for k, v in terms.items()] or [like.sum() * 0.0]
