import numpy as np
import pytest

from edgefa.data.base import make_sample
from edgefa.facemodel import geometry as g
from edgefa.training.augment import FLIP_21, FLIP_68, AugmentConfig, augment_sample

SIZE = 120


def _sample(fm, yaw=40.0, pitch=10.0, roll=-5.0):
    rot = g.euler_to_rotation(np.array([[yaw, pitch, roll]]))[0] * 0.4
    params = np.zeros(62, np.float32)
    params[:12] = np.concatenate([rot, [[60.0], [60.0], [0.0]]], axis=1).reshape(12)
    params[12:] = np.random.default_rng(0).normal(0, 0.5, 50)
    pts = g.landmarks(params, fm)
    image = np.zeros((SIZE, SIZE, 3), np.uint8)
    x, y = np.round(pts[30, :2]).astype(int)
    image[y - 1:y + 2, x - 1:x + 2] = 255  # a marker on the nose tip
    pts21 = np.full((21, 2), np.nan, np.float32)
    pts21[14] = pts[30, :2]
    return make_sample(image, 0, pts68=pts, pts21=pts21, pose=g.euler_angles(params), params=params)


def test_flip_permutations_are_involutions():
    assert sorted(FLIP_68) == list(range(68)) and (FLIP_68[FLIP_68] == np.arange(68)).all()
    assert sorted(FLIP_21) == list(range(21)) and (FLIP_21[FLIP_21] == np.arange(21)).all()
    assert FLIP_68[36] == 45 and FLIP_68[48] == 54 and FLIP_68[8] == 8 and FLIP_68[30] == 30


@pytest.mark.parametrize("seed", range(6))
def test_geometric_augmentation_keeps_params_exact(toy_face_model, seed):
    fm = toy_face_model
    cfg = AugmentConfig(flip=0.0, rotate=20, rotate_prob=1.0, color=0, blur=0, occlude=0)
    out = augment_sample(_sample(fm), SIZE, cfg, np.random.default_rng(seed))
    np.testing.assert_allclose(g.landmarks(out["params"], fm), out["pts68"], atol=1e-2)
    np.testing.assert_allclose(g.euler_angles(out["params"]), out["pose"], atol=1e-3)
    # the image moved with the labels: the marker sits at the warped nose tip
    ys, xs = np.nonzero(out["image"][..., 0] > 100)
    assert abs(xs.mean() - out["pts68"][30, 0]) < 1.0 and abs(ys.mean() - out["pts68"][30, 1]) < 1.0


def test_flip_mirrors_points_and_pose(toy_face_model):
    sample = _sample(toy_face_model)
    cfg = AugmentConfig(flip=1.0, scale=0, shift=0, rotate=0, color=0, blur=0, occlude=0)
    out = augment_sample(sample, SIZE, cfg, np.random.default_rng(0))
    np.testing.assert_allclose(out["pts68"][:, 0], SIZE - 1 - sample["pts68"][FLIP_68, 0], atol=1e-4)
    np.testing.assert_allclose(out["pts68"][:, 1], sample["pts68"][FLIP_68, 1], atol=1e-4)
    np.testing.assert_allclose(out["pose"], sample["pose"] * np.array([-1, 1, -1]), atol=1e-3)
    assert np.isnan(out["params"]).all()  # a mirrored identity has no exact 3DMM weights
    assert out["pts21"][14, 0] == pytest.approx(SIZE - 1 - sample["pts21"][14, 0], abs=1e-4)
    np.testing.assert_array_equal(out["image"], sample["image"][:, ::-1])


def test_partial_pose_survives_flip_but_not_rotation(toy_face_model):
    sample = _sample(toy_face_model)
    sample["pose"] = np.array([50.0, np.nan, np.nan], np.float32)
    no_rot = AugmentConfig(flip=1.0, rotate=0, color=0, blur=0, occlude=0)
    assert augment_sample(sample, SIZE, no_rot, np.random.default_rng(0))["pose"][0] == pytest.approx(-50.0)
    rot = AugmentConfig(flip=0.0, rotate=10, rotate_prob=1.0, color=0, blur=0, occlude=0)
    assert np.isnan(augment_sample(sample, SIZE, rot, np.random.default_rng(0))["pose"]).all()


def test_photometric_changes_leave_labels(toy_face_model):
    sample = _sample(toy_face_model)
    cfg = AugmentConfig(flip=0, scale=0, shift=0, rotate=0, color=0.5, blur=1.0, occlude=1.0)
    out = augment_sample(sample, SIZE, cfg, np.random.default_rng(3))
    np.testing.assert_allclose(out["pts68"], sample["pts68"], atol=1e-4)
    np.testing.assert_allclose(out["params"], sample["params"], atol=1e-4)
    assert not np.array_equal(out["image"], sample["image"])


@pytest.mark.parametrize("seed", range(4))
def test_flip_takes_the_mirror_labels_warped_exactly(toy_face_model, seed):
    """A sample with labels of its mirror image keeps exact parameters through a flip: the flipped
    warp is the flip-free warp applied to the mirror image. With the true mirror's points it must
    land exactly where the plain flip path puts the re-ordered points."""
    from edgefa.training.labels import mirror_points

    fm = toy_face_model
    sample = _sample(fm)
    other = _sample(fm, yaw=-40.0, pitch=10.0, roll=5.0)  # stands in for the mirror image's fit
    sample["mirror_params"] = other["params"]
    sample["mirror_pts68"] = mirror_points(sample["pts68"][None], SIZE, FLIP_68)[0].astype(np.float32)
    cfg = AugmentConfig(flip=1.0, rotate=20, rotate_prob=1.0, color=0, blur=0, occlude=0)
    out = augment_sample(sample, SIZE, cfg, np.random.default_rng(seed))
    plain = dict(sample, mirror_params=np.full(62, np.nan, np.float32))
    old = augment_sample(plain, SIZE, cfg, np.random.default_rng(seed))  # same draws, mirrored points
    np.testing.assert_allclose(out["pts68"], old["pts68"], atol=1e-3)
    np.testing.assert_array_equal(out["image"], old["image"])
    assert np.isnan(old["params"]).all() and np.isfinite(out["params"]).all()
    # the mirror's parameters went through the same flip-free warp as its points
    sample["mirror_pts68"] = other["pts68"]
    moved = augment_sample(sample, SIZE, cfg, np.random.default_rng(seed))
    np.testing.assert_allclose(g.landmarks(moved["params"], fm), moved["pts68"], atol=1e-2)


def test_labels_of_another_face_model_are_dropped_mirror_included(toy_face_model):
    """A dataset fitted in another face model keeps points and pose but no parameters, and a flip
    must not bring its mirror parameters back."""
    from edgefa.training.data import TrainSet

    sample = _sample(toy_face_model)
    sample["mirror_params"] = sample["params"]
    sample["mirror_pts68"] = sample["pts68"]

    class One:
        size = SIZE

        def __len__(self):
            return 1

        def __getitem__(self, i):
            return dict(sample)

    item = TrainSet(One(), AugmentConfig(flip=1.0, color=0, blur=0, occlude=0), seed=0, keep_params=False)[0]
    assert np.isnan(item["params"].numpy()).all() and np.isfinite(item["pts68"].numpy()).all()
