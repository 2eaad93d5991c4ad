"""The synthetic head's geometry: an implicit skull + face block, meshed with designed vertices.

The smooth head is the zero set of a signed-distance-like function (a cranium ellipsoid smoothly
joined to a face block carved from a frontal ellipse, a horizontal super-ellipse and a jaw plane).
It is star-shaped around the origin, so any set of surface points triangulates as the convex hull
of their directions (a spherical Delaunay triangulation): dense, designed points on the face
(eyelid and lip rings, landmark vertices) and coarser ones on the scalp need no seams or patches.
The facial relief of ``synthetic_layout`` is then added along z, which keeps every front vertex's
(x, y) exactly where the layout put it. Ears and the neck are separate closed-ish parts.
"""
from __future__ import annotations

import numpy as np
from scipy.spatial import ConvexHull, cKDTree

from edgefa.facemodel import synthetic_layout as lay

CRANIUM_C = np.array([0.0, 32.0, -8.0])
CRANIUM_R = np.array([77.0, 100.0, 102.0])
FACE_A, FACE_B, FACE_C = 73.0, 78.0, -10.0  # frontal outline ellipse: half width, half height, centre y
FACE_ZC, FACE_RZ = -10.0, 106.0  # horizontal super-ellipse; the face front is at zc + rz
JAW_Y0, JAW_Z0, JAW_SLOPE = -90.0, 80.0, 0.42  # jaw line under the chin, rising to the back


def _smin(a, b, k):
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0, 1)
    return b * (1 - h) + a * h - k * h * (1 - h)


def _smax(a, b, k):
    return -_smin(-a, -b, k)


def _ellipsoid(p, centre, radii):
    q = p - centre
    k0 = np.linalg.norm(q / radii, axis=-1)
    k1 = np.linalg.norm(q / radii ** 2, axis=-1)
    return k0 * (k0 - 1) / np.maximum(k1, 1e-9)


def head_sdf(p: np.ndarray) -> np.ndarray:
    """Approximate signed distance (mm) of points (..., 3) to the smooth head; < 0 inside."""
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    cranium = _ellipsoid(p, CRANIUM_C, CRANIUM_R)
    q = np.clip((y - FACE_C) / FACE_B, -1, 0)
    root = np.sqrt(np.maximum(1 - q * q, 1e-4))
    half_w = FACE_A * root
    u, w = np.abs(x) / half_w, np.abs(z - FACE_ZC) / FACE_RZ
    rho = np.maximum((u ** 3 + w ** 3) ** (1 / 3), 1e-6)
    du, dw = (u / rho) ** 2, (w / rho) ** 2
    d_half_w = np.where(y < FACE_C, -FACE_A * q / (FACE_B * root), 0.0)
    grad = np.sqrt((du / half_w) ** 2 + (dw / FACE_RZ) ** 2 + (du * u / half_w * d_half_w) ** 2)
    sides = (rho - 1) / np.maximum(grad, 1e-3)
    jaw = -((y - JAW_Y0) + JAW_SLOPE * (z - JAW_Z0)) / np.hypot(1.0, JAW_SLOPE)
    k0 = np.hypot(x / FACE_A, (y - FACE_C) / FACE_B)
    k1 = np.hypot(x / FACE_A ** 2, (y - FACE_C) / FACE_B ** 2)
    outline = np.where(y < FACE_C, k0 * (k0 - 1) / np.maximum(k1, 1e-9), np.abs(x) - FACE_A)
    sides = _smax(sides, outline, 4.0)  # the frontal outline itself (also closes the chin at x = 0)
    face = _smax(_smax(sides, jaw, 10.0), -z - 40.0, 5.0)
    face = _smax(face, y - 58.0, 15.0)
    return _smin(cranium, face, 12.0)


def sdf_normals(p: np.ndarray, eps: float = 0.05) -> np.ndarray:
    grad = np.stack([head_sdf(p + e) - head_sdf(p - e) for e in np.eye(3) * eps], -1)
    return grad / np.maximum(np.linalg.norm(grad, axis=-1, keepdims=True), 1e-9)


def ray_hits(dirs: np.ndarray, iters: int = 20) -> np.ndarray:
    """Surface points along unit directions from the origin (inside the head) by bisection."""
    lo, hi = np.zeros(len(dirs)), np.full(len(dirs), 260.0)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        inside = head_sdf(dirs * mid[:, None]) < 0
        lo, hi = np.where(inside, mid, lo), np.where(inside, hi, mid)
    return dirs * (0.5 * (lo + hi))[:, None]


def _z_columns(xy: np.ndarray, zs: np.ndarray) -> np.ndarray:
    """(n, 2) front-plane points x (m,) depths -> (n, m, 3) points along z."""
    depth = np.broadcast_to(zs[None, :, None], (len(xy), len(zs), 1))
    return np.concatenate([np.repeat(xy[:, None], len(zs), 1), depth], -1)


