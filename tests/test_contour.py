"""Contour-aware jaw landmarks (RDR Sec. 1): on the silhouette at large yaw, close to the fixed
vertices when frontal, better than the extreme-coordinate rule when pitch and yaw combine, and
available as synthetic labels. The silhouette here is measured independently of the implementation:
the boundary of the posed mesh rasterised with OpenCV."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from edgefa.data.synthetic import SyntheticFaces, rotation_matrices
from edgefa.facemodel.contour import (
    N_JAW,
    contour_landmarks,
    contour_vertex_index,
    parallel_lines,
)
from edgefa.facemodel.geometry import landmarks
from edgefa.facemodel.synthetic import synthetic_face_model

SUPERSAMPLE = 4


@pytest.fixture(scope="module")
def fm():
    return synthetic_face_model()


def posed_params(yaw: float, pitch: float = 0.0, roll: float = 0.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    params = np.zeros(62, np.float32)
    params[12:52] = rng.standard_normal(40) * 0.5
    pose = np.concatenate([0.45 * rotation_matrices(yaw, pitch, roll)[0], [[61.0], [60.0], [0.0]]], 1)
    params[:12] = pose.reshape(12)
    return params


def silhouette_distance(params: np.ndarray, fm, points: np.ndarray) -> np.ndarray:
    """Distance (crop px) of each point to the outer boundary of the rasterised posed mesh."""
    verts = landmarks(params, fm, dense=True)
    size = 120 * SUPERSAMPLE
    mask = np.zeros((size, size), np.uint8)
    for tri in fm.dense.triangles:
        cv2.fillConvexPoly(mask, np.round(verts[tri, :2] * SUPERSAMPLE).astype(np.int32), 255)
    boundary = (mask > 0) & (cv2.erode(mask, np.ones((3, 3), np.uint8)) == 0)
    dist = cv2.distanceTransform((~boundary).astype(np.uint8), cv2.DIST_L2, 5) / SUPERSAMPLE
    ij = np.clip(np.round(points[:, :2] * SUPERSAMPLE).astype(int), 0, size - 1)
    return dist[ij[:, 1], ij[:, 0]]


def far_side(params: np.ndarray, fm) -> np.ndarray:
    """The 8 jaw landmarks (chin excluded) on the side turned away from the camera."""
    z = landmarks(params, fm)[:N_JAW, 2]
    return np.arange(0, 8) if z[:8].mean() < z[9:].mean() else np.arange(9, 17)


@pytest.mark.parametrize("yaw, pitch", [(60, 0), (75, 10), (89, 0), (-70, -10), (-85, 5)])
def test_contour_landmarks_lie_on_the_silhouette_at_large_yaw(fm, yaw, pitch):
    params = posed_params(yaw, pitch, seed=abs(yaw))
    side = far_side(params, fm)
    contour = contour_landmarks(params, fm)[:N_JAW][side]
    fixed = landmarks(params, fm)[:N_JAW][side]
    on_contour = silhouette_distance(params, fm, contour)
    on_fixed = silhouette_distance(params, fm, fixed)
    assert np.all(on_contour <= 1.0), on_contour  # within a crop pixel of the outline
    assert np.median(on_fixed) > 5.0, on_fixed  # the fixed vertices have slid round behind the cheek
    assert np.linalg.norm(contour[:, :2] - fixed[:, :2], axis=1).mean() > 5.0


def test_frontal_faces_agree_with_the_fixed_vertices(fm):
    frontal, large = [], []
    for seed in range(3):
        params = posed_params(65.0 * (-1) ** seed, seed=seed)
        large.append(np.linalg.norm(contour_landmarks(params, fm)[:N_JAW, :2] - landmarks(params, fm)[:N_JAW, :2],
                                    axis=1).mean())
        params = posed_params(0.0, seed=seed)
        shift = np.linalg.norm(contour_landmarks(params, fm)[:, :2] - landmarks(params, fm)[:, :2], axis=1)
        # frontal: the outline is the fixed vertices' own (they sit 2 mm inside it, ~1 px); the
        # remaining ~2 px are where the discrete silhouette crosses each parallel line
        assert shift[:N_JAW].mean() < 3.0 and shift[:N_JAW].max() < 5.0, shift
        assert np.all(shift[N_JAW:] == 0)  # interior landmarks keep their fixed vertices
        frontal.append(shift[:N_JAW].mean())
    assert min(large) > 3 * max(frontal), (large, frontal)  # the large-yaw change is of another size


def test_contour_line_beats_the_extreme_rule_when_pitch_and_yaw_combine(fm):
    """RDR Fig. 1: with large pitch and yaw the line's extreme vertex can be hidden by the lower face."""
    params = posed_params(75, 30)
    side = far_side(params, fm)
    with_line = silhouette_distance(params, fm, contour_landmarks(params, fm)[:N_JAW][side])
    extreme = silhouette_distance(params, fm, contour_landmarks(params, fm, use_contour_line=False)[:N_JAW][side])
    assert np.all(with_line <= 1.0) and extreme.max() > 3.0
    assert with_line.mean() < extreme.mean()


def test_parallel_lines_and_determinism(fm):
    lines, normals = parallel_lines(fm.dense)
    assert len(lines) == N_JAW and normals.shape == (N_JAW, 2)
    for k, line in enumerate(lines):
        assert fm.dense.landmark_index[k] in line and len(line) > 20
    assert normals[0, 0] < 0 < normals[16, 0] and normals[8, 1] < 0  # left, right, chin point outward
    params = posed_params(70, 5)
    np.testing.assert_array_equal(contour_vertex_index(params, fm.dense), contour_vertex_index(params, fm.dense))


def test_synthetic_labels_opt_in(fm):
    plain, contour = SyntheticFaces(n=3, seed=4), SyntheticFaces(n=3, seed=4, contour=True)
    from edgefa.data.registry import create_dataset

    assert create_dataset("synthetic:seed=4,n=3,contour=true").contour is True
    for i in range(3):
        a, b = plain[i], contour[i]
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["params"], b["params"])
        np.testing.assert_allclose(b["pts68"], contour_landmarks(b["params"], fm), atol=1e-4)
        np.testing.assert_array_equal(a["pts68"][N_JAW:], b["pts68"][N_JAW:])
