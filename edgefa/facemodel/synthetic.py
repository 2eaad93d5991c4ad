"""A procedural face model: a dense head mesh with 68 landmark vertices and linear bases.

Built from analytic shapes only (``synthetic_mesh``, ``synthetic_layout``, ``synthetic_bases``);
no outside data. Units are millimetres, x right (the subject's left), y up, z toward the camera,
origin inside the head near the ears; so in the pose matrix the scale is ~0.6 px/mm for a
120 px crop. The parameter statistics are those of the synthetic dataset's sampler.
"""
from __future__ import annotations

import functools

import numpy as np
import scipy.sparse as sp

from edgefa.facemodel import synthetic_bases as bases
from edgefa.facemodel import synthetic_layout as lay
from edgefa.facemodel import synthetic_mesh as mesh
from edgefa.facemodel.base import N_PARAMS, DenseMesh, FaceModel
from edgefa.facemodel.synthetic_params import sample_params_batch

PARAM_STATS_SAMPLES, PARAM_STATS_SEED = 20_000, 20240521
PART_HEAD, PART_EAR, PART_NECK = 0, 1, 2


def _vertex_normals(verts: np.ndarray, tris: np.ndarray) -> np.ndarray:
    face_n = np.cross(verts[tris[:, 1]] - verts[tris[:, 0]], verts[tris[:, 2]] - verts[tris[:, 0]])
    normals = np.zeros_like(verts)
    for k in range(3):
        np.add.at(normals, tris[:, k], face_n)
    return normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-9)


def _cavity(verts: np.ndarray, tris: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """How far each vertex sits below its neighbourhood (mm, smoothed): > 0 in creases and hollows."""
    n = len(verts)
    edges = np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]])
    edges = np.concatenate([edges, edges[:, ::-1]])
    adj = sp.csr_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    adj.data[:] = 1.0
    degree = np.asarray(adj.sum(1)).ravel()
    smooth = sp.diags(1 / np.maximum(degree, 1)) @ adj
    blurred = verts.copy()
    for _ in range(6):
        blurred = smooth @ blurred
    depth = np.einsum("ij,ij->i", blurred - verts, normals)
    for _ in range(2):
        depth = smooth @ depth
    return depth


def _paint_fields(rest: np.ndarray, front: np.ndarray, part: np.ndarray) -> dict:
    """Per-vertex region labels and paint densities for the renderer (from the designed layout)."""
    x, y = rest[:, 0], rest[:, 1]
    on_face = (front > 0.5) & (part == PART_HEAD)
    u, _, in_eye = lay.eye_coords(x, y)
    upper, _ = lay.eye_lids(u)
    upper_lip, lower_lip, opening, t = lay.mouth_coords(x, y)
    region = np.full(len(rest), lay.REGION["skin"], dtype=np.int8)
    lash = (u > -0.02) & (u < 1.02) & (y >= upper - 0.05) & (y < upper + 1.0)
    region[on_face & lash] = lay.REGION["lid"]
    region[on_face & in_eye] = lay.REGION["sclera"]
    region[on_face & (upper_lip | lower_lip)] = lay.REGION["lips"]
    region[on_face & opening] = lay.REGION["mouth"]
    region[on_face & opening & ((t < 0.28) | (t > 0.88))] = lay.REGION["teeth"]
    region[part == PART_EAR] = lay.REGION["ear"]
    region[part == PART_NECK] = lay.REGION["neck"]
    eye_uv = np.full((len(rest), 2), 99.0, dtype=np.float32)
    near_eye = on_face & (u > -0.1) & (u < 1.1) & (np.abs(y - lay.EYE_CENTRE[1]) < 9)
    eye_uv[near_eye, 0] = x[near_eye] - np.sign(x[near_eye]) * lay.EYE_CENTRE[0]
    eye_uv[near_eye, 1] = y[near_eye] - lay.EYE_CENTRE[1]
    weight = np.where(part == PART_HEAD, front, 0.0)
    hair = np.where(part == PART_EAR, -100.0, lay.hair_level(rest))
    return {
        "region": region,
        "region_names": lay.REGIONS,
        "brow": (lay.brow_density(x, y) * weight).astype(np.float32),
        "nostril": (lay.nostril_density(x, y) * weight).astype(np.float32),
        "beard": (lay.beard_density(x, y) * weight).astype(np.float32),
        "hair": hair.astype(np.float32),
        "eye_uv": eye_uv,
    }


