"""Shape (identity) and expression bases of the synthetic face: smooth displacement fields.

Every mode is an analytic displacement (mm per unit weight) of the rest vertices, written in
terms of the designed layout (``synthetic_layout``), so e.g. "nose length" moves exactly the
nose vertices. The 40 shape modes (named ones first, then random smooth fields) are
orthogonalised on the dense mesh, each keeping its designed magnitude, so N(0, 1) weights give
plausible faces. The 10 expression modes keep their meaning (not orthogonalised); their weights
are ~[-1, 1] (see ``edgefa.facemodel.synthetic_params.sample_expressions`` for the ranges drawn).
"""
from __future__ import annotations

import numpy as np

from edgefa.facemodel import synthetic_layout as lay
from edgefa.facemodel.base import N_EXPR, N_SHAPE

EXPRESSIONS = ("mouth_open", "smile", "brow_raise", "brow_furrow", "eyes_close", "pucker",
               "jaw_shift", "upper_lip_raise", "smile_asym", "wink")
HINGE_Y, HINGE_Z, JAW_OPEN_RAD = 5.0, -5.0, 0.17  # the jaw rotates about the ears
SHAPE_SCALE = 0.55  # designed identity modes are scaled so that N(0, 1) weights stay plausible


def _g(ax, y, cx, cy, sx, sy):
    return np.exp(-(((ax - cx) / sx) ** 2 + ((y - cy) / sy) ** 2))


def _vec(dx=0.0, dy=0.0, dz=0.0, n=None):
    return np.stack([np.broadcast_to(np.asarray(v, dtype=np.float64), (n,)) for v in (dx, dy, dz)], 1)


class _Frame:
    """Rest vertices with the layout coordinates the fields are written in."""

    def __init__(self, verts, front, part):
        self.p, self.n = verts.astype(np.float64), len(verts)
        self.x, self.y, self.z = self.p.T
        self.ax, self.sx = np.abs(self.x), np.sign(self.x)
        self.head = (part == 0).astype(np.float64)
        self.ear = (part == 1).astype(np.float64)
        self.neck = (part == 2).astype(np.float64)
        self.f = np.where(part == 0, front, 0.0)  # features live on the front of the head only
        _, _, _, self.t = lay.mouth_coords(self.x, self.y)
        self.upper_lip, self.lower_lip, self.opening, _ = lay.mouth_coords(self.x, self.y)
        self.jaw = self._jaw_weight()

    def _jaw_weight(self):
        """1 on the parts that move with the lower jaw, 0 above the mouth, t across the opening."""
        front = lay.jaw_weight(self.x, self.y)
        below = lay.smoothstep(-45.0, -70.0, self.y) * lay.smoothstep(-40.0, 10.0, self.z)
        return self.head * (self.f * front + (1 - self.f) * below)

    def eye_closure(self, side_sign):
        """Displacement that shuts one eye (side_sign -1: the subject's right, x < 0)."""
        u, _, inside = lay.eye_coords(self.x, self.y)
        upper, lower = lay.eye_lids(u)
        height = upper - lower
        above = self.y - upper
        lateral = lay.smoothstep(-0.3, 0.0, u) * lay.smoothstep(1.3, 1.0, u)
        lid = np.where(above >= 0, -height * lay.smoothstep(13.0, 0.0, above) * lateral, 0.0)
        dy = np.where(inside, -(self.y - lower), lid)
        dz = 1.0 * np.where(inside, (self.y - lower) / np.maximum(height, 1e-3), 0)
        mine = (self.sx == side_sign) & (self.f > 0)
        return _vec(0, dy * mine * self.f, dz * mine * self.f, n=self.n)


