"""Delaunay-centroid sampling of dense landmark vertices (shared/papers/dense-520-landmarks-mobilenetv2.md,
Sec. 3.1, Figure 1): start from the jaw landmarks and the nose tip, Delaunay-triangulate the selected
points, add the vertex nearest each triangle's centroid, and repeat (3 iterations in the paper).

The paper works in the UV plane of the BFM face; a star-shaped or face-only mesh seen from the front is
such a plane too, so here points are triangulated in the frontal (x, y) plane of the mean shape, over
the vertices that face the camera (vertex normal z > ``min_normal_z``; on the synthetic mesh also only
the head part, not ears or neck). The paper then adds and moves points by hand in Blender to reach 520;
here that step is replaced by a reproducible one: the 68 landmark vertices are added (so the model's
68-point subset is exact), then farthest-point sampling over the same front vertices fills up to ``k``.
"""
from __future__ import annotations

import numpy as np
from scipy.spatial import Delaunay, cKDTree

from edgefa.facemodel.base import DenseMesh

JAW = tuple(range(17))
NOSE_TIP = 30  # iBUG 68 index


def _vertex_normals_z(verts: np.ndarray, tris: np.ndarray) -> np.ndarray:
    face_n = np.cross(verts[tris[:, 1]] - verts[tris[:, 0]], verts[tris[:, 2]] - verts[tris[:, 0]])
    normals = np.zeros_like(verts)
    for k in range(3):
        np.add.at(normals, tris[:, k], face_n)
    return normals[:, 2] / np.maximum(np.linalg.norm(normals, axis=1), 1e-12)


def front_vertices(dense: DenseMesh, min_normal_z: float = 0.2) -> np.ndarray:
    """Indices of the vertices the sampler may pick: facing the camera, on the head part if labelled."""
    verts = dense.mean.astype(np.float64)
    ok = _vertex_normals_z(verts, dense.triangles.astype(np.int64)) > min_normal_z
    part = dense.extras.get("part")
    if part is not None:
        ok &= np.asarray(part) == 0
    ok[dense.landmark_index] = True
    return np.flatnonzero(ok)


def delaunay_centroid_vertices(dense: DenseMesh, iterations: int = 3, min_normal_z: float = 0.2) -> list[int]:
    """The paper's steps 1-3: seeds (jaw + nose tip) then ``iterations`` rounds of centroid vertices,
    in the order they were added (no duplicates)."""
    verts = dense.mean.astype(np.float64)
    pool = front_vertices(dense, min_normal_z)
    tree = cKDTree(verts[pool, :2])
    chosen = [int(dense.landmark_index[i]) for i in (*JAW, NOSE_TIP)]
    seen = set(chosen)
    for _ in range(iterations):
        xy = verts[chosen, :2]
        tri = Delaunay(xy).simplices
        centroids = xy[tri].mean(axis=1)
        _, nearest = tree.query(centroids)
        for v in pool[nearest]:
            if int(v) not in seen:
                seen.add(int(v))
                chosen.append(int(v))
    return chosen


def sample_dense_vertices(dense: DenseMesh, k: int = 520, iterations: int = 3,
                          min_normal_z: float = 0.2) -> np.ndarray:
    """``k`` distinct vertex indices: Delaunay-centroid points, then the 68 landmarks, then farthest-point
    fill. Deterministic: no randomness anywhere. If the Delaunay points and the landmarks alone exceed
    ``k``, the landmarks are kept and the last centroid points dropped."""
    landmarks = [int(i) for i in dense.landmark_index]
    if k < len(landmarks):
        raise ValueError(f"sample_dense_vertices: k={k} is fewer than the {len(landmarks)} landmarks it must include")
    centroid_pts = [v for v in delaunay_centroid_vertices(dense, iterations, min_normal_z) if v not in set(landmarks)]
    chosen = centroid_pts[:k - len(landmarks)] + landmarks
    pool = front_vertices(dense, min_normal_z)
    if len(pool) < k:
        raise ValueError(f"sample_dense_vertices: the mesh has {len(pool)} front vertices, fewer than k={k}")
    xyz = dense.mean.astype(np.float64)
    dist = np.min(np.linalg.norm(xyz[pool, None] - xyz[None, chosen], axis=2), axis=1)
    while len(chosen) < k:  # farthest-point sampling: spread the rest evenly over the face
        pick = int(np.argmax(dist))
        chosen.append(int(pool[pick]))
        dist = np.minimum(dist, np.linalg.norm(xyz[pool] - xyz[pool[pick]], axis=1))
    return np.asarray(chosen, dtype=np.int64)
