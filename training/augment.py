"""Augmentation that keeps labels exact.

Geometric changes (crop-box scale/shift jitter, in-plane rotation, horizontal flip) are one 2D
similarity warp of the crop; the same matrix moves every point label, and — without a flip —
the 3DMM pose matrix too, so the parameters still describe the warped face exactly. A flip
mirrors the identity, which the 3DMM weights cannot express in general: a sample with labels of
its mirror image (``mirror_params`` / ``mirror_pts68``, refined aflw-train labels) takes those,
warped by the flip-free rest of the warp; other flipped samples keep their (mirrored,
re-ordered) landmarks and pose and mark the parameters unknown (NaN).
Photometric changes (colour, blur, occluders) leave labels untouched.

Drawing is split from applying: ``draw_augment`` draws every random number of one sample
unconditionally in a fixed order, ``apply_augment`` applies a draw with cv2. The label and colour
math is written once against the array API (numpy or torch, one sample or a batch), so
``augment_batch.py`` applies the same draws to a whole batch on the training device with it.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from array_api_compat import array_namespace, device, is_array_api_obj, is_numpy_array

from edgefa.facemodel.geometry import euler_to_rotation, pose_matrix_to_euler

# iBUG 68-point mirror: index i of a flipped face is point FLIP_68[i] of the original
FLIP_68 = np.array(
    list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30] + [35, 34, 33, 32, 31]
    + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55] + [64, 63, 62, 61, 60, 67, 66, 65])
# AFLW 21 points: brows 0-5, eyes 6-11, ears 12/16, nose 13-15, mouth 17-19, chin 20
FLIP_21 = np.array([5, 4, 3, 2, 1, 0, 11, 10, 9, 8, 7, 6, 16, 15, 14, 13, 12, 19, 18, 17, 20])

# fixed ranges of the photometric draws (the batched draw uses the same)
BRIGHTNESS = 60.0  # brightness offset per unit of colour strength, grey levels
TINT_STD = 6.0  # per-channel tint std per unit of colour strength, grey levels
BLUR_SIGMA = (0.5, 1.5)  # Gaussian blur sigma range, pixels
OCCLUDER_SIZE = (0.15, 0.45)  # occluder width / height range, fraction of the crop


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


def _float(x):
    """A torch tensor as it is; anything else (numbers, numpy) as a float64 numpy array."""
    if is_array_api_obj(x) and not is_numpy_array(x):
        return x
    return np.asarray(x, dtype=np.float64)


def _mirror_sign(flip, like):
    """-1 where flipped, +1 elsewhere, as an array of ``like``'s library, dtype and device."""
    xp = array_namespace(like)
    return 1.0 - 2.0 * xp.astype(xp.asarray(flip, device=device(like)), like.dtype)


def _det2(a):
    return a[..., 0, 0] * a[..., 1, 1] - a[..., 0, 1] * a[..., 1, 0]


def similarity_matrix(size: int, scale, angle_deg, shift_xy, flip):
    """2x3 matrix mapping crop pixels to warped crop pixels, about the crop centre.

    Numbers -> (2, 3); (B,) scale, angle and flip with (B, 2) shift -> (B, 2, 3) (numpy or torch).
    The flip mirrors x before the scaled rotation.
    """
    scale, angle_deg, shift_xy = _float(scale), _float(angle_deg), _float(shift_xy)
    xp = array_namespace(scale, angle_deg, shift_xy)
    c = (size - 1) / 2.0
    rad = angle_deg * (np.pi / 180.0)
    cos, sin = scale * xp.cos(rad), scale * xp.sin(rad)
    mirror = _mirror_sign(flip, cos)
    r00, r01, r10, r11 = cos * mirror, -sin, sin * mirror, cos
    off_x = c + shift_xy[..., 0] - (r00 * c + r01 * c)
    off_y = c + shift_xy[..., 1] - (r10 * c + r11 * c)
    return xp.stack([xp.stack([r00, r01, off_x], axis=-1), xp.stack([r10, r11, off_y], axis=-1)], axis=-2)


def warp_points(points, mat):
    """Apply 2x3 similarities (..., 2, 3) to crop-pixel points (..., N, 2|3); z scales with the
    similarity's scale. float32 out (NaN points stay NaN)."""
    points, mat = _float(points), _float(mat)
    xp = array_namespace(points, mat)
    a, b = mat[..., :2], mat[..., 2]
    xy = points[..., :2] @ xp.matrix_transpose(a) + b[..., None, :]
    if points.shape[-1] > 2:
        z = points[..., 2:] * xp.sqrt(xp.abs(_det2(a)))[..., None, None]
        xy = xp.concat([xy, z], axis=-1)
    return xp.astype(xy, xp.float32)


