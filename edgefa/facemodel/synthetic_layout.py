"""The designed layout of the synthetic face, in model millimetres (x right, y up, z forward).

Everything here is a function of the *front-plane* position (x, y) of a point on the face: the
feature curves (eyelids, lips, brows), the 68 landmark targets, the relief that sculpts the face
on top of the smooth head (nose, lips, eye sockets, cheekbones, chin) and the per-vertex fields the
renderer paints with. Proportions follow textbook facial anthropometry (eye width ~30 mm,
interpupillary ~63 mm, mouth ~50 mm, nose ~34 mm wide); the subject's left side is +x. Features
are designed for the left side and mirrored with |x|.
"""
from __future__ import annotations

import numpy as np

# --- eyes (left eye, x > 0; the right eye is its mirror) -------------------------------------
EYE_INNER = np.array([16.5, 27.0])
EYE_OUTER = np.array([46.0, 29.5])
EYE_UPPER_H, EYE_LOWER_H = 5.6, 3.6  # lid heights above/below the corner-to-corner chord
EYE_CENTRE = np.array([31.0, 29.3])  # where the iris rests (gaze straight ahead)

# --- mouth ---------------------------------------------------------------------------------
MOUTH_Y, MOUTH_W, MOUTH_INNER_W = -42.0, 25.0, 22.5  # mouth line, outer / inner corner half-width
MOUTH_GAP = 1.2  # rest height of the (closed) mouth opening between the inner lip lines

# --- brows -----------------------------------------------------------------------------------
BROW_X0, BROW_X1 = 15.0, 57.0

# region labels stored per vertex in ``DenseMesh.extras["region"]``
REGIONS = ("skin", "lips", "sclera", "mouth", "teeth", "ear", "neck", "lid")
REGION = {name: i for i, name in enumerate(REGIONS)}


def smoothstep(e0, e1, x):
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _gauss(x, y, cx, cy, sx, sy):
    return np.exp(-(((x - cx) / sx) ** 2 + ((y - cy) / sy) ** 2))


# --- eyes ------------------------------------------------------------------------------------
def eye_u(ax):
    """Position along the left eye from inner (0) to outer (1) corner, for |x|."""
    return (ax - EYE_INNER[0]) / (EYE_OUTER[0] - EYE_INNER[0])


def eye_lids(u):
    """Upper and lower lid heights y at eye positions u in [0, 1] (skewed arcs, as real lids)."""
    u = np.clip(u, 0.0, 1.0)
    chord = EYE_INNER[1] + u * (EYE_OUTER[1] - EYE_INNER[1])
    upper = chord + EYE_UPPER_H * np.sin(np.pi * u ** 0.8) ** 0.85
    lower = chord - EYE_LOWER_H * np.sin(np.pi * u ** 1.15)
    return upper, lower


def eye_coords(x, y):
    """(u, s, inside): s = -1 at the lower lid, +1 at the upper lid; inside the opening or not."""
    u = eye_u(np.abs(x))
    upper, lower = eye_lids(u)
    s = (2 * y - upper - lower) / np.maximum(upper - lower, 1e-3)
    inside = (u > 0) & (u < 1) & (np.abs(s) < 1)
    return u, s, inside


def eye_outline(n: int = 48) -> np.ndarray:
    """Closed left-eye outline (2n, 2): upper lid inner->outer, then lower lid outer->inner."""
    u = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, n + 1))  # denser at the corners
    x = EYE_INNER[0] + u * (EYE_OUTER[0] - EYE_INNER[0])
    upper, lower = eye_lids(u)
    top = np.stack([x, upper], 1)
    bottom = np.stack([x, lower], 1)[::-1][1:-1]
    return np.concatenate([top, bottom])


