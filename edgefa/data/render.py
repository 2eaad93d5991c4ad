"""A numpy/OpenCV renderer for face-model meshes: no GL, deterministic for a given rng.

The posed dense mesh is projected with the math of ``geometry.landmarks(..., dense=True)``,
back faces are culled and the rest drawn far-to-near (painter's algorithm) into a triangle-id
buffer with ``cv2.fillConvexPoly``, the only per-triangle Python loop. Everything else is per
pixel and vectorised: barycentric interpolation of vertex normals and albedo, Lambert + ambient
+ Blinn-Phong shading from a random light. The face is composited over random clutter
(``render_scene``), occluders are drawn on top, then the image is downsampled (antialiasing)
and mildly degraded (blur, noise, JPEG).
"""
from __future__ import annotations

import functools

import cv2
import numpy as np
import scipy.sparse as sp

from edgefa.data import render_scene as scene
from edgefa.facemodel.base import DenseMesh, FaceModel

SUPERSAMPLE = 2
SUBPIXEL_BITS = 2  # fillConvexPoly fixed-point vertices: 1/4 px


@functools.lru_cache(maxsize=4)
def _mesh_tables(dense: DenseMesh) -> dict:
    """Per-mesh constants: vertex-face incidence (for normals), region arrays, part masks."""
    tris = dense.triangles.astype(np.int64)
    n, t = len(dense.mean), len(tris)
    incidence = sp.csr_matrix((np.ones(3 * t), (tris.T.ravel(), np.tile(np.arange(t), 3))), shape=(n, t))
    ex = dense.extras
    part = np.asarray(ex.get("part", np.zeros(n)), dtype=np.int64)
    return {
        "tris": tris,
        "basis": np.concatenate([dense.shape_basis, dense.expr_basis], 1).astype(np.float32),
        "mean": dense.mean.reshape(-1).astype(np.float32),
        "incidence": incidence,
        "neck_tri": part[tris[:, 0]] == 2,
        "names": list(ex.get("region_names", ("skin",))),
        "region": np.asarray(ex.get("region", np.zeros(n)), dtype=np.int64),
        "fields": {k: np.asarray(ex[k], dtype=np.float64) for k in
                   ("brow", "nostril", "beard", "hair", "cavity", "front") if k in ex},
        "eye_uv": np.asarray(ex["eye_uv"], dtype=np.float64) if "eye_uv" in ex else None,
        "rest_normals": np.asarray(ex["rest_normals"], dtype=np.float64) if "rest_normals" in ex else None,
        "noise": np.random.default_rng(7).standard_normal((n, 3)),  # fixed skin mottling pattern
    }


def model_vertices(params: np.ndarray, dense: DenseMesh) -> np.ndarray:
    """Model-space vertices (N, 3) for raw params (shape and expression only)."""
    tables = _mesh_tables(dense)
    flat = tables["mean"] + tables["basis"] @ np.asarray(params[12:62], dtype=np.float32)
    return flat.reshape(-1, 3).astype(np.float64)


def pose_vertices(verts: np.ndarray, params: np.ndarray) -> np.ndarray:
    """Model space -> posed space (sR v + t), still y up; see ``geometry.project_to_crop``."""
    pose = params[:12].astype(np.float64).reshape(3, 4)
    return verts @ pose[:, :3].T + pose[:, 3]


def to_crop(posed: np.ndarray, size: int) -> np.ndarray:
    """Posed vertices -> crop pixels (x right, y down), the 3DDFA convention (x -= 1, y = size - y)."""
    return np.stack([posed[:, 0] - 1, size - posed[:, 1], posed[:, 2]], 1)


def _vertex_albedo(tables: dict, look: dict) -> np.ndarray:
    """Per-vertex RGB albedo in [0, 1] for this render's random look."""
    names, region, f = tables["names"], tables["region"], tables["fields"]
    palette = np.array([look["colours"].get(name, look["colours"]["skin"]) for name in names])
    albedo = palette[region]
    albedo = albedo * (1 + look["mottle"] * tables["noise"])
    if tables["eye_uv"] is not None:
        albedo = scene.paint_eyes(albedo, region == names.index("sclera"), tables["eye_uv"], look)
    if "brow" in f:
        albedo = _mix(albedo, look["brow"], np.clip(f["brow"] * look["brow_strength"], 0, 1))
    if "nostril" in f:
        albedo = _mix(albedo, look["colours"]["mouth"], f["nostril"] * 0.85)
    if "beard" in f and look["beard"] > 0:  # stubble to a full beard, patchy
        patchy = np.clip(0.75 + 0.3 * tables["noise"][:, 1], 0, 1)
        albedo = _mix(albedo, look["hair"], np.clip(f["beard"] * look["beard"] * patchy, 0, 0.9))
    if "hair" in f:
        hair = np.clip((f["hair"] - look["hairline"]) / 5.0, 0, 1) * look["has_hair"]
        albedo = _mix(albedo, look["hair"] * (1 + 0.25 * tables["noise"][:, :1]), hair)
    if "cavity" in f:
        albedo = albedo * np.exp(-look["cavity_gain"] * np.clip(f["cavity"], 0, 6))[:, None]
    return np.clip(albedo, 0, 1)


def _mix(a, colour, weight):
    weight = np.asarray(weight, dtype=np.float64)[:, None]
    return a * (1 - weight) + np.asarray(colour) * weight


def _hair_volume(verts: np.ndarray, tables: dict, look: dict) -> np.ndarray:
    """Push hair-covered vertices out along their rest normals, so hair changes the silhouette."""
    f, normals = tables["fields"], tables["rest_normals"]
    if "hair" not in f or normals is None or look["has_hair"] == 0:
        return verts
    depth = np.clip((f["hair"] - look["hairline"]) / 12.0, 0, 1) * look["hair_volume"]
    return verts + normals * depth[:, None]


