"""The procedural face model, its bases, the sampler and the renderer (a few renders, fast)."""
import time

import numpy as np
import pytest

from edgefa.data import render
from edgefa.data.synthetic import (
    SyntheticFaces,
    rotation_matrices,
    sample_params,
    sample_params_batch,
)
from edgefa.facemodel import geometry as g
from edgefa.facemodel.synthetic import synthetic_face_model
from edgefa.facemodel.synthetic_bases import EXPRESSIONS
from edgefa.metrics import yaw_bin_index


@pytest.fixture(scope="module")
def fm():
    return synthetic_face_model()


def _frontal(fm, seed=0, expr=None):
    """A sampled face turned to face the camera, neutral unless ``expr`` is given."""
    p = sample_params(np.random.default_rng(seed), fm).astype(np.float64)
    scale = np.linalg.norm(p[:3])
    p[:12] = np.concatenate([scale * np.eye(3), p[[3, 7, 11]][:, None]], 1).reshape(12)
    p[52:] = 0 if expr is None else expr
    pts = g.landmarks(p, fm)
    p[3] += 60 - (pts[:, 0].min() + pts[:, 0].max()) / 2  # recentre the landmark box
    p[7] -= 60 - (pts[:, 1].min() + pts[:, 1].max()) / 2
    return p


def test_dense_mesh_and_landmark_rows_agree(fm):
    d = fm.dense
    n = len(d.mean)
    assert 3000 < n < 8000 and d.triangles.dtype == np.int32 and d.triangles.max() < n
    assert d.shape_basis.shape == (3 * n, 40) and d.expr_basis.shape == (3 * n, 10)
    np.testing.assert_array_equal(fm.mean, d.mean[d.landmark_index])
    rows = (d.landmark_index[:, None] * 3 + np.arange(3)).reshape(-1)
    np.testing.assert_array_equal(fm.shape_basis, d.shape_basis[rows])
    np.testing.assert_array_equal(fm.expr_basis, d.expr_basis[rows])
    for key in ("region", "brow", "hair", "eye_uv", "part"):
        assert len(d.extras[key]) == n, key
    # every landmark vertex is used by the mesh (none lost in the triangulation)
    assert np.isin(d.landmark_index, d.triangles).all()
    # model space: y up, z toward the camera, subject's right (landmark 0) at negative x
    assert fm.mean[0, 0] < 0 < fm.mean[16, 0] and fm.mean[8, 1] < fm.mean[27, 1] < fm.mean[19, 1]
    assert fm.mean[36, 0] < fm.mean[45, 0]  # iBUG order: eye corners subject's right to left
    assert fm.mean[30, 2] == fm.mean[:, 2].max() and fm.mean[8, 1] == fm.mean[:, 1].min()


def test_shape_basis_is_orthogonal_and_param_stats_are_measured(fm):
    gram = fm.dense.shape_basis.astype(np.float64).T @ fm.dense.shape_basis
    norms = np.sqrt(np.diag(gram))
    assert np.abs(gram / np.outer(norms, norms) - np.eye(40)).max() < 1e-4
    assert (fm.param_std > 0).all() and np.isfinite(fm.param_mean).all()
    assert np.allclose(fm.param_std[12:52], 1.0, atol=0.05)  # shape weights ~ N(0, 1)
    # plausible identity variation: 1-sigma faces move landmarks a few mm, not centimetres
    move = np.linalg.norm(fm.shape_basis.reshape(68, 3, 40), axis=1).max()
    assert 1.0 < move < 8.0


def test_face_model_is_deterministic_and_quick():
    start = time.perf_counter()
    again = synthetic_face_model.__wrapped__(0)
    seconds = time.perf_counter() - start
    fm = synthetic_face_model(0)
    np.testing.assert_array_equal(again.dense.mean, fm.dense.mean)
    np.testing.assert_array_equal(again.param_std, fm.param_std)
    assert seconds < 5.0  # ~0.7 s measured on the 2-core dev machine; generous for loaded CI


def test_expressions_do_what_they_say(fm):
    def lm(name, weight):
        e = np.zeros((1, 10))
        e[0, EXPRESSIONS.index(name)] = weight
        return (fm.mean.reshape(-1) + fm.expr_basis @ e[0]).reshape(68, 3)

    rest = fm.mean
    opened = lm("mouth_open", 1.0)
    assert np.linalg.norm(opened[66] - opened[62]) > np.linalg.norm(rest[66] - rest[62]) + 10  # mm
    assert np.linalg.norm(opened[8] - rest[8]) > 10 and np.allclose(opened[17:48], rest[17:48])
    shut = lm("eyes_close", 1.0)
    for upper, lower in ((37, 41), (38, 40), (43, 47), (44, 46)):
        assert abs(shut[upper, 1] - shut[lower, 1]) < 0.3 < abs(rest[upper, 1] - rest[lower, 1])
    wink = lm("wink", 1.0)  # + closes the subject's right eye (x < 0, landmarks 36-41) only
    assert wink[37, 1] < rest[37, 1] - 2 and wink[43, 1] > rest[43, 1] + 2
    smile = lm("smile", 1.0)
    assert smile[48, 1] > rest[48, 1] + 2 and smile[54, 1] > rest[54, 1] + 2
    raised = lm("brow_raise", 1.0)
    assert (raised[17:27, 1] > rest[17:27, 1] + 2).all()