# --- mouth -----------------------------------------------------------------------------------
def lip_lines(x):
    """Outer-upper, inner-upper, inner-lower, outer-lower lip line heights at x (|x| <= MOUTH_W)."""
    ax = np.minimum(np.abs(x), MOUTH_W)
    line = MOUTH_Y + 0.4 * (1 - (ax / MOUTH_W) ** 2)
    bow = 0.8 * np.exp(-(((ax - 6.0) / 3.0) ** 2)) - 1.6 * np.exp(-((x / 2.2) ** 2))  # cupid's bow
    outer_upper = line + 7.8 * (1 - (ax / MOUTH_W) ** 1.8) ** 0.8 + bow
    outer_lower = line - 11.0 * (1 - (ax / MOUTH_W) ** 2) ** 0.75
    gap = 0.5 * MOUTH_GAP * np.clip(1 - (ax / MOUTH_INNER_W) ** 2, 0, 1)
    return outer_upper, line + gap, line - gap, outer_lower


def mouth_coords(x, y):
    """Lip membership and the mouth-opening coordinate t (0 at the upper, 1 at the lower inner lip)."""
    ou, iu, il, ol = lip_lines(x)
    within = np.abs(x) < MOUTH_W
    upper_lip = within & (y <= ou) & (y >= iu)
    lower_lip = within & (y >= ol) & (y <= il)
    t = (iu - y) / np.maximum(iu - il, 1e-3)
    opening = within & (np.abs(x) < MOUTH_INNER_W) & (t > 0) & (t < 1)
    return upper_lip, lower_lip, opening, t


def jaw_weight(x, y):
    """How much a front point moves with the lower jaw: 0 above the mouth, t across the opening,
    1 on the lower lip and chin; beside the mouth it ramps down the cheek."""
    _, iu, il, _ = lip_lines(x)
    _, _, _, t = mouth_coords(x, y)
    column = 1 - smoothstep(MOUTH_W - 4.0, MOUTH_W + 10.0, np.abs(x))
    in_mouth = np.where(y >= iu, 0.0, np.where(y <= il, 1.0, np.clip(t, 0, 1)))
    return column * in_mouth + (1 - column) * smoothstep(-32.0, -60.0, y)


# --- landmarks ---------------------------------------------------------------------------------
def landmark_targets() -> np.ndarray:
    """Front-plane (x, y) of landmarks 17-67 (iBUG order); rows 0-16 (the jaw) are NaN here."""
    pts = np.full((68, 2), np.nan)
    for k, u in zip(range(22, 27), (0.02, 0.25, 0.5, 0.75, 0.98)):  # left brow, inner -> outer
        ax = BROW_X0 + u * (BROW_X1 - BROW_X0)
        centre, half = brow_line(np.array(ax))
        pts[k] = ax, centre + 0.55 * half
        pts[43 - k] = -ax, centre + 0.55 * half  # right brow 21..17 mirrors 22..26
    pts[27:31] = [(0, 28.0), (0, 17.5), (0, 7.0), (0, -5.5)]
    pts[31:36] = [(-13.5, -16.5), (-7.0, -19.0), (0, -20.5), (7.0, -19.0), (13.5, -16.5)]

    def eye_point(u, lid):
        upper, lower = eye_lids(np.array(u))
        return EYE_INNER[0] + u * (EYE_OUTER[0] - EYE_INNER[0]), float(upper if lid == "up" else lower)

    # left eye 42-47: inner corner, upper lid (inner, outer), outer corner, lower lid (outer, inner)
    pts[42:48] = [eye_point(0.0, "up"), eye_point(1 / 3, "up"), eye_point(2 / 3, "up"),
                  eye_point(1.0, "up"), eye_point(2 / 3, "low"), eye_point(1 / 3, "low")]
    # right eye 36-41: outer corner, upper (outer, inner), inner corner, lower (inner, outer)
    for right, left in zip(range(36, 42), (45, 44, 43, 42, 47, 46)):
        pts[right] = -pts[left, 0], pts[left, 1]

    xs = np.array([-MOUTH_W, -14.5, -6.0, 0.0, 6.0, 14.5, MOUTH_W])
    ou, _, _, ol = lip_lines(xs)
    pts[48:55] = np.stack([xs, ou], 1)
    pts[48, 1] = pts[54, 1] = MOUTH_Y
    pts[55:60] = np.stack([xs[5:0:-1], ol[5:0:-1]], 1)  # lower lip, left -> right
    xi = np.array([-MOUTH_INNER_W, -8.0, 0.0, 8.0, MOUTH_INNER_W])
    _, iu, il, _ = lip_lines(xi)
    pts[60:65] = np.stack([xi, iu], 1)
    pts[60, 1] = pts[64, 1] = MOUTH_Y
    pts[65:68] = np.stack([xi[3:0:-1], il[3:0:-1]], 1)
    return pts