def rasterize(crop_xyz: np.ndarray, tables: dict, size: int, ss: int):
    """Triangle-id buffer (ss*size)^2 by painter's algorithm; -1 where no triangle is drawn."""
    tris = tables["tris"]
    xy = crop_xyz[:, :2] * ss + (ss - 1) / 2  # pixel centres of the big image
    v0, v1, v2 = (crop_xyz[tris[:, k]] for k in range(3))
    # visible iff the posed normal points at the camera (+z); y is flipped in crop pixels
    cross_z = (v1[:, 0] - v0[:, 0]) * (v2[:, 1] - v0[:, 1]) - (v1[:, 1] - v0[:, 1]) * (v2[:, 0] - v0[:, 0])
    big = size * ss
    visible = cross_z < 0
    lo, hi = np.minimum(np.minimum(v0, v1), v2), np.maximum(np.maximum(v0, v1), v2)
    visible &= (hi[:, 0] * ss > -1) & (lo[:, 0] * ss < big) & (hi[:, 1] * ss > -1) & (lo[:, 1] * ss < big)
    depth = (v0[:, 2] + v1[:, 2] + v2[:, 2]) / 3
    depth = np.where(tables["neck_tri"], depth - 1e6, depth)  # the neck never covers the head
    order = np.flatnonzero(visible)
    order = order[np.argsort(depth[order], kind="stable")]
    fixed = np.round(xy[tris[order]] * (1 << SUBPIXEL_BITS)).astype(np.int32)
    ids = np.full((big, big), -1, dtype=np.int32)
    fill = cv2.fillConvexPoly
    for tri, pts in zip(order.tolist(), fixed):
        fill(ids, pts, tri, cv2.LINE_8, SUBPIXEL_BITS)
    return ids, xy


def _barycentric(ids_flat, px, py, xy, tris):
    a, b, c = xy[tris[ids_flat, 0]], xy[tris[ids_flat, 1]], xy[tris[ids_flat, 2]]
    e1, e2 = b - a, c - a
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    det = np.where(np.abs(det) < 1e-9, 1e-9, det)
    dx, dy = px - a[:, 0], py - a[:, 1]
    w1 = (dx * e2[:, 1] - dy * e2[:, 0]) / det
    w2 = (e1[:, 0] * dy - e1[:, 1] * dx) / det
    w = np.clip(np.stack([1 - w1 - w2, w1, w2], 1), 0, 1)
    return w / np.maximum(w.sum(1, keepdims=True), 1e-9)


def shade(normals, albedo, spec, look):
    """Lambert + ambient + Blinn-Phong (orthographic camera looking down -z)."""
    light, half = look["light_dir"], look["half_dir"]
    lambert = np.clip(normals @ light, 0, None)
    fill = np.clip(normals @ look["fill_dir"], 0, None) * look["fill"]
    colour = albedo * (look["ambient"] + look["diffuse"] * lambert + fill)[:, None] * look["light_rgb"]
    highlight = np.clip(normals @ half, 0, 1) ** spec[:, 1] * spec[:, 0] * (lambert > 0)
    return colour + highlight[:, None] * look["light_rgb"]


def render_face(params: np.ndarray, fm: FaceModel, rng: np.random.Generator, size: int | None = None,
                occlusion: float = 0.3, supersample: int = SUPERSAMPLE) -> np.ndarray:
    """Render raw 62 params of a face model with a dense mesh -> (size, size, 3) uint8 BGR."""
    dense = fm.dense
    if dense is None:
        raise ValueError(f"face model '{fm.name}' has no dense mesh to render")
    size = int(size or fm.size)
    params = np.asarray(params, dtype=np.float64)
    tables = _mesh_tables(dense)
    look = scene.random_look(rng)
    big = size * supersample
    image = scene.background(rng, big)

    verts = _hair_volume(model_vertices(params, dense), tables, look)
    posed = pose_vertices(verts, params)
    crop = to_crop(posed, fm.size)
    if size != fm.size:  # render the same crop at another resolution (pixel centres scale about -0.5)
        crop = np.concatenate([(crop[:, :2] + 0.5) * (size / fm.size) - 0.5, crop[:, 2:]], 1)
    ids, xy = rasterize(crop, tables, size, supersample)
    scene.draw_shoulders(image, rng, crop, tables, supersample, look)

    mask = ids >= 0
    py, px = np.nonzero(mask)
    tri_ids = ids[py, px]
    tris = tables["tris"]
    bary = _barycentric(tri_ids, px.astype(np.float64), py.astype(np.float64), xy, tris)

    face_n = np.cross(posed[tris[:, 1]] - posed[tris[:, 0]], posed[tris[:, 2]] - posed[tris[:, 0]])
    vert_n = tables["incidence"] @ face_n
    vert_n /= np.maximum(np.linalg.norm(vert_n, axis=1, keepdims=True), 1e-9)
    attributes = np.concatenate([vert_n, _vertex_albedo(tables, look), scene.vertex_specular(tables, look)], 1)
    corners = tris[tri_ids]
    pixel = sum(bary[:, k:k + 1] * attributes[corners[:, k]] for k in range(3))
    normals = pixel[:, :3] / np.maximum(np.linalg.norm(pixel[:, :3], axis=1, keepdims=True), 1e-9)
    rgb = shade(normals, pixel[:, 3:6], pixel[:, 6:8], look)
    image[py, px] = rgb[:, ::-1]  # RGB -> BGR

    scene.draw_occluders(image, rng, xy[dense.landmark_index], occlusion, look)
    return scene.finish(image, rng, size)