def warp_pose_params(params, mat, size: int):
    """Move the 3DMM pose rows (..., 62) with flip-free crop-pixel similarities (..., 2, 3) so the
    landmarks follow the warp. float32 out.

    Crop pixels are x = u0 - 1, y = size - u1 of the projected model point u, i.e. p = D u + k with
    D = diag(1, -1), k = (-1, size); in u-space the warp is u' = M u + c with M = D A D and
    c = D (A k + b - k).
    """
    params, mat = _float(params), _float(mat)
    xp = array_namespace(params, mat)
    a, b = mat[..., :2], mat[..., 2]
    m = xp.stack([xp.stack([a[..., 0, 0], -a[..., 0, 1]], axis=-1),
                  xp.stack([-a[..., 1, 0], a[..., 1, 1]], axis=-1)], axis=-2)
    c0 = -a[..., 0, 0] + size * a[..., 0, 1] + b[..., 0] + 1.0
    c1 = -(-a[..., 1, 0] + size * a[..., 1, 1] + b[..., 1] - size)
    pose = xp.reshape(params[..., :12], (*params.shape[:-1], 3, 4))
    top = m @ pose[..., :2, :]
    top = xp.concat([top[..., :3], top[..., 3:] + xp.stack([c0, c1], axis=-1)[..., None]], axis=-1)
    bottom = pose[..., 2:, :] * xp.sqrt(xp.abs(_det2(a)))[..., None, None]
    rows = xp.reshape(xp.concat([top, bottom], axis=-2), (*params.shape[:-1], 12))
    return xp.astype(xp.concat([rows, params[..., 12:]], axis=-1), xp.float32)


def warp_pose_angles(pose, mat, flip, size: int):
    """Yaw/pitch/roll (..., 3) after the warp (..., 2, 3): exact through rotation matrices when all
    three are known. float32 out.

    In the Pose_Para convention an in-plane rotation changes yaw and pitch too (by ~10 degrees at
    yaw 85 and 15 degrees of rotation), so a label with only yaw known survives a flip or a
    scale/shift but becomes unknown (NaN) under rotation.
    """
    pose, mat = _float(pose), _float(mat)
    xp = array_namespace(pose, mat)
    single = pose.ndim == 1
    if single:  # the geometry functions are batched
        pose, mat = pose[None], mat[None]
    a = mat[..., :2]
    scale = xp.sqrt(xp.abs(_det2(a)))
    mirror = xp.broadcast_to(_mirror_sign(flip, scale), scale.shape)
    rotated = xp.abs(xp.atan2(a[..., 1, 0], mirror * a[..., 0, 0])) > 1e-9
    known = xp.all(xp.isfinite(pose), axis=-1)
    # partial pose: a mirror negates yaw, scale/shift keep it, a rotation loses it
    nan = xp.full_like(scale, xp.nan)
    yaw = xp.where(~rotated & xp.isfinite(pose[..., 0]), mirror * pose[..., 0], nan)
    partial = xp.stack([yaw, nan, nan], axis=-1)
    if is_numpy_array(pose) and not np.any(known):  # nothing to rotate (a shortcut a tensor would sync on)
        return xp.astype(partial[0] if single else partial, xp.float32)
    # full pose: rotate the head rotation in the image plane (u-space: D A D / scale), mirror x
    zero, one = xp.zeros_like(scale), xp.ones_like(scale)
    in_plane = xp.stack([xp.stack([a[..., 0, 0] / scale, -a[..., 0, 1] / scale, zero], axis=-1),
                         xp.stack([-a[..., 1, 0] / scale, a[..., 1, 1] / scale, zero], axis=-1),
                         xp.stack([zero, zero, one], axis=-1)], axis=-2)
    new = in_plane @ euler_to_rotation(pose) * xp.stack([mirror, one, one], axis=-1)[..., None, :]
    full = pose_matrix_to_euler(xp.concat([new, xp.zeros_like(new[..., :1])], axis=-1))
    out = xp.astype(xp.where(known[..., None], full, partial), xp.float32)
    return out[0] if single else out


def color_jitter(image, saturation, contrast, brightness, tint, channel_axis: int = -1):
    """Saturation, then contrast about the saturated image's mean, then brightness + per-channel
    tint; clipped to 0-255 and truncated like ``astype(uint8)``.

    image (..., H, W, 3) float32 (``channel_axis=-1``) or (..., 3, H, W) (``channel_axis=-3``);
    saturation, contrast, brightness (...); tint (..., 3). Float out.
    """
    xp = array_namespace(image, saturation, contrast, brightness, tint)

    def per_image(v):
        return xp.reshape(v, (*v.shape, 1, 1, 1))

    def channel(i):
        index = [slice(None)] * image.ndim
        index[channel_axis] = slice(i, i + 1)
        return image[tuple(index)]

    per_channel = [1, 1, 1]
    per_channel[channel_axis] = 3
    gray = (channel(0) + channel(1) + channel(2)) / 3  # the channel mean; a reduction over 3 is slow
    img = gray + (image - gray) * per_image(saturation)
    mean = xp.mean(img, axis=(-3, -2, -1), keepdims=True)
    img = (img - mean) * per_image(contrast) + mean
    img = img + per_image(brightness) + xp.reshape(tint, (*tint.shape[:-1], *per_channel))
    return xp.floor(xp.clip(img, 0.0, 255.0))


