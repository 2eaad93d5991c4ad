"""The parameter distribution of the synthetic face model: poses over the full yaw range, shapes,
expressions, framed as the 3DDFA 120x120 crops of AFLW2000-3D frame faces. The face model's
parameter statistics and the synthetic dataset both draw from it."""
from __future__ import annotations

import numpy as np

from edgefa.facemodel.base import N_EXPR, N_SHAPE, FaceModel
from edgefa.facemodel.synthetic_bases import EXPRESSIONS

YAW_RANGE = 90.0  # degrees, uniform
PITCH_SD, ROLL_SD, PITCH_ROLL_MAX = 11.0, 10.0, 30.0
BOX_FRACTION = (0.60, 0.75)  # landmark bounding box (its longer side) / crop size
CENTRE_JITTER_SD, CENTRE_JITTER_MAX = 2.0, 5.0  # pixels


def rotation_matrices(yaw, pitch, roll) -> np.ndarray:
    """(n,) degrees -> (n, 3, 3): ``geometry.euler_to_rotation`` in numpy, which is ~50x faster
    for the 20,000 draws of the parameter statistics (tests pin the two together)."""
    y, p, r = (np.radians(np.asarray(a, dtype=np.float64).reshape(-1)) for a in (yaw, pitch, roll))
    one, zero = np.ones_like(y), np.zeros_like(y)

    def mat(*entries):
        return np.stack(entries, -1).reshape(-1, 3, 3)

    rx = mat(one, zero, zero, zero, np.cos(p), -np.sin(p), zero, np.sin(p), np.cos(p))
    ry = mat(np.cos(y), zero, np.sin(y), zero, one, zero, -np.sin(y), zero, np.cos(y))
    rz = mat(np.cos(r), -np.sin(r), zero, np.sin(r), np.cos(r), zero, zero, zero, one)
    return (rz @ ry @ rx).transpose(0, 2, 1)


def sample_expressions(rng: np.random.Generator, n: int) -> np.ndarray:
    """Mostly mild expressions; about a third get one or two strong ones (wide-open mouth, blink...)."""
    col = {name: k for k, name in enumerate(EXPRESSIONS)}
    expr = np.clip(rng.normal(0.0, 0.22, (n, N_EXPR)), -0.6, 0.6)
    expr[:, col["mouth_open"]] = np.abs(rng.normal(0.0, 0.15, n))
    strong = rng.random(n) < 0.35
    for _ in range(2):
        mode = rng.integers(0, N_EXPR, n)
        level = rng.uniform(0.5, 1.0, n) * np.where(rng.random(n) < 0.5, -1.0, 1.0)
        rows = np.flatnonzero(strong & (rng.random(n) < 0.7))
        expr[rows, mode[rows]] = level[rows]
    expr[:, col["mouth_open"]] = np.abs(expr[:, col["mouth_open"]])
    # eyelids: each eye's closure in [-0.3 (wide), 1 (shut)]; blinks and winks now and then
    closure = np.clip(rng.normal(0.05, 0.12, (n, 2)), -0.3, 0.6)
    blink = rng.random(n) < 0.08
    closure[blink] = rng.uniform(0.6, 1.0, (blink.sum(), 1))
    wink = rng.random(n) < 0.04
    closure[wink, rng.integers(0, 2, wink.sum())] = rng.uniform(0.8, 1.0, wink.sum())
    expr[:, col["eyes_close"]] = closure.mean(1)
    expr[:, col["wink"]] = (closure[:, 0] - closure[:, 1]) / 2  # + closes the subject's right eye
    return expr


def sample_params_batch(rng: np.random.Generator, fm: FaceModel, n: int) -> np.ndarray:
    """Draw n raw 62-parameter vectors: pose over the full yaw range, N(0, 1) shape, expressions."""
    yaw = rng.uniform(-YAW_RANGE, YAW_RANGE, n)
    pitch = np.clip(rng.normal(0.0, PITCH_SD, n), -PITCH_ROLL_MAX, PITCH_ROLL_MAX)
    roll = np.clip(rng.normal(0.0, ROLL_SD, n), -PITCH_ROLL_MAX, PITCH_ROLL_MAX)
    rot = rotation_matrices(yaw, pitch, roll)
    shape = rng.standard_normal((n, N_SHAPE))
    expr = sample_expressions(rng, n)
    pts = (fm.mean.reshape(-1).astype(np.float64) + shape @ fm.shape_basis.T.astype(np.float64)
           + expr @ fm.expr_basis.T.astype(np.float64)).reshape(n, -1, 3)
    posed = pts @ rot.transpose(0, 2, 1)
    lo, hi = posed.min(axis=1), posed.max(axis=1)
    extent = np.maximum(hi[:, 0] - lo[:, 0], hi[:, 1] - lo[:, 1])
    scale = rng.uniform(*BOX_FRACTION, n) * fm.size / extent
    jitter = np.clip(rng.normal(0.0, CENTRE_JITTER_SD, (n, 2)), -CENTRE_JITTER_MAX, CENTRE_JITTER_MAX)
    cx, cy = fm.size / 2 + jitter[:, 0], fm.size / 2 + jitter[:, 1]
    mid = (lo + hi) / 2
    # crop x = v_x - 1 and crop y = size - v_y (geometry.project_to_crop): solve for t
    t = np.stack([cx + 1 - scale * mid[:, 0], fm.size - cy - scale * mid[:, 1],
                  -scale * posed[:, :, 2].mean(1)], 1)
    pose = np.concatenate([scale[:, None, None] * rot, t[:, :, None]], 2).reshape(n, 12)
    return np.concatenate([pose, shape, expr], 1).astype(np.float32)


def sample_params(rng: np.random.Generator, fm: FaceModel) -> np.ndarray:
    """One raw 62-parameter vector (see ``sample_params_batch``)."""
    return sample_params_batch(rng, fm, 1)[0]