# --- brows, hair, nostrils (continuous paint fields) -------------------------------------------
def brow_line(ax):
    """Brow centre height and half thickness at |x| (the brow arches up to a peak ~55% along)."""
    u = np.clip((ax - BROW_X0) / (BROW_X1 - BROW_X0), 0, 1)
    rise = 42.0 + 6.5 * np.sin(0.5 * np.pi * np.minimum(u / 0.55, 1))
    fall = 48.5 - 4.0 * np.clip((u - 0.55) / 0.45, 0, 1) ** 1.3
    return np.where(u < 0.55, rise, fall), 4.3 - 2.5 * u


def brow_density(x, y):
    ax = np.abs(x)
    centre, half = brow_line(ax)
    across = 1 - smoothstep(half - 1.0, half + 1.2, np.abs(y - centre))
    along = smoothstep(BROW_X0 - 2.0, BROW_X0 + 2.5, ax) * (1 - smoothstep(BROW_X1 - 4.0, BROW_X1 + 1.0, ax))
    return across * along


def nostril_density(x, y):
    return np.clip(1.6 * _gauss(np.abs(x), y, 6.2, -17.3, 3.6, 1.9) - 0.3, 0, 1)


_HAIR_KNOTS = np.array([0, 25, 45, 62, 72, 96, 115, 140, 180], dtype=float)
_HAIR_HEIGHT = np.array([86, 82, 74, 60, 22, 50, 10, -45, -60], dtype=float)


def hair_level(p: np.ndarray) -> np.ndarray:
    """Height (mm) above the hairline, by azimuth around the skull: > 0 is where hair grows."""
    theta = np.degrees(np.arctan2(np.abs(p[:, 0]), p[:, 2] + 8.0))
    return p[:, 1] - np.interp(theta, _HAIR_KNOTS, _HAIR_HEIGHT)


def beard_density(x, y):
    """Where a beard/stubble grows on the lower face (0..1), for the renderer's optional beard."""
    ax = np.abs(x)
    jaw = smoothstep(-20.0, -35.0, y) * (1 - smoothstep(55.0, 70.0, ax))
    moustache = _gauss(ax, y, 12.0, -27.0, 14.0, 4.5)
    upper, lower, opening, _ = mouth_coords(x, y)
    return np.clip(jaw + moustache, 0, 1) * ~(upper | lower | opening)


# --- relief: the face sculpted on top of the smooth head (z offsets, mm) ------------------------
def _eyeball(x, y):
    dx, dy = np.abs(x) - EYE_CENTRE[0], y - EYE_CENTRE[1]
    return 3.0 * np.sqrt(np.clip(1 - (dx * dx + dy * dy) / 16.0 ** 2, 0, 1))