def draw_augment(cfg: AugmentConfig, size: int, rng: np.random.Generator) -> dict:
    """Every random number of one sample's augmentation, drawn unconditionally in a fixed order
    (so one outcome never shifts the stream of the others, and a batch can take the same draws).

    ``angle`` is 0 for samples not rotated; ``brightness`` is in grey levels; ``occluder_box`` is
    x, y, w, h in pixels.
    """
    flip = rng.random() < cfg.flip
    rotated = rng.random() < cfg.rotate_prob
    angle = rng.uniform(-cfg.rotate, cfg.rotate)
    scale = 1 + rng.uniform(-cfg.scale, cfg.scale)
    shift = rng.uniform(-cfg.shift, cfg.shift, 2) * size
    saturation = 1 + rng.uniform(-cfg.color, cfg.color)
    contrast = 1 + rng.uniform(-cfg.color, cfg.color)
    brightness = rng.uniform(-cfg.color, cfg.color) * BRIGHTNESS
    tint = rng.normal(0, TINT_STD * cfg.color, 3)
    blurred = rng.random() < cfg.blur
    sigma = rng.uniform(*BLUR_SIGMA)
    occluded = rng.random() < cfg.occlude
    w, h = (rng.uniform(*OCCLUDER_SIZE, 2) * size).astype(int)
    x, y = rng.integers(0, size - w), rng.integers(0, size - h)
    colour = rng.integers(0, 256, 3)
    rect = rng.random() < 0.5
    ellipse_angle = rng.uniform(0, 180)
    return {"flip": bool(flip), "angle": float(angle) if rotated else 0.0, "scale": float(scale),
            "shift": shift, "saturation": float(saturation), "contrast": float(contrast),
            "brightness": float(brightness), "tint": tint, "blurred": bool(blurred), "sigma": float(sigma),
            "occluded": bool(occluded), "occluder_box": np.array([x, y, w, h]), "occluder_colour": colour,
            "occluder_rect": bool(rect), "occluder_angle": float(ellipse_angle)}


def _color(image: np.ndarray, draw: dict) -> np.ndarray:
    factors = (np.float32(draw[k]) for k in ("saturation", "contrast", "brightness"))
    return color_jitter(image.astype(np.float32), *factors, np.asarray(draw["tint"])).astype(np.uint8)


def _occlude(image: np.ndarray, draw: dict) -> np.ndarray:
    x, y, w, h = (int(v) for v in draw["occluder_box"])
    colour = tuple(int(v) for v in draw["occluder_colour"])
    out = image.copy()
    if draw["occluder_rect"]:
        cv2.rectangle(out, (x, y), (x + w, y + h), colour, -1)
    else:
        cv2.ellipse(out, (int(x + w / 2), int(y + h / 2)), (int(w / 2), int(h / 2)),
                    draw["occluder_angle"], 0, 360, colour, -1)
    return out


def apply_augment(sample: dict, size: int, cfg: AugmentConfig, draw: dict) -> dict:
    """Apply one ``draw_augment`` draw to a sample with cv2 (crop-pixel labels: pts68 (68,3),
    pts21 (21,2), params, pose)."""
    flip = draw["flip"]
    mat = similarity_matrix(size, draw["scale"], draw["angle"], draw["shift"], flip)
    out = dict(sample)
    out["image"] = cv2.warpAffine(sample["image"], mat, (size, size), flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_REFLECT_101)
    out["pts68"] = warp_points(sample["pts68"], mat)
    out["pts21"] = warp_points(sample["pts21"], mat)
    mirror = sample.get("mirror_params")
    if flip and mirror is not None and np.isfinite(mirror).all():
        # the flipped warp is the flip-free one applied to the mirror image: mat = straight o mirror
        straight = similarity_matrix(size, draw["scale"], draw["angle"], draw["shift"], False)
        out["pts68"] = warp_points(sample["mirror_pts68"], straight)
        out["pts21"] = out["pts21"][FLIP_21]
        out["params"] = warp_pose_params(mirror, straight, size)
    elif flip:
        out["pts68"] = out["pts68"][FLIP_68]
        out["pts21"] = out["pts21"][FLIP_21]
        out["params"] = np.full_like(sample["params"], np.nan)
    elif np.isfinite(sample["params"]).all():
        out["params"] = warp_pose_params(sample["params"], mat, size)
    out["pose"] = warp_pose_angles(sample["pose"], mat, flip, size)
    if cfg.color:
        out["image"] = _color(out["image"], draw)
    if draw["blurred"]:
        out["image"] = cv2.GaussianBlur(out["image"], (0, 0), draw["sigma"])
    if draw["occluded"]:
        out["image"] = _occlude(out["image"], draw)
    return out


def augment_sample(sample: dict, size: int, cfg: AugmentConfig, rng: np.random.Generator) -> dict:
    """Augment one training sample with a fresh draw from ``rng`` (see ``apply_augment``)."""
    return apply_augment(sample, size, cfg, draw_augment(cfg, size, rng))