def shape_fields(fr: _Frame, seed: int) -> list[np.ndarray]:
    """Designed identity modes, then random smooth fields to make 40."""
    x, y, z, ax, sx, f, n = fr.x, fr.y, fr.z, fr.ax, fr.sx, fr.f, fr.n
    nose_rows = lay.smoothstep(26.0, -6.0, y) * lay.smoothstep(-26.0, -18.0, y) * _g(ax, 0, 0, 0, 16, 1)
    lip_up = np.interp(y, [lay.MOUTH_Y, -34.0, -22.0], [0, 1, 0]) * _g(x, 0, 0, 0, 24, 1)
    lip_lo = np.interp(y, [-66.0, -53.0, lay.MOUTH_Y], [0, 1, 0]) * _g(x, 0, 0, 0, 24, 1)
    eye = _g(ax, y, 31, 28, 14, 10)
    fields = [
        _vec(0.06 * x * (1 - 0.5 * fr.neck), n=n),  # head width
        _vec(0, 0.09 * np.minimum(y - 20.0, 0) * fr.head, n=n),  # lower face length
        _vec(0, 0, 0.05 * z * fr.head, n=n),  # head depth
        _vec(0.09 * x * lay.smoothstep(-10.0, -60.0, y) * fr.head, n=n),  # jaw width
        _vec(0, -4.0 * lay.smoothstep(-50.0, -78.0, y) * _g(x, 0, 0, 0, 40, 1) * fr.head, n=n),  # chin length
        _vec(0, 0, 4.0 * _g(x, y, 0, -76, 20, 14) * f, n=n),  # chin protrusion
        _vec(4.0 * sx * _g(ax, y, 52, 5, 15, 16) * fr.head, n=n),  # cheekbone width
        _vec(0, 0, 4.0 * _g(ax, y, 40, -15, 18, 18) * f, n=n),  # cheek fullness
        _vec(0, -4.0 * nose_rows * f, n=n),  # nose length
        _vec(0.18 * x * _g(x, y, 0, -12, 18, 9) * f, n=n),  # nose width
        _vec(0, 0, 0.2 * lay.nose_relief(x, y) * f, n=n),  # nose protrusion
        _vec(0, 0, 3.0 * _g(x, y, 0, 14, 7, 12) * f, n=n),  # nasal bridge height
        _vec(3.0 * sx * eye * f, n=n),  # eye spacing
        _vec(0.12 * (x - sx * 31) * eye * f, 0.12 * (y - 28) * eye * f, n=n),  # eye size
        _vec(0, 3.0 * _g(ax, y, 31, 28, 16, 12) * f, n=n),  # eye height
        _vec(0, 0.15 * (ax - 31) * eye * f, n=n),  # eye tilt
        _vec(0, 3.0 * _g(ax, y, 36, 46, 22, 8) * f, n=n),  # brow height
        _vec(0, 0, 3.0 * _g(ax, y, 30, 42, 25, 8) * f, n=n),  # brow ridge
        _vec(0.12 * x * _g(x, y, 0, -42, 30, 12) * f, n=n),  # mouth width
        _vec(0, 2.0 * lip_up * f, n=n),  # upper lip height
        _vec(0, -2.5 * lip_lo * f, n=n),  # lower lip height
        _vec(0, 3.0 * _g(x, y, 0, -42, 30, 10) * f, n=n),  # mouth height
        _vec(0, 0, -5.0 * lay.smoothstep(45.0, 100.0, y) * lay.smoothstep(0.0, 0.5, fr.f), n=n),  # forehead slope
        _vec(0, 6.0 * lay.smoothstep(40.0, 90.0, y) * fr.head, n=n),  # forehead height
        _vec(0, 5.0 * _g(ax, y, 60, -50, 15, 15) * fr.head, n=n),  # jaw angle height
        _vec(2.0 * _g(x, y, 0, -10, 40, 50) * f, n=n),  # feature asymmetry
        _vec(0, 0, -3.0 * _g(ax, y, 31, 28, 12, 9) * f, n=n),  # eye depth
        _vec(0, 0, 3.0 * _g(x, y, 0, -42, 22, 12) * f, n=n),  # lip protrusion
        _vec(2.0 * sx * _g(ax, y, 13, -15, 5, 5) * f, n=n),  # nostril flare
        _vec(0.15 * x * _g(x, y, 0, -78, 30, 12) * fr.head, n=n),  # chin width
        _vec(0, 0.08 * np.maximum(y - 30.0, 0) * fr.head, n=n),  # skull height
        _vec(0, -2.0 * _g(x, y, 0, -8, 10, 6) * f, n=n),  # nose tip droop
        _vec(0.06 * x * fr.neck, 0, 0.06 * (z + 12.0) * fr.neck, n=n),  # neck thickness
    ]
    ear_c = np.array([(fr.p[(fr.ear > 0) & (sx * k > 0)]).mean(0) for k in (-1, 1)])
    side = (sx > 0).astype(int)
    fields.append(0.15 * (fr.p - ear_c[side]) * fr.ear[:, None])  # ear size
    rng = np.random.default_rng([seed, 40])
    face_idx = np.flatnonzero(f > 0.3)
    while len(fields) < N_SHAPE:  # generic identity variation: sums of smooth bumps on the face
        centres = fr.p[rng.choice(face_idx, 6, replace=False)]
        vectors = rng.normal(0, 1.6, (6, 3))
        d2 = ((fr.p[:, None] - centres[None]) ** 2).sum(-1)
        fields.append(np.exp(-d2 / (2 * 28.0 ** 2)) @ vectors * fr.head[:, None])
    return [SHAPE_SCALE * fld for fld in fields]