def front_hits(xy: np.ndarray, step: float = 6.0) -> np.ndarray:
    """First surface point seen from the front (+z) at each front-plane (x, y): a height field."""
    zs = np.arange(140.0, -130.0, -step)
    inside = head_sdf(_z_columns(xy, zs)) < 0
    first = np.argmax(inside, axis=1)
    if not inside[np.arange(len(xy)), first].all():
        raise ValueError("front_hits: a point misses the head")
    hi, lo = zs[np.maximum(first - 1, 0)], zs[first]  # hi outside, lo inside
    for _ in range(22):
        mid = 0.5 * (lo + hi)
        inside = head_sdf(np.concatenate([xy, mid[:, None]], 1)) < 0
        lo, hi = np.where(inside, mid, lo), np.where(inside, hi, mid)
    return np.concatenate([xy, (0.5 * (lo + hi))[:, None]], 1)


def jaw_landmarks(inset: float = 2.0) -> np.ndarray:
    """Landmarks 0-16: the frontal outline of the lower face, from the left ear level round the chin.

    As in 3DMMs, they are fixed vertices just inside the silhouette of a frontal view.
    """
    centre = np.array([0.0, 5.0])
    psi = np.radians(np.linspace(165.0, 375.0, 141))
    zs = np.arange(-120.0, 112.0, 6.0)
    lo, hi = np.full(len(psi), 20.0), np.full(len(psi), 120.0)
    ray = np.stack([np.cos(psi), np.sin(psi)], 1)
    for _ in range(16):
        mid = 0.5 * (lo + hi)
        xy = centre + ray * mid[:, None]
        hit = head_sdf(_z_columns(xy, zs)).min(axis=1) < 0
        lo, hi = np.where(hit, mid, lo), np.where(hit, hi, mid)
    outline = centre + ray * (0.5 * (lo + hi) - inset)[:, None]
    # start/end where the outline crosses y = 20 (ear level), then 17 points evenly by arc length
    keep = np.flatnonzero(outline[:, 1] <= 20.0)
    outline = outline[keep[0]:keep[-1] + 1]
    arc = np.concatenate([[0], np.cumsum(np.linalg.norm(np.diff(outline, axis=0), axis=1))])
    at = np.linspace(0, arc[-1], 17)
    xy = np.stack([np.interp(at, arc, outline[:, 0]), np.interp(at, arc, outline[:, 1])], 1)
    return xy


def fibonacci_directions(n: int) -> np.ndarray:
    i = np.arange(n) + 0.5
    y = 1 - 2 * i / n
    r = np.sqrt(1 - y * y)
    phi = np.pi * (1 + 5 ** 0.5) * i
    return np.stack([r * np.sin(phi), y, r * np.cos(phi)], 1)


def hex_grid(lo, hi, spacing: float) -> np.ndarray:
    ys = np.arange(lo[1], hi[1] + 1e-9, spacing * 0.866)
    rows = [np.stack([np.arange(lo[0] + (k % 2) * spacing / 2, hi[0], spacing), np.full(1, y).repeat(
        len(np.arange(lo[0] + (k % 2) * spacing / 2, hi[0], spacing)))], 1) for k, y in enumerate(ys)]
    return np.concatenate(rows)


def offset_polyline(poly: np.ndarray, offset: float, closed: bool, spacing: float) -> np.ndarray:
    """Resample a polyline by arc length and push it sideways (positive = left of travel)."""
    pts = np.concatenate([poly, poly[:1]]) if closed else poly
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    arc = np.concatenate([[0], np.cumsum(seg)])
    n = max(int(arc[-1] / spacing), 2)
    at = np.linspace(0, arc[-1], n, endpoint=not closed)
    res = np.stack([np.interp(at, arc, pts[:, 0]), np.interp(at, arc, pts[:, 1])], 1)
    tangent = np.gradient(np.concatenate([res[-1:], res, res[:1]]) if closed else res, axis=0)
    tangent = tangent[1:-1] if closed else tangent
    normal = np.stack([-tangent[:, 1], tangent[:, 0]], 1)
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-9)
    return res + offset * normal


def _mirror(pts):
    return np.concatenate([pts, pts * [-1, 1]])


