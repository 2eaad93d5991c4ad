"""Augmentation that keeps labels exact.

Geometric changes (crop-box scale/shift jitter, in-plane rotation, horizontal flip) are one 2D
similarity warp of the crop; the same matrix moves every point label, and — without a flip —
the 3DMM pose matrix too, so the parameters still describe the warped face exactly. A flip
mirrors the identity, which the 3DMM weights cannot express in general: a sample with labels of
its mirror image (``mirror_params`` / ``mirror_pts68``, refined aflw-train labels) takes those,
warped by the flip-free rest of the warp; other flipped samples keep their (mirrored,
re-ordered) landmarks and pose and mark the parameters unknown (NaN).
Photometric changes (colour, blur, occluders) leave labels untouched.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from edgefa.facemodel.geometry import euler_angles, euler_to_rotation

# iBUG 68-point mirror: index i of a flipped face is point FLIP_68[i] of the original
FLIP_68 = np.array(
    list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30] + [35, 34, 33, 32, 31]
    + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55] + [64, 63, 62, 61, 60, 67, 66, 65])
# AFLW 21 points: brows 0-5, eyes 6-11, ears 12/16, nose 13-15, mouth 17-19, chin 20
FLIP_21 = np.array([5, 4, 3, 2, 1, 0, 11, 10, 9, 8, 7, 6, 16, 15, 14, 13, 12, 19, 18, 17, 20])


@dataclass
class AugmentConfig:
    flip: float = 0.5  # probability
    scale: float = 0.08  # crop-box scale jitter, +-fraction
    shift: float = 0.06  # crop-box shift jitter, +-fraction of the crop
    rotate: float = 15.0  # in-plane rotation, +-degrees
    rotate_prob: float = 0.5  # rotated samples lose |yaw|-only pose labels (see warp_pose_angles)
    color: float = 0.3  # brightness / contrast / saturation jitter strength
    blur: float = 0.2  # probability of a Gaussian blur
    occlude: float = 0.2  # probability of a random occluder


def similarity_matrix(size: int, scale: float, angle_deg: float, shift_xy, flip: bool) -> np.ndarray:
    """2x3 matrix mapping crop pixels to warped crop pixels, about the crop centre."""
    c = (size - 1) / 2.0
    a = math.radians(angle_deg)
    rot = scale * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    if flip:
        rot = rot @ np.diag([-1.0, 1.0])
    offset = np.array([c, c]) + np.asarray(shift_xy, dtype=np.float64) - rot @ np.array([c, c])
    return np.concatenate([rot, offset[:, None]], axis=1)


def warp_points(points: np.ndarray, mat: np.ndarray) -> np.ndarray:
    """Apply a 2x3 similarity to (N, 2|3) crop-pixel points; z scales with the similarity's scale."""
    out = np.array(points, dtype=np.float32, copy=True)
    out[:, :2] = points[:, :2] @ mat[:, :2].T + mat[:, 2]
    if out.shape[1] > 2:
        out[:, 2] *= math.sqrt(abs(np.linalg.det(mat[:, :2])))
    return out


def warp_pose_params(params: np.ndarray, mat: np.ndarray, size: int) -> np.ndarray:
    """Move the 3DMM pose rows with a flip-free crop-pixel similarity so landmarks follow the warp.

    Crop pixels are x = u0 - 1, y = size - u1 of the projected model point u; in u-space the
    warp is u' = M u + c with M = D A D (D = diag(1, -1)) and c chosen to match.
    """
    a, b = mat[:, :2].astype(np.float64), mat[:, 2].astype(np.float64)
    d = np.diag([1.0, -1.0])
    m = d @ a @ d
    # x = u0 - 1, y = size - u1  <=>  p = D u + k with k = (-1, size)
    k = np.array([-1.0, size])
    c = d @ (a @ k + b - k)
    pose = params[:12].astype(np.float64).reshape(3, 4).copy()
    pose[:2, :] = m @ pose[:2, :]
    pose[:2, 3] += c
    s = math.sqrt(abs(np.linalg.det(a)))
    pose[2, :] *= s
    out = params.astype(np.float32, copy=True)
    out[:12] = pose.reshape(12)
    return out


