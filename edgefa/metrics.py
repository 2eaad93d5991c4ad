"""Accuracy metrics in the 3DDFA / 3DDFA-V2 AFLW2000-3D protocol.

- NME: mean 2D point error over the 68 points, divided by sqrt(w * h) of the ground-truth
  68-point bounding box, in percent;
- yaw bins |yaw| in [0, 30], (30, 60], (60, 90+] (the third takes the few faces past 90, as
  3DDFA's ``ana_aflw`` does): 1312 / 383 / 305 faces on AFLW2000-3D; the headline "mean" is the
  balanced mean of the bin means; also the plain mean and the std of the bin means;
- pose MAE in degrees, dropping faces whose |yaw| > 99 (FSA-Net / SynergyNet protocol);
- CED curve and AUC up to 7% NME.
"""
from __future__ import annotations

import numpy as np

YAW_BIN_EDGES = (30.0, 60.0)  # upper edges of the first two |yaw| bins (inclusive); the third is open
BIN_NAMES = ("[0,30]", "(30,60]", "(60,90]")
POSE_YAW_LIMIT = 99.0


def face_size(points: np.ndarray) -> np.ndarray:
    """sqrt(w * h) of each face's (B, N, 2+) point box: the NME normaliser."""
    pts = np.asarray(points, dtype=np.float64)[..., :2]
    extent = pts.max(axis=1) - pts.min(axis=1)  # (B, 2) w, h
    return np.sqrt(extent[:, 0] * extent[:, 1])


def nme(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Per-face NME in percent; pred, gt (B, 68, 2+) in the same (original) pixels."""
    pred = np.asarray(pred, dtype=np.float64)[..., :2]
    gt = np.asarray(gt, dtype=np.float64)[..., :2]
    err = np.linalg.norm(pred - gt, axis=-1).mean(axis=1)
    return 100.0 * err / face_size(gt)


def yaw_bin_index(yaws: np.ndarray) -> np.ndarray:
    """0, 1, 2 for the three |yaw| bins (0 includes 30 exactly, as in 3DDFA)."""
    a = np.abs(np.asarray(yaws, dtype=np.float64))
    return np.searchsorted(np.asarray(YAW_BIN_EDGES), a, side="left")


def nme_by_yaw(nmes: np.ndarray, yaws: np.ndarray) -> dict:
    nmes = np.asarray(nmes, dtype=np.float64)
    bins = yaw_bin_index(yaws)
    counts = [int((bins == b).sum()) for b in range(3)]
    means = [float(nmes[bins == b].mean()) if counts[b] else float("nan") for b in range(3)]
    valid = [m for m in means if not np.isnan(m)]
    return {
        "bins": dict(zip(BIN_NAMES, means)),
        "counts": dict(zip(BIN_NAMES, counts)),
        "balanced_mean": float(np.mean(valid)) if valid else float("nan"),
        "plain_mean": float(nmes.mean()) if nmes.size else float("nan"),
        "bin_std": float(np.std(valid)) if valid else float("nan"),
    }


def pose_mae(pred: np.ndarray, gt: np.ndarray) -> dict:
    """Yaw / pitch / roll MAE (degrees) over faces with |gt yaw| <= 99 and known angles."""
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    keep = np.abs(gt[:, 0]) <= POSE_YAW_LIMIT
    out = {}
    for j, name in enumerate(("yaw", "pitch", "roll")):
        rows = keep & ~np.isnan(gt[:, j])
        out[name] = float(np.abs(pred[rows, j] - gt[rows, j]).mean()) if rows.any() else float("nan")
    known = [out[k] for k in ("yaw", "pitch", "roll") if not np.isnan(out[k])]
    out["mean"] = float(np.mean(known)) if len(known) == 3 else float("nan")
    out["count"] = int(keep.sum())
    return out


# the CED a record stores: to 20 % NME (AUC stops at 7, but a reader of the CED wants to see where
# the curves level off), in 0.1 % steps
CED_MAX_NME, CED_STEPS = 20.0, 201


def ced_curve(nmes: np.ndarray, max_nme: float = 7.0, steps: int = 701) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative error distribution: fraction of faces with NME <= x, for x in [0, max_nme] (percent)."""
    x = np.linspace(0.0, max_nme, steps)
    nmes = np.sort(np.asarray(nmes, dtype=np.float64))
    y = np.searchsorted(nmes, x, side="right") / max(len(nmes), 1)
    return x, y


def auc(nmes: np.ndarray, max_nme: float = 7.0, steps: int = 701) -> float:
    """Area under the CED curve up to ``max_nme`` percent, normalised to [0, 1] (trapezoids)."""
    x, y = ced_curve(nmes, max_nme, steps)
    return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2 / max_nme)
