"""Contour-aware 3D-to-2D jaw landmarks (shared/papers/rdr-3d-2d-dual-learning.md, Sec. 1): each of the
17 jaw landmarks moves along its "parallel line" of vertices to where the posed mesh's visible
silhouette crosses it, as a 2D annotator marks the outline. Used by ``synthetic:...,contour=true``;
the default labels keep the fixed vertices (the AFLW2000-3D convention). Details: docs/papers.md#contour.
"""
from __future__ import annotations

import functools

import numpy as np

from edgefa.facemodel.base import DenseMesh, FaceModel

N_JAW = 17


@functools.lru_cache(maxsize=4)
def parallel_lines(dense: DenseMesh, inward_mm: float = 80.0, outward_mm: float = 6.0, min_z: float = 5.0) -> tuple[tuple, np.ndarray]:
    """Per jaw landmark, the vertex indices of its parallel line, and the outline's outward normals (17, 2).

    Lines are built on the mean shape: vertices whose frontal (x, y) lies within half a landmark
    spacing of the line through the landmark along the outward normal, up to ``inward_mm`` inside
    the outline, and in front of ``min_z`` (the ears; a face-only mesh such as BFM ends there too).
    """
    verts = dense.mean.astype(np.float64)
    jaw = verts[dense.landmark_index[:N_JAW]]
    tangent = np.gradient(jaw[:, :2], axis=0)
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
    normal = np.stack([tangent[:, 1], -tangent[:, 0]], 1)
    centre = verts[dense.landmark_index].mean(0)[:2]
    normal *= np.sign(((jaw[:, :2] - centre) * normal).sum(1, keepdims=True))  # pointing outward
    spacing = np.linalg.norm(np.diff(jaw[:, :2], axis=0), axis=1)
    half = 0.5 * np.concatenate([[spacing[0]], np.minimum(spacing[1:], spacing[:-1]), [spacing[-1]]])
    part = dense.extras.get("part")
    allowed = (verts[:, 2] > min_z) & (np.asarray(part) == 0 if part is not None else True)
    lines = []
    for k in range(N_JAW):
        rel = verts[:, :2] - jaw[k, :2]
        across = np.abs(rel @ tangent[k])
        along = rel @ normal[k]
        on_line = allowed & (across <= half[k]) & (along <= outward_mm) & (along >= -inward_mm)
        idx = np.flatnonzero(on_line)
        lines.append(tuple(np.union1d(idx, [dense.landmark_index[k]]).tolist()))
    return tuple(lines), normal


def _mesh_vertices(params: np.ndarray, dense: DenseMesh) -> np.ndarray:
    coeff = np.asarray(params[12:62], dtype=np.float64)
    basis = np.concatenate([dense.shape_basis, dense.expr_basis], 1).astype(np.float64)
    return (dense.mean.astype(np.float64).reshape(-1) + basis @ coeff).reshape(-1, 3)


def _covered(points: np.ndarray, tri_xyz: np.ndarray, skip: np.ndarray, eps: float) -> np.ndarray:
    """For each point (P, 3), whether a triangle (T, 3, 3) contains its (x, y) with depth > z + eps
    (closer to the camera); ``skip`` (P, T) masks each point's own triangles."""
    a, b, c = tri_xyz[:, 0], tri_xyz[:, 1], tri_xyz[:, 2]
    v0, v1 = b[:, :2] - a[:, :2], c[:, :2] - a[:, :2]
    det = v0[:, 0] * v1[:, 1] - v0[:, 1] * v1[:, 0]
    det = np.where(np.abs(det) < 1e-12, np.nan, det)
    rel = points[:, None, :2] - a[None, :, :2]  # (P, T, 2)
    u = (rel[..., 0] * v1[:, 1] - rel[..., 1] * v1[:, 0]) / det
    v = (v0[:, 0] * rel[..., 1] - v0[:, 1] * rel[..., 0]) / det
    inside = (u >= 0) & (v >= 0) & (u + v <= 1)
    depth = a[:, 2] + u * (b[:, 2] - a[:, 2]) + v * (c[:, 2] - a[:, 2])
    return (inside & ~skip & (depth > points[:, None, 2] + eps)).any(1)


def contour_vertex_index(params: np.ndarray, dense: DenseMesh, use_contour_line: bool = True) -> np.ndarray:
    """(17,) mesh vertices that are the jaw landmarks of the face posed by raw ``params`` (62,).

    Each landmark takes the vertex where its parallel line meets the visible contour: walking the
    line from its outermost vertex inward (outward = the frontal outline's normal, posed), the first
    vertex of a front-facing triangle that no closer triangle hides. ``use_contour_line=False``
    gives [15]'s rule alone: the line's extreme vertex, visible or not."""
    lines, normals = parallel_lines(dense)
    pose = np.asarray(params[:12], dtype=np.float64).reshape(3, 4)
    posed = _mesh_vertices(params, dense) @ pose[:, :3].T  # translation changes nothing here
    out_dirs = np.concatenate([normals, np.zeros((N_JAW, 1))], 1) @ pose[:, :3].T
    out_dirs = out_dirs[:, :2] / np.linalg.norm(out_dirs[:, :2], axis=1, keepdims=True)
    tris = dense.triangles
    tri = posed[tris]
    front = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])[:, 2] > 0
    front_tris = tris[front]
    touches_front = np.zeros(len(posed), bool)
    touches_front[front_tris.ravel()] = True
    chosen = np.empty(N_JAW, dtype=np.int64)
    for k, line in enumerate(lines):
        line = np.asarray(line)
        order = line[np.argsort(-(posed[line, :2] @ out_dirs[k]), kind="stable")]
        chosen[k] = order[0]  # [15]: the extreme, and the fallback when no line vertex is visible
        if not use_contour_line:
            continue
        order = order[touches_front[order]]
        for start in range(0, len(order), 8):  # most lines stop at the first few candidates
            chunk = order[start:start + 8]
            skip = (front_tris[None] == chunk[:, None, None]).any(2)
            visible = ~_covered(posed[chunk], posed[front_tris], skip, eps=0.5)
            if visible.any():
                chosen[k] = chunk[np.argmax(visible)]
                break
    return chosen


def contour_landmarks(params: np.ndarray, fm: FaceModel, use_contour_line: bool = True) -> np.ndarray:
    """Raw params (62,) -> 68 landmarks (68, 3) in crop pixels with contour-aware jaw points 0-16."""
    from edgefa.facemodel.geometry import landmarks

    if fm.dense is None:
        raise ValueError(f"face model '{fm.name}' has no dense mesh: contour landmarks need one")
    pts = np.array(landmarks(np.asarray(params, dtype=np.float32), fm), dtype=np.float32)
    jaw = contour_vertex_index(params, fm.dense, use_contour_line)
    dense_pts = landmarks(np.asarray(params, dtype=np.float32), fm, dense=True)
    pts[:N_JAW] = dense_pts[jaw]
    return pts