def _color(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    img = image.astype(np.float32)
    gray = img.mean(axis=2, keepdims=True)
    sat = 1 + rng.uniform(-strength, strength)
    img = gray + (img - gray) * sat
    contrast = 1 + rng.uniform(-strength, strength)
    img = (img - img.mean()) * contrast + img.mean()
    img = img + rng.uniform(-strength, strength) * 60 + rng.normal(0, 6 * strength, 3)  # brightness, tint
    return np.clip(img, 0, 255).astype(np.uint8)


def _occlude(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    size = image.shape[0]
    w, h = (rng.uniform(0.15, 0.45, 2) * size).astype(int)
    x, y = rng.integers(0, size - w), rng.integers(0, size - h)
    colour = tuple(int(v) for v in rng.integers(0, 256, 3))
    out = image.copy()
    if rng.random() < 0.5:
        cv2.rectangle(out, (int(x), int(y)), (int(x + w), int(y + h)), colour, -1)
    else:
        cv2.ellipse(out, (int(x + w / 2), int(y + h / 2)), (int(w / 2), int(h / 2)),
                    float(rng.uniform(0, 180)), 0, 360, colour, -1)
    return out


def warp_pose_angles(pose: np.ndarray, mat: np.ndarray, flip: bool, size: int) -> np.ndarray:
    """Yaw/pitch/roll after the warp: exact through rotation matrices when all three are known.

    In the Pose_Para convention an in-plane rotation changes yaw and pitch too (by ~10 degrees at
    yaw 85 and 15 degrees of rotation), so a label with only yaw known survives a flip or a
    scale/shift but becomes unknown (NaN) under rotation.
    """
    pose = np.asarray(pose, dtype=np.float64)
    rotated = abs(math.atan2(mat[1, 0], mat[0, 0] if not flip else -mat[0, 0])) > 1e-9
    if not np.isfinite(pose).all():
        out = np.full(3, np.nan)
        if not rotated and np.isfinite(pose[0]):
            out[0] = -pose[0] if flip else pose[0]  # a mirror negates yaw; scale/shift keep it
        return out.astype(np.float32)
    rot = euler_to_rotation(pose[None])[0]
    d = np.diag([1.0, -1.0])
    m = d @ mat[:, :2] @ d
    m = m / math.sqrt(abs(np.linalg.det(m)))
    in_plane = np.eye(3)
    in_plane[:2, :2] = m
    new = in_plane @ rot @ (np.diag([-1.0, 1.0, 1.0]) if flip else np.eye(3))
    params = np.zeros(62)
    params[:12] = np.concatenate([new, np.zeros((3, 1))], axis=1).reshape(12)
    return euler_angles(params).astype(np.float32)


def augment_sample(sample: dict, size: int, cfg: AugmentConfig, rng: np.random.Generator) -> dict:
    """Augment one training sample (crop-pixel labels: pts68 (68,3), pts21 (21,2), params, pose)."""
    flip = rng.random() < cfg.flip
    angle = rng.uniform(-cfg.rotate, cfg.rotate) if rng.random() < cfg.rotate_prob else 0.0
    scale, shift = 1 + rng.uniform(-cfg.scale, cfg.scale), rng.uniform(-cfg.shift, cfg.shift, 2) * size
    mat = similarity_matrix(size, scale, angle, shift, flip)
    out = dict(sample)
    out["image"] = cv2.warpAffine(sample["image"], mat, (size, size), flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_REFLECT_101)
    out["pts68"] = warp_points(sample["pts68"], mat)
    out["pts21"] = warp_points(sample["pts21"], mat)
    mirror = sample.get("mirror_params")
    if flip and mirror is not None and np.isfinite(mirror).all():
        # the flipped warp is the flip-free one applied to the mirror image: mat = nf o mirror
        nf = similarity_matrix(size, scale, angle, shift, False)
        out["pts68"] = warp_points(sample["mirror_pts68"], nf)
        out["pts21"] = out["pts21"][FLIP_21]
        out["params"] = warp_pose_params(mirror, nf, size)
    elif flip:
        out["pts68"] = out["pts68"][FLIP_68]
        out["pts21"] = out["pts21"][FLIP_21]
        out["params"] = np.full_like(sample["params"], np.nan)
    elif np.isfinite(sample["params"]).all():
        out["params"] = warp_pose_params(sample["params"], mat, size)
    out["pose"] = warp_pose_angles(sample["pose"], mat, flip, size)
    if cfg.color:
        out["image"] = _color(out["image"], cfg.color, rng)
    if rng.random() < cfg.blur:
        out["image"] = cv2.GaussianBlur(out["image"], (0, 0), float(rng.uniform(0.5, 1.5)))
    if rng.random() < cfg.occlude:
        out["image"] = _occlude(out["image"], rng)
    return out