def _build_dense(seed: int) -> DenseMesh:
    head = mesh.head_points()
    base_normals = mesh.sdf_normals(head)
    front = lay.smoothstep(0.15, 0.5, base_normals[:, 2]) * (head[:, 2] > 0)
    # triangulate with the mouth held open: the rows across the closed opening are a fraction of
    # a millimetre apart at rest and would otherwise be joined across each other
    opened = head.copy()
    opened[:, 1] -= 6.0 * front * lay.jaw_weight(head[:, 0], head[:, 1]) * lay.smoothstep(-100.0, -60.0, head[:, 1])
    head_tris = mesh.triangulate_star(opened)
    rest = head.copy()
    rest[:, 2] += lay.relief(head[:, 0], head[:, 1]) * front
    parts, tris, fronts = [rest], [head_tris], [front]
    part = [np.full(len(rest), PART_HEAD)]
    bowl = [np.zeros(len(rest))]
    offset = len(rest)
    for side in (-1, 1):
        v, t, b = mesh.ear_mesh(side)
        parts.append(v), tris.append(t + offset), fronts.append(np.zeros(len(v)))
        part.append(np.full(len(v), PART_EAR)), bowl.append(b)
        offset += len(v)
    v, t = mesh.neck_mesh()
    parts.append(v), tris.append(t + offset), fronts.append(np.zeros(len(v)))
    part.append(np.full(len(v), PART_NECK)), bowl.append(np.zeros(len(v)))
    verts, tris = np.concatenate(parts), np.concatenate(tris).astype(np.int32)
    front, part = np.concatenate(fronts), np.concatenate(part)
    normals = _vertex_normals(verts, tris)
    extras = _paint_fields(verts, front, part)
    cavity = _cavity(verts, tris, normals) + 0.3 * np.concatenate(bowl)
    cavity += np.where(part == PART_NECK, 3.0 * lay.smoothstep(-150.0, -85.0, verts[:, 1]), 0.0)  # chin shadow
    extras.update(part=part.astype(np.int8), front=front.astype(np.float32),
                  cavity=cavity.astype(np.float32), rest_normals=normals.astype(np.float32))
    shape_basis, expr_basis = bases.build_bases(verts, front, part, extras, seed)
    return DenseMesh(mean=verts.astype(np.float32), shape_basis=shape_basis, expr_basis=expr_basis,
                     triangles=tris, landmark_index=np.arange(68), extras=extras)


def _rows(basis: np.ndarray, index: np.ndarray) -> np.ndarray:
    """The rows of an interleaved (3N, K) basis that belong to the given vertices."""
    return basis.reshape(-1, 3, basis.shape[1])[index].reshape(-1, basis.shape[1])


@functools.lru_cache(maxsize=4)
def synthetic_face_model(seed: int = 0) -> FaceModel:
    """The procedural face model (deterministic for a seed; cached, so treat it as read-only)."""
    dense = _build_dense(seed)
    idx = dense.landmark_index
    sparse = {"mean": dense.mean[idx].copy(), "shape_basis": _rows(dense.shape_basis, idx),
              "expr_basis": _rows(dense.expr_basis, idx)}
    provisional = FaceModel(f"synthetic-{seed}", **sparse, param_mean=np.zeros(N_PARAMS, np.float32),
                            param_std=np.ones(N_PARAMS, np.float32), size=120, dense=dense)
    draws = sample_params_batch(np.random.default_rng(PARAM_STATS_SEED), provisional, PARAM_STATS_SAMPLES)
    mean, std = draws.mean(0).astype(np.float32), draws.std(0).astype(np.float32)
    return FaceModel(f"synthetic-{seed}", **sparse, param_mean=mean, param_std=std, size=120, dense=dense)