def face_point_groups():
    """Designed front-plane points, most important first: (name, (n, 2) xy, min distance to kept)."""
    groups = [("landmarks", None, 0.0)]
    # the left eye outline runs clockwise in (x, y): positive offsets are outside the opening
    eye = lay.eye_outline(60)
    eye_rings = [offset_polyline(eye, off, True, 1.2) for off in (-0.35, 0.35, 1.3)]
    groups.append(("eye rings", _mirror(np.concatenate(eye_rings)), 0.25))
    inner = hex_grid((lay.EYE_INNER[0], 20.0), (lay.EYE_OUTER[0], 36.0), 1.25)
    _, s, inside = lay.eye_coords(inner[:, 0], inner[:, 1])
    groups.append(("eye interior", _mirror(inner[inside & (np.abs(s) < 0.8)]), 0.6))

    xs = np.linspace(-lay.MOUTH_W, lay.MOUTH_W, 81)
    ou, _, _, ol = lay.lip_lines(xs)
    lips = []
    for line, sign in ((ou, 1), (ol, -1)):
        poly = np.stack([xs, line], 1)
        lips += [offset_polyline(poly, off * sign, False, 1.1) for off in (0.35, -0.35)]
    groups.append(("lip rings", np.concatenate(lips), 0.3))
    # rows across the (closed) mouth opening: they spread out when the jaw drops; the close pairs
    # at t = 0.26/0.3 and 0.86/0.9 keep the teeth edges sharp (see synthetic_layout.mouth_coords)
    xi = np.linspace(-lay.MOUTH_INNER_W + 0.3, lay.MOUTH_INNER_W - 0.3, 30)
    _, iu_i, il_i, _ = lay.lip_lines(xi)
    rows = [np.stack([xi, iu_i + t * (il_i - iu_i)], 1) for t in (-0.3, 0.12, 0.26, 0.3, 0.5, 0.7, 0.86, 0.9, 1.3)]
    groups.append(("mouth rows", np.concatenate(rows), 0.02))
    groups.append(("lips", hex_grid((-26, -56), (26, -31), 2.2), 1.3))
    groups.append(("nose", hex_grid((-19, -23), (19, 32), 2.5), 1.5))
    groups.append(("eyes", _mirror(hex_grid((12, 16), (54, 40), 2.8)), 1.7))
    groups.append(("brows", _mirror(hex_grid((14, 38), (59, 54), 3.3)), 2.0))
    return groups


def _thin(points: np.ndarray, kept: np.ndarray | None, min_dist: float) -> np.ndarray:
    """Drop points closer than min_dist to kept points or (later ones) to each other."""
    if len(points) == 0 or min_dist <= 0:
        return points
    if kept is not None and len(kept):
        far = cKDTree(kept).query(points, distance_upper_bound=min_dist)[0] > min_dist
        points = points[far]
    drop = set()
    for i, j in sorted(cKDTree(points).query_pairs(min_dist)):
        if i not in drop:
            drop.add(j)
    return np.delete(points, sorted(drop), axis=0)


def head_points(spacings=(4.4, 7.0, 9.0, 12.0)):
    """Surface points of the head: designed face points, then multi-resolution skull points.

    Returns points (N, 3) on the smooth head; the first 68 are the landmarks in iBUG order.
    """
    targets = lay.landmark_targets()
    targets[:17] = jaw_landmarks()
    kept = front_hits(targets)
    for _, xy, min_dist in face_point_groups()[1:]:
        kept = np.concatenate([kept, _thin(front_hits(xy), kept, min_dist)])
    for level, spacing in enumerate(spacings):  # directions spaced for ~spacing mm at ~110 mm
        n = int(4 * np.pi * 110.0 ** 2 / (0.866 * spacing ** 2))
        pts = ray_hits(fibonacci_directions(n))
        x, y, z = pts.T
        face = (np.abs(x) < 60) & (y > -100) & (y < 100) & (z > 30)
        sides = (y > -110) & (y < 80) & (z > -25) & ~face
        band = (y < 95) & (z > -55) & ~sides & ~face
        zone = (face, sides, band, ~(face | sides | band))[level]
        kept = np.concatenate([kept, _thin(pts[zone], kept, 0.62 * spacing)])
    return kept


def triangulate_star(points: np.ndarray) -> np.ndarray:
    """Triangles of a star-shaped surface: the convex hull of the unit directions, outward-wound."""
    dirs = points / np.linalg.norm(points, axis=1, keepdims=True)
    tris = ConvexHull(dirs).simplices.astype(np.int64)
    a, b, c = (dirs[tris[:, k]] for k in range(3))
    flip = np.einsum("ij,ij->i", np.cross(b - a, c - a), a + b + c) < 0
    tris[flip] = tris[flip][:, ::-1]
    return tris


def _polar_cap(n_rings: int, n_angles: int):
    """Triangles of a polar grid: vertex 0 is the centre, then rings of n_angles, outermost last."""
    tris = [[0, 1 + (k + 1) % n_angles, 1 + k] for k in range(n_angles)]
    for r in range(n_rings - 1):
        a, b = 1 + r * n_angles, 1 + (r + 1) * n_angles
        for k in range(n_angles):
            k1 = (k + 1) % n_angles
            tris += [[a + k, a + k1, b + k], [a + k1, b + k1, b + k]]
    return np.array(tris, dtype=np.int64)


