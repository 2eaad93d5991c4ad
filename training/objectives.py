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

Each term is the mean over the samples that carry its label (a NaN label = none). The step never
waits on the device: no boolean indexing, no ``.any()``/``.item()``, no branching on tensor values.
Per-sample losses are averaged under a mask (``_masked_mean``), missing labels are replaced by
finite stand-ins before use, and a term no sample has a label for is 0 (still in the graph). So
every term the recipe weights (and, for aux terms, the model outputs) is always returned.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from edgefa.data.aflw_train import AFLW21_TO_68
from edgefa.facemodel.base import FaceModel
from edgefa.facemodel.geometry import dewhiten, euler_angles, landmarks, whiten
from edgefa.training.losses import (
    euler_angle_loss,
    masked_landmark_loss,
    param_l2_loss,
    reduce_batch,
    vdc_loss,
    wing_mse_loss,
    wpdc_loss,
)

IDX21 = [i for i, j in sorted(AFLW21_TO_68.items()) if j is not None]
IDX68 = [AFLW21_TO_68[i] for i in IDX21]


def _param_distance(kind: str, pred_w, target_w, fm, reduction: str = "mean"):
    if kind == "wpdc":
        return wpdc_loss(pred_w, target_w, fm, reduction=reduction)
    if kind == "vdc":
        return vdc_loss(pred_w, target_w, fm, reduction=reduction)
    return param_l2_loss(pred_w, target_w, reduction)


def label_masks(batch: dict) -> dict[str, torch.Tensor]:
    """Per label-based term, which samples (B,) carry its label (a NaN marks a missing one); ``pts21``:
    the samples with at least one visible point (the term itself weighs each visible point). The aux
    terms share the labels of ``landmarks`` (branch_landmarks) and ``params`` (dense)."""
    pose = batch["pose"]
    return {"params": torch.isfinite(batch["params"]).all(dim=1),
            "landmarks": torch.isfinite(batch["pts68"][..., :2]).all(dim=(1, 2)),
            "pts21": torch.isfinite(batch["pts21"][:, IDX21, 0]).any(dim=1),
            "yaw": torch.isfinite(pose[:, 0]), "euler": torch.isfinite(pose).all(dim=1)}


def _masked_mean(per_sample: torch.Tensor, have: torch.Tensor) -> torch.Tensor:
    """Mean of ``per_sample`` (B,) over the samples ``have`` marks; 0, still in the graph, over none.
    torch.where (not a product with the mask) so a non-finite value of an unlabelled sample is dropped."""
    total = torch.where(have, per_sample, torch.zeros_like(per_sample)).sum()
    return total / have.sum().clamp(min=1).to(per_sample.dtype)


def _finite(labels: torch.Tensor) -> torch.Tensor:
    """Labels with every missing (non-finite) entry set to 0, so no NaN enters the graph; the
    samples they belong to are masked out of the term."""
    return torch.nan_to_num(labels, nan=0.0, posinf=0.0, neginf=0.0)


def _rows(have: torch.Tensor, x: torch.Tensor, missing: torch.Tensor) -> torch.Tensor:
    """``x`` on the samples ``have`` marks, ``missing`` (broadcastable to ``x``) on the others."""
    return torch.where(have.reshape(-1, *[1] * (x.ndim - 1)), x, missing)


def _cut_off(have: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """``pred`` with the unlabelled samples detached. The angle math divides by the pose rows' norms:
    on a degenerate prediction (a zero row), which indexing the labelled samples never evaluated,
    its NaN would reach the gradient through the mask (0 * NaN); detached, it stops here."""
    return _rows(have, pred, pred.detach())


def loss_terms(pred_w: torch.Tensor, batch: dict, fm: FaceModel, cfg: dict,
               teacher_raw: torch.Tensor | None = None, aux: dict | None = None) -> dict:
    """Each active term, unweighted, on ``pred_w``'s device; ``cfg`` is the recipe's ``loss`` section."""
    dev = pred_w.device
    # non_blocking: a host->device copy from pageable memory is still safe, without a stream sync
    batch = {k: v.to(dev, non_blocking=True) for k, v in batch.items() if k != "image"}
    have = label_masks(batch)
    pred_raw = dewhiten(pred_w, fm)
    pred_pts = landmarks(pred_raw, fm)
    pct = 100.0 / fm.size
    terms = {}
    params = batch["params"]
    if cfg["params"]:
        # unlabelled samples are compared with the prediction itself: finite, and masked out anyway
        target_w = _rows(have["params"], whiten(_finite(params), fm), pred_w.detach())
        terms["params"] = _masked_mean(_param_distance(cfg["param_loss"], pred_w, target_w, fm, "none"),
                                       have["params"])
    pts68 = _finite(batch["pts68"][..., :2])
    if cfg["landmarks"]:
        distance = (pred_pts[..., :2] - pts68).norm(dim=-1)
        terms["landmarks"] = pct * _masked_mean(reduce_batch(distance, "none"), have["landmarks"])
    pts21 = batch["pts21"][:, IDX21]
    if cfg["pts21"]:  # already masked per point; 0 with no visible point
        terms["pts21"] = pct * masked_landmark_loss(pred_pts[:, IDX68, :2], _finite(pts21),
                                                    torch.isfinite(pts21[..., 0]), kind="wing")
    angles = _finite(batch["pose"])
    if cfg["yaw"]:
        pred_yaw = euler_angles(_cut_off(have["yaw"], pred_raw))[:, 0]
        terms["yaw"] = _masked_mean((pred_yaw - angles[:, 0]).abs(), have["yaw"])
    if cfg["distill"] and teacher_raw is not None:
        terms["distill"] = _param_distance(cfg["distill_loss"], pred_w, whiten(teacher_raw.to(dev), fm), fm)
    if cfg.get("euler"):
        per_sample = euler_angle_loss(_cut_off(have["euler"], pred_w), None, fm, target_angles=angles,
                                      reduction="none")
        terms["euler"] = _masked_mean(per_sample, have["euler"])
    terms.update(_aux_terms(aux or {}, batch, have, fm, cfg, pct))
    return terms


def _aux_terms(aux: dict, batch: dict, have: dict, fm: FaceModel, cfg: dict, pct: float) -> dict:
    terms = {}
    if cfg.get("branch_landmarks") and "landmarks" in aux:
        pred = aux["landmarks"][..., :2].float()
        target = _finite(batch["pts68"][..., :2])
        per_sample = reduce_batch(F.smooth_l1_loss(pct * pred, pct * target, reduction="none"), "none")
        terms["branch_landmarks"] = _masked_mean(per_sample, have["landmarks"])
    if cfg.get("dense") and "dense" in aux:
        if fm.dense is None:
            raise ValueError(f"loss.dense: face model '{fm.name}' has no dense mesh to take dense labels from")
        index = aux["dense_index"].long()
        target = landmarks(_finite(batch["params"]), fm, dense=True)[:, index]
        per_sample = wing_mse_loss(pct * aux["dense"].float(), pct * target, w1=1.5, w2=0.5,
                                   mse_index=aux["dense_lmk68"].long(), reduction="none")
        terms["dense"] = _masked_mean(per_sample, have["params"])
    return terms


def weighted(terms: dict, cfg: dict, like: torch.Tensor) -> list[torch.Tensor]:
    """The recipe's weight times each term (their sum is the loss; PCGrad takes them one by one);
    with no active term, one zero that still depends on ``like`` (the prediction) for backward."""
    return [cfg[k] * v for k, v in terms.items()] or [like.sum() * 0.0]