def test_sampler_matches_geometry_and_frames_faces(fm):
    angles = np.random.default_rng(0).uniform(-90, 90, (50, 3))
    np.testing.assert_allclose(rotation_matrices(*angles.T), g.euler_to_rotation(angles), atol=1e-12)
    params = sample_params_batch(np.random.default_rng(1), fm, 400)
    pose = g.euler_angles(params.astype(np.float64))
    assert np.ptp(pose[:, 0]) > 60 and np.abs(pose[:, 0]).min() < 10 and np.abs(pose[:, 0]).max() > 80
    assert (np.bincount(yaw_bin_index(pose[:, 0]), minlength=3) > 80).all()  # every AFLW2000-3D yaw bin
    upright = np.abs(pose[:, 0]) < 80  # pitch/roll are not separable near |yaw| = 90
    assert np.abs(pose[upright, 1:]).max() <= 30.01
    pts = g.landmarks(params, fm)
    box = pts[..., :2].max(1) - pts[..., :2].min(1)
    assert (box.max(1) > 0.6 * 120 - 1e-3).all() and (box.max(1) < 0.75 * 120 + 1e-3).all()
    centre = (pts[..., :2].max(1) + pts[..., :2].min(1)) / 2
    assert np.abs(centre - 60).max() <= 5.0 + 1e-3
    frontal = np.abs(pose[:, 0]) < 30
    assert ((pts[frontal, :, :2] > 0) & (pts[frontal, :, :2] < 120)).all()
    np.testing.assert_array_equal(sample_params(np.random.default_rng(7), fm),
                                  sample_params_batch(np.random.default_rng(7), fm, 1)[0])


def test_samples_are_pure_functions_of_seed_and_index(fm):
    ds = SyntheticFaces(n=5, seed=11, face_model=fm)
    later, first = ds[3], ds[0]
    again = SyntheticFaces(n=5, seed=11, face_model=fm)
    np.testing.assert_array_equal(again[0]["image"], first["image"])
    np.testing.assert_array_equal(again[3]["image"], later["image"])
    np.testing.assert_array_equal(again[3]["pts68"], later["pts68"])
    assert not np.array_equal(SyntheticFaces(n=5, seed=12, face_model=fm)[3]["params"], later["params"])
    s = later
    assert s["image"].shape == (120, 120, 3) and s["image"].dtype == np.uint8 and len(ds.names) == 5
    np.testing.assert_allclose(s["pts68"], g.landmarks(s["params"], fm), atol=1e-4)
    np.testing.assert_allclose(s["pose"], g.euler_angles(s["params"]), atol=1e-3)
    with pytest.raises(IndexError):
        ds[5]


def test_renderer_projects_with_the_landmark_math(fm):
    p = sample_params(np.random.default_rng(3), fm).astype(np.float64)
    crop = render.to_crop(render.pose_vertices(render.model_vertices(p, fm.dense), p), fm.size)
    np.testing.assert_allclose(crop, g.landmarks(p, fm, dense=True), atol=2e-3)


def test_the_face_is_painted_where_its_landmarks_are(fm):
    p = _frontal(fm, seed=2)
    away = p.copy()
    away[3] += 400  # same scene, same random look, the head out of the crop
    image = render.render_face(p, fm, np.random.default_rng(5), occlusion=0.0).astype(np.float64)
    empty = render.render_face(away, fm, np.random.default_rng(5), occlusion=0.0).astype(np.float64)
    pts = g.landmarks(p, fm)[:, :2]

    def at(points):
        xy = np.round(points).astype(int)
        return image[xy[:, 1], xy[:, 0]], empty[xy[:, 1], xy[:, 0]]

    face, background = at(pts[17:68])
    assert (np.abs(face - background).sum(1) > 30).mean() > 0.9  # features drawn over the background
    assert np.abs(image[:8, :8] - empty[:8, :8]).max() < 40  # corner untouched (JPEG noise aside)
    cheeks = np.array([(pts[2] + pts[31]) / 2, (pts[14] + pts[35]) / 2, (pts[29] + pts[39]) / 2])
    skin = at(cheeks)[0].mean(0)
    assert skin[2] > skin[0] + 5  # skin is redder than blue (BGR)
    # iris and pupil: the eye centre (where a straight gaze puts them) is much darker than the cheeks
    for eye in (pts[36:42], pts[42:48]):
        cx, cy = np.round(eye.mean(0)).astype(int)
        assert image[cy - 1:cy + 2, cx - 1:cx + 2].sum(2).min() < 0.6 * skin.sum()