def relief(x, y):
    ax = np.abs(x)
    z = 13.0 * np.exp(-((ax / 30.0) ** 2.6) - ((y + 33.0) / 24.0) ** 2)  # maxilla / muzzle
    z += 8.0 * np.exp(-((y - 41.0) / 8.0) ** 2) * np.exp(-((ax / 52.0) ** 4))  # brow ridge
    z += 3.0 * _gauss(ax, y, 0.0, 33.0, 9.0, 6.0)  # glabella
    z -= 10.0 * _gauss(ax, y, 30.0, 27.5, 16.0, 12.0)  # eye sockets
    z += 7.0 * _gauss(ax, y, 45.0, 7.0, 15.0, 12.0)  # cheekbones
    z += 3.0 * _gauss(ax, y, 34.0, -12.0, 14.0, 14.0)  # cheeks
    z -= 4.0 * _gauss(ax, y, 63.0, 40.0, 9.0, 14.0)  # temples
    z += 6.0 * _gauss(ax, y, 0.0, -76.0, 15.0, 9.0)  # chin
    z -= 2.5 * _gauss(ax, y, 0.0, -59.0, 13.0, 3.5)  # mentolabial sulcus
    z -= 1.5 * _gauss(ax, y, 27.0, -30.0, 4.0, 12.0) * smoothstep(5.0, 20.0, ax)  # nasolabial fold
    z += nose_relief(x, y) + _lips(x, y) + _eye_relief(x, y)
    return z


def nose_relief(x, y):
    ax = np.abs(x)
    # dorsum height over the face, rising from the nasion to the tip, then the columella underneath
    above = 4.0 + 23.0 * np.clip((28.0 - y) / 33.5, 0, 1) ** 1.1
    below = 27.0 * np.clip(1 - np.clip((-5.5 - y) / 15.0, 0, 1) ** 1.4, 0, 1)
    height = np.where(y > -5.5, above, below) * smoothstep(40.0, 30.0, y)
    width = 6.5 + 2.5 * smoothstep(28.0, 5.0, y) + 3.0 * smoothstep(0.0, -10.0, y)
    dorsum = height * np.clip(1 - (ax / width) ** 2, 0, 1) ** 1.3
    tip = 4.0 * _gauss(ax, y, 0.0, -4.0, 7.5, 6.0)
    alae = 9.0 * _gauss(ax, y, 12.0, -13.5, 5.0, 5.0) - 1.5 * _gauss(ax, y, 16.5, -11.0, 1.5, 6.0)
    nostrils = -3.0 * nostril_density(x, y)
    philtrum = 0.8 * _gauss(ax, y, 4.0, -28.0, 1.5, 7.0) - 0.6 * _gauss(ax, y, 0.0, -28.0, 1.8, 7.0)
    return dorsum + tip + alae + nostrils + philtrum


def _lips(x, y):
    ou, iu, il, ol = lip_lines(x)
    ax = np.abs(x)
    taper = np.sqrt(np.clip(1 - (ax / MOUTH_W) ** 2, 0, 1))
    s_up = np.clip((y - iu) / np.maximum(ou - iu, 1e-3), 0, 1)
    s_lo = np.clip((il - y) / np.maximum(il - ol, 1e-3), 0, 1)
    upper, lower, opening, _ = mouth_coords(x, y)
    z = np.where(upper, 3.2 * taper * np.sin(np.pi * (0.15 + 0.85 * s_up)) ** 0.7, 0.0)
    z = np.where(lower, 4.2 * taper * np.sin(np.pi * (0.1 + 0.9 * s_lo)) ** 0.7, z)
    # the closed mouth opening is a groove behind both lips
    z = np.where(opening, 1.0 * taper - 2.5, z)
    return z


def _eye_relief(x, y):
    u, _, inside = eye_coords(x, y)
    upper, lower = eye_lids(u)
    ball = _eyeball(x, y)
    above = np.maximum(y - upper, 0.0)
    below = np.maximum(lower - y, 0.0)
    near = smoothstep(-0.3, 0.05, u) * smoothstep(1.3, 0.95, u)
    # lids ride 1.2 mm proud of the eyeball; the upper lid has a crease 6 mm above its margin
    lid = (1.2 * np.exp(-above / 2.5) * (y > lower) + 1.0 * np.exp(-below / 2.0) * (y <= lower)
           - 1.0 * np.exp(-(((above - 6.0) / 1.6) ** 2)) * (y > lower))
    return np.where(inside, ball, ball + lid * near)