def surface_x(y: float, z: float) -> float:
    lo, hi = 0.0, 150.0
    for _ in range(30):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if head_sdf(np.array([mid, y, z])) < 0 else (lo, mid)
    return lo


def ear_mesh(side: int, n_angles: int = 22):
    """A closed, lens-shaped ear on the side of the head (side = +1 left, -1 right).

    Returns vertices (N, 3), triangles and a per-vertex 'bowl' depth (the concha, for shading).
    """
    tilt, flare = np.radians(15.0), np.radians(28.0)
    up = np.array([0.0, np.cos(tilt), -np.sin(tilt)])
    fwd0, out0 = np.array([0.0, np.sin(tilt), np.cos(tilt)]), np.array([side * 1.0, 0, 0])
    fwd = fwd0 * np.cos(flare) - out0 * np.sin(flare)  # the back edge stands off the head
    out = out0 * np.cos(flare) + fwd0 * np.sin(flare)  # the ear faces out and a little forward
    anchor = np.array([side * surface_x(12.0, -2.0), 12.0, -2.0])
    half_up, half_fwd = 31.0, 16.5
    centre = anchor - (half_fwd - 2.5) * fwd + 1.0 * out
    rings = np.array([0.3, 0.55, 0.75, 0.88, 1.0])
    ang = np.linspace(0, 2 * np.pi, n_angles, endpoint=False)
    r, t = np.meshgrid(rings, ang, indexing="ij")
    a = half_up * r * np.sin(t)  # along up
    b = half_fwd * r * np.cos(t) * (1 + 0.12 * np.sin(t))  # wider at the top (helix), narrower lobe
    a, b, r = (np.concatenate([[0.0], v.ravel()]) for v in (a, b, r))
    rim = 2.2 * np.exp(-(((1 - r) / 0.14) ** 2))
    bowl = 4.5 * np.exp(-(((a + 4.0) / 10.0) ** 2) - ((b - 3.5) / 6.5) ** 2)
    h_out = 3.0 + rim - bowl
    h_back = -3.0 * np.sqrt(np.clip(1 - r ** 2, 0, 1))
    h_out[r >= 1] = h_back[r >= 1] = 0.0
    n_ring = n_angles
    outer = centre + a[:, None] * up + b[:, None] * fwd + h_out[:, None] * out
    back = centre + a[:, None] * up + b[:, None] * fwd + h_back[:, None] * out
    cap = _polar_cap(len(rings), n_ring)
    rim_start = 1 + (len(rings) - 1) * n_ring
    # back vertices reuse the outer rim; map back-cap indices onto [outer..., back interior...]
    n_outer = len(outer)
    back_index = np.arange(n_outer)
    back_index[:rim_start] = n_outer + np.arange(rim_start)
    back_index[rim_start:] = np.arange(rim_start, n_outer)
    verts = np.concatenate([outer, back[:rim_start]])
    tris = np.concatenate([cap, back_index[cap][:, ::-1]])
    # wind the outer cap to face 'out' (checked on the flat ellipse, independent of the relief)
    flat = centre + a[:, None] * up + b[:, None] * fwd
    n0 = np.cross(flat[cap[0, 1]] - flat[cap[0, 0]], flat[cap[0, 2]] - flat[cap[0, 0]])
    if n0 @ out < 0:
        tris = tris[:, ::-1]
    bowl_all = np.concatenate([bowl, np.zeros(rim_start)])
    return verts, tris, bowl_all


def neck_mesh(n_angles: int = 24, n_rings: int = 10):
    """An elliptic neck from inside the head down out of any crop, leaning back as it goes down."""
    ys = -45.0 - 205.0 * np.linspace(0, 1, n_rings) ** 1.4
    ang = np.linspace(0, 2 * np.pi, n_angles, endpoint=False)
    y, t = np.meshgrid(ys, ang, indexing="ij")
    zc = -12.0 + 0.15 * (y + 45.0)
    verts = np.stack([54.0 * np.sin(t), y, zc + 57.0 * np.cos(t)], -1).reshape(-1, 3)
    tris = []
    for r in range(n_rings - 1):
        for k in range(n_angles):
            k1 = (k + 1) % n_angles
            a, b, c, d = r * n_angles + k, r * n_angles + k1, (r + 1) * n_angles + k, (r + 1) * n_angles + k1
            tris += [[a, c, b], [b, c, d]]
    tris = np.array(tris, dtype=np.int64)
    v0, v1, v2 = (verts[tris[:, k]] for k in range(3))
    radial = (v0 + v1 + v2) / 3 - np.array([0, 0, -12.0])
    radial[:, 1] = 0
    if np.einsum("ij,ij->i", np.cross(v1 - v0, v2 - v0), radial).mean() < 0:
        tris = tris[:, ::-1]
    return verts, tris
