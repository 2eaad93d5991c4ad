"""The sample format every edgefa dataset returns, so one evaluator and trainer serve all.

Datasets are plain map-style classes (``__len__`` / ``__getitem__``): torch's DataLoader takes them,
and reading them needs no torch (the runtime install evaluates exported files without it).

A sample is a dict of fixed keys (missing labels are NaN, so default collation works):
- ``image``: (S, S, 3) uint8 **BGR** face crop (S = ``dataset.size``, 120 by default);
- ``roi_box``: (4,) float32 x1 y1 x2 y2 of the crop in original-image pixels (3DDFA convention:
  a crop point p maps to ``p * (x2 - x1) / S + x1``); ``[0, 0, S, S]`` when crop == original;
- ``pts68``: (68, 3) float32 ground-truth landmarks in original-image pixels (z NaN if unknown);
- ``pts21``: (21, 2) float32 AFLW 21 points in original pixels, NaN where hidden or unknown;
- ``pose``: (3,) float32 yaw, pitch, roll in degrees (AFLW2000-3D Pose_Para signs);
- ``params``: (62,) float32 raw 3DMM parameters of the dataset's face model, for the crop;
- ``mirror_params`` (62,), ``mirror_pts68`` (68, 3): labels of the crop's horizontal mirror image, in
  *crop* pixels of that mirror (refined aflw-train labels), NaN elsewhere: a flip takes them;
- ``index``: int position in the dataset (names are in ``dataset.names``).
"""
from __future__ import annotations

import numpy as np

from edgefa.facemodel.base import N_LANDMARKS, N_PARAMS

SAMPLE_KEYS = ("image", "roi_box", "pts68", "pts21", "pose", "params", "mirror_params", "mirror_pts68", "index")


def make_sample(image: np.ndarray, index: int, roi_box=None, pts68=None, pts21=None,
                pose=None, params=None, mirror_params=None, mirror_pts68=None) -> dict:
    size = image.shape[0]

    def filled(value, shape):
        out = np.full(shape, np.nan, dtype=np.float32)
        if value is not None:
            value = np.asarray(value, dtype=np.float32)
            out[tuple(slice(0, n) for n in value.shape)] = value
        return out

    return {
        "image": image,
        "roi_box": np.asarray(roi_box if roi_box is not None else (0, 0, size, size), dtype=np.float32),
        "pts68": filled(pts68, (N_LANDMARKS, 3)),
        "pts21": filled(pts21, (21, 2)),
        "pose": filled(pose, (3,)),
        "params": filled(params, (N_PARAMS,)),
        "mirror_params": filled(mirror_params, (N_PARAMS,)),
        "mirror_pts68": filled(mirror_pts68, (N_LANDMARKS, 3)),
        "index": int(index),
    }


def collate(samples: list[dict]) -> dict:
    """Stack samples into a batch of numpy arrays (what DataLoader's default collation does, in numpy)."""
    return {k: np.stack([np.asarray(s[k]) for s in samples]) for k in samples[0]}


def crop_to_original(points: np.ndarray, roi_box: np.ndarray, size: int) -> np.ndarray:
    """Map (B, N, 2+) crop-pixel points to original pixels with (B, 4) roi boxes (3DDFA protocol)."""
    points = np.array(points, dtype=np.float64, copy=True)
    roi_box = np.asarray(roi_box, dtype=np.float64)
    scale_x = (roi_box[:, 2] - roi_box[:, 0]) / size
    scale_y = (roi_box[:, 3] - roi_box[:, 1]) / size
    points[..., 0] = points[..., 0] * scale_x[:, None] + roi_box[:, None, 0]
    points[..., 1] = points[..., 1] * scale_y[:, None] + roi_box[:, None, 1]
    if points.shape[-1] > 2:
        points[..., 2] *= ((scale_x + scale_y) / 2)[:, None]
    return points


def original_to_crop(points: np.ndarray, roi_box: np.ndarray, size: int) -> np.ndarray:
    """Inverse of ``crop_to_original``."""
    points = np.array(points, dtype=np.float64, copy=True)
    roi_box = np.asarray(roi_box, dtype=np.float64)
    scale_x = (roi_box[:, 2] - roi_box[:, 0]) / size
    scale_y = (roi_box[:, 3] - roi_box[:, 1]) / size
    points[..., 0] = (points[..., 0] - roi_box[:, None, 0]) / scale_x[:, None]
    points[..., 1] = (points[..., 1] - roi_box[:, None, 1]) / scale_y[:, None]
    if points.shape[-1] > 2:
        points[..., 2] /= ((scale_x + scale_y) / 2)[:, None]
    return points