def expression_fields(fr: _Frame) -> list[np.ndarray]:
    x, y, z, ax, sx, f, n = fr.x, fr.y, fr.z, fr.ax, fr.sx, fr.f, fr.n
    jaw = fr.jaw
    recess = np.where(fr.opening, 4 * np.clip(fr.t, 0, 1) * (1 - np.clip(fr.t, 0, 1)), 0.0) * f
    # the jaw turns about the ears (down and a little back) and the opening recedes into a cavity
    mouth_open = _vec(0, -JAW_OPEN_RAD * (z - HINGE_Z) * jaw,
                      0.5 * JAW_OPEN_RAD * (y - HINGE_Y) * jaw - 8.0 * recess, n=n)
    corner = _g(ax, y, lay.MOUTH_W, lay.MOUTH_Y, 12, 10)
    cheek = _g(ax, y, 35, -8, 15, 12)
    lower_lid = _g(ax, y, 31, 24, 10, 3)
    smile = _vec(4.5 * sx * corner * f, (5.5 * corner + 3.0 * cheek + 1.0 * lower_lid) * f,
                 (-1.5 * corner + 3.0 * cheek) * f, n=n)
    brow_raise = _vec(0, (6.5 * _g(ax, y, 35, 50, 25, 12) + 1.5 * _g(ax, y, 31, 36, 14, 4)) * f, n=n)
    furrow = _g(ax, y, 20, 45, 11, 9)
    brow_furrow = _vec(-3.0 * sx * furrow * f, -4.5 * furrow * f, -1.0 * furrow * f, n=n)
    right, left = fr.eye_closure(-1), fr.eye_closure(1)
    pucker_w = _g(x, y, 0, -42, 22, 12) * f
    pucker = _vec(-0.35 * x * pucker_w, 0, 6.0 * pucker_w, n=n)
    jaw_shift = _vec(7.0 * jaw, n=n)
    _, iu, il, _ = lay.lip_lines(x)
    above = np.where(y >= iu, np.interp(y - iu, [0, 8, 20], [1, 1, 0]), np.where(y <= il, 0.0, 1 - np.clip(fr.t, 0, 1)))
    lip_raise = _vec(0, 2.5 * above * _g(x, 0, 0, 0, 18, 1) * f, n=n)
    asym = np.tanh(x / 8.0)
    smile_asym = smile * asym[:, None]
    return [mouth_open, smile, brow_raise, brow_furrow, right + left, pucker, jaw_shift, lip_raise, smile_asym,
            right - left]


def _orthogonalise(fields: list[np.ndarray]) -> np.ndarray:
    """Gram-Schmidt on the dense mesh, in order: each mode keeps what is new in it, at its size."""
    mat = np.stack([fld.reshape(-1) for fld in fields], 1)
    # Q R = M through the Cholesky factor of the 40x40 Gram matrix (same result, far less work)
    r = np.linalg.cholesky(np.einsum("ij,ik->jk", mat, mat)).T  # einsum: no BLAS thread pool to wait on
    q = np.linalg.solve(r.T, mat.T).T
    return q * np.diag(r)  # the sign and length of each mode's residual after the earlier ones


def _carry_neck(fields: list[np.ndarray], fr: _Frame) -> list[np.ndarray]:
    """Move the neck rigidly with the underside of the head, so the two never come apart."""
    neck_top = (fr.head > 0) & (fr.y < -50) & (fr.x ** 2 / 54.0 ** 2 + (fr.z + 12.0) ** 2 / 57.0 ** 2 < 1.2)
    out = []
    for fld in fields:
        fld = fld.copy()
        fld[fr.neck > 0] += fld[neck_top].mean(0)
        out.append(fld)
    return out


def build_bases(verts, front, part, extras, seed: int):
    """(3N, 40) shape and (3N, 10) expression bases for the rest vertices, rows x0 y0 z0 x1 ..."""
    frame = _Frame(verts, front, part)
    shape = _orthogonalise(_carry_neck(shape_fields(frame, seed), frame))
    expr = np.stack([fld.reshape(-1) for fld in _carry_neck(expression_fields(frame), frame)], 1)
    assert shape.shape[1] == N_SHAPE and expr.shape[1] == N_EXPR
    return shape.astype(np.float32), expr.astype(np.float32)
