"""The embedded default data: the procedural face model and the synthetic renderer."""
import numpy as np
import pytest

from edgefa.data.render import SUPERSAMPLE, _mesh_tables, model_vertices, pose_vertices, rasterize, to_crop
from edgefa.data.synthetic import SyntheticFaces, sample_params_batch
from edgefa.facemodel import geometry as g
from edgefa.facemodel.synthetic import synthetic_face_model
from edgefa.metrics import yaw_bin_index


@pytest.fixture(scope="module")
def fm():
    return synthetic_face_model()


def test_face_model_is_consistent_with_its_dense_mesh(fm):
    d = fm.dense
    assert fm.mean.shape == (68, 3) and fm.shape_basis.shape == (204, 40) and fm.expr_basis.shape == (204, 10)
    assert len(np.unique(d.landmark_index)) == 68
    np.testing.assert_allclose(fm.mean, d.mean[d.landmark_index], atol=1e-4)
    rows = (d.landmark_index[:, None] * 3 + np.arange(3)).reshape(-1)
    np.testing.assert_allclose(fm.shape_basis, d.shape_basis[rows], atol=1e-5)
    np.testing.assert_allclose(fm.expr_basis, d.expr_basis[rows], atol=1e-5)
    assert (fm.param_std > 0).all() and np.isfinite(fm.param_mean).all()
    # the 68 landmarks follow the iBUG layout: subject's right (image left) has smaller x
    assert fm.mean[36, 0] < fm.mean[45, 0] and fm.mean[0, 0] < fm.mean[16, 0]
    assert fm.mean[30, 2] == fm.mean[:, 2].max()  # nose tip nearest the camera
    assert fm.mean[8, 1] == fm.mean[:, 1].min()  # chin lowest (y up)


def test_face_model_is_deterministic(fm):
    again = synthetic_face_model.__wrapped__(0) if hasattr(synthetic_face_model, "__wrapped__") else fm
    np.testing.assert_array_equal(again.mean, fm.mean)
    np.testing.assert_array_equal(again.param_std, fm.param_std)


def test_samples_are_deterministic_and_order_free():
    a = SyntheticFaces(n=6, seed=3)
    b = SyntheticFaces(n=6, seed=3)
    later = b[4]  # access out of order first
    first = a[4]
    np.testing.assert_array_equal(first["image"], later["image"])
    np.testing.assert_array_equal(first["params"], later["params"])
    assert not np.array_equal(a[1]["image"], a[2]["image"])
    assert not np.array_equal(SyntheticFaces(n=6, seed=4)[4]["image"], first["image"])


def test_labels_follow_from_the_params(fm):
    ds = SyntheticFaces(n=3, seed=0)
    for i in range(3):
        s = ds[i]
        assert s["image"].shape == (120, 120, 3) and s["image"].dtype == np.uint8
        np.testing.assert_allclose(g.landmarks(s["params"], fm), s["pts68"], atol=1e-3)
        np.testing.assert_allclose(g.euler_angles(s["params"].astype(np.float64)), s["pose"], atol=1e-3)
        np.testing.assert_array_equal(s["roi_box"], [0, 0, 120, 120])


def test_sampler_covers_the_yaw_range_and_frames_faces_like_3ddfa(fm):
    params = sample_params_batch(np.random.default_rng(0), fm, 600)
    yaw = g.euler_angles(params.astype(np.float64))[:, 0]
    assert yaw.min() < -80 and yaw.max() > 80
    assert set(np.bincount(yaw_bin_index(yaw), minlength=3) > 100) == {True}
    pts = g.landmarks(params, fm)
    extent = (pts[..., :2].max(1) - pts[..., :2].min(1)).max(1)
    assert 0.55 * 120 < extent.min() and extent.max() < 0.8 * 120
    assert (pts[..., :2] > 0).all() and (pts[..., :2] < 120).all()


def test_the_face_is_drawn_where_the_landmarks_are(fm):
    params = sample_params_batch(np.random.default_rng(1), fm, 1)[0]
    params[:12] = np.concatenate([g.euler_to_rotation(np.zeros((1, 3)))[0] * np.linalg.norm(params[:3]),
                                  params[[3, 7, 11]][:, None]], 1).reshape(12)  # frontal
    tables = _mesh_tables(fm.dense)
    crop = to_crop(pose_vertices(model_vertices(params.astype(np.float64), fm.dense), params), 120)
    ids, _ = rasterize(crop, tables, 120, SUPERSAMPLE)
    lm = g.landmarks(params, fm)
    px = np.round(lm[:, :2] * SUPERSAMPLE + (SUPERSAMPLE - 1) / 2).astype(int)
    covered = ids[px[:, 1], px[:, 0]] >= 0
    assert covered[27:68].all()  # nose, eyes, mouth, brows all on the drawn face
    assert (ids[:4, :4] < 0).all()  # the crop corner is background
    # the pixel under the nose tip comes from a triangle touching the nose-tip vertex's neighbourhood
    tri = tables["tris"][ids[px[30, 1], px[30, 0]]]
    assert np.linalg.norm(crop[tri, :2].mean(0) - lm[30, :2]) < 3.0
