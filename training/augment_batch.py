"""Batched, label-exact augmentation in torch: ``augment.apply_augment`` for a whole batch at once.

Why it exists: the CPU trainer augments one sample at a time with numpy/cv2 in DataLoader workers;
a GPU training step wants the same augmentation for the whole batch on the device. So everything
here is batched tensor code with no host synchronisation (no ``.item()``, no data-dependent
Python control flow, no boolean-mask indexing: per-sample choices are ``torch.where`` on masks)
and can be queued inside a CUDA step, on CPU as well.

Same draws, same result: ``stack_draws`` batches per-sample ``draw_augment`` draws (the tests
compare against ``apply_augment`` with them) and ``draw_batch`` draws the same distributions with
a torch generator. The label and colour math is ``augment.py``'s own (array-API functions, run
here in float64 on the device); pixels go through F.grid_sample, whose reflection padding with
``align_corners=True`` reflects about the edge pixel centres like cv2's BORDER_REFLECT_101, a
grouped separable Gaussian conv with cv2's 8-bit kernel-size rule, and an implicit-equation
occluder mask. Images match the cv2 path to cv2's fixed-point rounding (see the tests).
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

from edgefa.training.augment import (
    BLUR_SIGMA,
    BRIGHTNESS,
    FLIP_21,
    FLIP_68,
    OCCLUDER_SIZE,
    TINT_STD,
    AugmentConfig,
    color_jitter,
    similarity_matrix,
    warp_points,
    warp_pose_angles,
    warp_pose_params,
)

# one batch draw: draw_augment's keys, each a (B, ...) tensor of this dtype
DRAW_DTYPES = {
    "flip": torch.bool, "angle": torch.float32, "scale": torch.float32, "shift": torch.float32,
    "saturation": torch.float32, "contrast": torch.float32, "brightness": torch.float32,
    "tint": torch.float32, "blurred": torch.bool, "sigma": torch.float32, "occluded": torch.bool,
    "occluder_box": torch.int64, "occluder_colour": torch.int64, "occluder_rect": torch.bool,
    "occluder_angle": torch.float32,
}
LABEL_KEYS = ("pts68", "pts21", "pose", "params", "mirror_params", "mirror_pts68")


def stack_draws(draws: list[dict], device=None) -> dict[str, torch.Tensor]:
    """Per-sample ``draw_augment`` draws -> one batch draw (tensors on ``device``)."""
    return {key: torch.as_tensor(np.stack([np.asarray(d[key]) for d in draws]), dtype=dtype, device=device)
            for key, dtype in DRAW_DTYPES.items()}


def draw_batch(n: int, cfg: AugmentConfig, size: int, generator: torch.Generator,
               device=None) -> dict[str, torch.Tensor]:
    """``draw_augment``'s distributions for ``n`` samples, drawn from ``generator`` on its own
    device and returned on ``device``. Inside a CUDA step pass a CUDA generator: drawing on the
    host and copying would wait for the device."""
    def rand(*shape):
        return torch.rand(n, *shape, generator=generator, device=generator.device, dtype=torch.float64)

    def symmetric(r, *shape):  # uniform on [-r, r)
        return (2 * rand(*shape) - 1) * r

    # the order of draw_augment, each drawn whatever the others give
    flip = rand() < cfg.flip
    rotated = rand() < cfg.rotate_prob
    angle = symmetric(cfg.rotate)
    scale = 1 + symmetric(cfg.scale)
    shift = symmetric(cfg.shift, 2) * size
    saturation, contrast = 1 + symmetric(cfg.color), 1 + symmetric(cfg.color)
    brightness = symmetric(cfg.color) * BRIGHTNESS
    tint = torch.randn(n, 3, generator=generator, device=generator.device, dtype=torch.float64) * (TINT_STD * cfg.color)
    blurred = rand() < cfg.blur
    sigma = BLUR_SIGMA[0] + (BLUR_SIGMA[1] - BLUR_SIGMA[0]) * rand()
    occluded = rand() < cfg.occlude
    wh = torch.floor((OCCLUDER_SIZE[0] + (OCCLUDER_SIZE[1] - OCCLUDER_SIZE[0]) * rand(2)) * size)
    xy = torch.minimum(torch.floor(rand(2) * (size - wh)), size - wh - 1)  # integers in [0, size - wh)
    colour = torch.clamp(torch.floor(rand(3) * 256), max=255)
    rect = rand() < 0.5
    ellipse_angle = 180 * rand()
    draw = {"flip": flip, "angle": torch.where(rotated, angle, torch.zeros_like(angle)), "scale": scale,
            "shift": shift, "saturation": saturation, "contrast": contrast, "brightness": brightness,
            "tint": tint, "blurred": blurred, "sigma": sigma, "occluded": occluded,
            "occluder_box": torch.cat([xy, wh], dim=1), "occluder_colour": colour, "occluder_rect": rect,
            "occluder_angle": ellipse_angle}
    return {key: draw[key].to(device=device, dtype=dtype) for key, dtype in DRAW_DTYPES.items()}


def augment_batch(batch: dict, size: int, cfg: AugmentConfig, draw: dict) -> dict:
    """Augment a batch as ``apply_augment`` does each sample, on the image's device.

    ``batch``: image (B, S, S, 3) uint8 BGR; pts68 (B, 68, 3), pts21 (B, 21, 2), pose (B, 3),
    params (B, 62), mirror_params (B, 62), mirror_pts68 (B, 68, 3) float, crop pixels, NaN where
    unknown. ``draw``: from ``draw_batch`` or ``stack_draws``. Returns image (uint8, same layout),
    pts68, pts21, pose, params (float32), what TrainSet yields after ``augment_sample``.
    Everything is moved to the image's device: have it there already, a copy from the host waits.
    """
    image = batch["image"]
    dev = image.device
    d = {key: value.to(dev) for key, value in draw.items()}
    # labels in float64: the pose angles go through asin near +-90 degrees of yaw
    labels = {key: batch[key].to(dev, torch.float64) for key in LABEL_KEYS}
    scale, angle, shift = (d[key].to(torch.float64) for key in ("scale", "angle", "shift"))
    mat = similarity_matrix(size, scale, angle, shift, d["flip"])
    straight = similarity_matrix(size, scale, angle, shift, torch.zeros_like(d["flip"]))  # flip-free rest
    out = _warp_labels(labels, batch["params"].to(dev, torch.float32), mat, straight, d["flip"], size)

    img = _warp_images(image.permute(0, 3, 1, 2).float(), mat, size)  # NCHW float, integer-valued
    if cfg.color:
        img = color_jitter(img, d["saturation"], d["contrast"], d["brightness"], d["tint"], channel_axis=-3)
    img = torch.where(d["blurred"][:, None, None, None], _gaussian_blur(img, d["sigma"]), img)
    occluder = _occluder_mask(d, size)[:, None]
    img = torch.where(occluder, d["occluder_colour"].to(img.dtype)[:, :, None, None], img)
    out["image"] = img.permute(0, 2, 3, 1).to(torch.uint8).contiguous()
    return out


@functools.cache
def _flip_indices(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """FLIP_68, FLIP_21 on ``device``, copied there once: a host-to-device copy per batch would
    wait for the device."""
    return torch.as_tensor(FLIP_68, device=device), torch.as_tensor(FLIP_21, device=device)


def _warp_labels(labels: dict, params: torch.Tensor, mat, straight, flip, size: int) -> dict:
    """The label branches of apply_augment, chosen per sample with torch.where."""
    flip68, flip21 = _flip_indices(flip.device)
    with_mirror = flip & torch.isfinite(labels["mirror_params"]).all(dim=-1)
    per_points = flip[:, None, None]

    pts68 = warp_points(labels["pts68"], mat)
    pts68 = torch.where(per_points, pts68[:, flip68], pts68)
    pts68 = torch.where(with_mirror[:, None, None], warp_points(labels["mirror_pts68"], straight), pts68)
    pts21 = warp_points(labels["pts21"], mat)
    pts21 = torch.where(per_points, pts21[:, flip21], pts21)

    # not flipped: warped where all known, else as given; flipped: the mirror's, else unknown
    own = torch.where(torch.isfinite(params).all(dim=-1, keepdim=True), warp_pose_params(labels["params"], mat, size), params)
    params = torch.where(flip[:, None], torch.full_like(params, math.nan), own)
    params = torch.where(with_mirror[:, None], warp_pose_params(labels["mirror_params"], straight, size), params)
    pose = warp_pose_angles(labels["pose"], mat, flip, size)
    return {"pts68": pts68, "pts21": pts21, "pose": pose, "params": params}


def _warp_images(img: torch.Tensor, mat: torch.Tensor, size: int) -> torch.Tensor:
    """cv2.warpAffine(img, mat, INTER_LINEAR, BORDER_REFLECT_101) per sample, rounded to integers.

    affine_grid maps output to input coordinates normalised as n = p / k - 1 (k = (S - 1) / 2,
    align_corners=True): the inverse warp p_in = A^-1 (p_out - b) becomes
    n_in = A^-1 n_out + (A^-1 (k - b)) / k - 1.
    """
    a, b = mat[..., :2], mat[..., 2]
    det = a[:, 0, 0] * a[:, 1, 1] - a[:, 0, 1] * a[:, 1, 0]
    inv = torch.stack([torch.stack([a[:, 1, 1], -a[:, 0, 1]], -1),
                       torch.stack([-a[:, 1, 0], a[:, 0, 0]], -1)], -2) / det[:, None, None]  # no linalg sync
    k = (size - 1) / 2.0
    offset = (inv @ (k - b)[..., None])[..., 0] / k - 1.0
    theta = torch.cat([inv, offset[..., None]], dim=-1).to(img.dtype)
    grid = F.affine_grid(theta, list(img.shape), align_corners=True)
    out = F.grid_sample(img, grid, mode="bilinear", padding_mode="reflection", align_corners=True)
    return out.round().clamp(0, 255)


def cv_gaussian_ksize(sigma):
    """OpenCV's GaussianBlur kernel size for 8-bit images given only sigma (createGaussianKernels:
    cvRound(sigma * 3 * 2 + 1) | 1); a number or a tensor."""
    if isinstance(sigma, torch.Tensor):
        return torch.round(sigma * 6 + 1).long() | 1
    return int(round(sigma * 6 + 1)) | 1


def _gaussian_blur(img: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """cv2.GaussianBlur(img, (0, 0), sigma) per sample (REFLECT_101 border), rounded to integers.

    One separable grouped conv: every sample's kernel is padded with zeros to the size of the
    largest sigma in BLUR_SIGMA (a fixed size: reading the batch's largest would sync the host).
    """
    n, c, h, w = img.shape
    reach = cv_gaussian_ksize(BLUR_SIGMA[1]) // 2
    taps = torch.arange(-reach, reach + 1, device=img.device, dtype=torch.float64)
    sigma = sigma.to(torch.float64)[:, None]
    radius = cv_gaussian_ksize(sigma) // 2
    kernel = torch.exp(-taps ** 2 / (2 * sigma ** 2)) * (taps.abs() <= radius)
    kernel = (kernel / kernel.sum(dim=-1, keepdim=True)).to(img.dtype)
    kernel = kernel[:, None, :].expand(n, c, kernel.shape[-1]).reshape(n * c, -1)  # one per channel
    x = F.pad(img.reshape(1, n * c, h, w), (reach,) * 4, mode="reflect")  # torch's reflect = REFLECT_101
    x = F.conv2d(x, kernel[:, None, None, :], groups=n * c)
    x = F.conv2d(x, kernel[:, None, :, None], groups=n * c)
    return x.reshape(n, c, h, w).round().clamp(0, 255)


def _occluder_mask(d: dict, size: int) -> torch.Tensor:
    """(B, S, S) pixels each sample's occluder paints: cv2.rectangle's filled box (both corners
    included) or cv2.ellipse's filled rotated ellipse (angle rounded to whole degrees as cv2 does),
    the latter as its implicit equation; False where not occluded."""
    x, y, w, h = (v.to(torch.float32)[:, None, None] for v in d["occluder_box"].unbind(dim=-1))
    grid = torch.arange(size, device=x.device, dtype=torch.float32)
    px, py = grid[None, None, :], grid[None, :, None]
    rect = ((px >= x) & (px <= x + w)) & ((py >= y) & (py <= y + h))
    # centre int(x + w / 2), semi-axes int(w / 2), int(h / 2) of non-negative integers
    half_w, half_h = torch.floor(w / 2), torch.floor(h / 2)
    dx, dy = px - (x + half_w), py - (y + half_h)
    theta = torch.deg2rad(torch.round(d["occluder_angle"].to(torch.float32)))[:, None, None]
    cos, sin = torch.cos(theta), torch.sin(theta)
    inv_a2, inv_b2 = half_w.clamp(min=0.5) ** -2, half_h.clamp(min=0.5) ** -2
    # (u / a)^2 + (v / b)^2 <= 1 with u = dx cos + dy sin, v = -dx sin + dy cos, expanded so only
    # the cross term needs the full (B, S, S) grid
    qxx, qyy = cos ** 2 * inv_a2 + sin ** 2 * inv_b2, sin ** 2 * inv_a2 + cos ** 2 * inv_b2
    qxy = 2 * cos * sin * (inv_a2 - inv_b2)
    ellipse = (qxx * dx ** 2 + qyy * dy ** 2 + (qxy * dx) * dy) <= 1
    return torch.where(d["occluder_rect"][:, None, None], rect, ellipse) & d["occluded"][:, None, None]
