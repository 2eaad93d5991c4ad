"""Refined aflw-train labels: the fit, the learned correspondence, the file and its reader."""
import numpy as np
import pytest
import torch

from edgefa.data.labels import read_labels, save_labels
from edgefa.errors import EdgefaError
from edgefa.facemodel import geometry as g
from edgefa.training.labels import LAMBDAS, Correspondence, leave_one_out, main, mirror_points, refine

SIZE = 120


def _faces(fm, n, seed=0):
    """Raw params of ``n`` toy faces with yaw up to +-60 degrees, so every offset axis is seen."""
    rng = np.random.default_rng(seed)
    angles = np.stack([rng.uniform(-60, 60, n), rng.uniform(-20, 20, n), rng.uniform(-20, 20, n)], 1)
    rot = g.euler_to_rotation(angles) * 0.5
    params = np.zeros((n, 62))
    params[:, :12] = np.concatenate([rot, np.tile([[60.0], [60.0], [0.0]], (n, 1, 1))], axis=2).reshape(n, 12)
    params[:, 12:] = rng.normal(0, 1, (n, 50))
    return params


def _points(corr, raw, fm):
    return corr(torch.as_tensor(raw), fm).numpy()


def test_learned_offsets_recover_the_true_correspondence(toy_face_model):
    fm = toy_face_model
    raw = _faces(fm, 300)
    truth = Correspondence("learned", offsets=np.random.default_rng(1).normal(0, 3, (21, 3)))
    gt = _points(truth, raw, fm)
    gt[np.random.default_rng(2).random(gt.shape[:2]) < 0.3] = np.nan  # hidden points
    learned = Correspondence("learned")
    learned.learn_offsets(raw, gt, fm)
    np.testing.assert_allclose(learned.offsets, truth.offsets, atol=1e-3)
    assert Correspondence("naive").usable.sum() == 17  # eye centres and ears have no index


def test_refined_labels_are_closer_to_the_truth_than_the_prior(toy_face_model):
    fm = toy_face_model
    rng = np.random.default_rng(3)
    true_raw = _faces(fm, 64, seed=4)
    prior_w = g.whiten(true_raw, fm) + rng.normal(0, 0.4, true_raw.shape)  # a teacher's errors
    prior_raw = g.dewhiten(prior_w, fm)
    corr = Correspondence("learned", offsets=rng.normal(0, 2, (21, 3)))
    gt = _points(corr, true_raw, fm) + rng.normal(0, 0.3, (64, 21, 2))
    gt[rng.random(gt.shape[:2]) < 0.25] = np.nan
    refined = refine(prior_raw, gt, corr, fm, lam=1.0, steps=300)
    truth = g.landmarks(true_raw, fm)[..., :2]

    def err(raw):
        return np.linalg.norm(g.landmarks(raw, fm)[..., :2] - truth, axis=-1).mean()

    assert err(refined) < 0.6 * err(prior_raw)
    # the visible points are fitted to about their noise
    fitted = _points(corr, refined, fm)
    vis = np.isfinite(gt[..., 0])
    assert np.linalg.norm(fitted[vis] - gt[vis], axis=-1).mean() < 1.0


def test_leave_one_point_out_prefers_the_true_correspondence(toy_face_model):
    fm = toy_face_model
    rng = np.random.default_rng(5)
    raw = _faces(fm, 12, seed=6)
    truth = Correspondence("learned", offsets=rng.normal(0, 4, (21, 3)))
    gt = _points(truth, raw, fm)
    prior = g.dewhiten(g.whiten(raw, fm) + rng.normal(0, 0.3, raw.shape), fm)
    good = leave_one_out(prior, gt, truth, fm, lam=1.0, steps=100)
    naive = leave_one_out(prior, gt, Correspondence("naive"), fm, lam=1.0, steps=100)
    assert np.isfinite(good) and good < naive


def test_mirror_points_match_a_flipped_image():
    from edgefa.training.augment import FLIP_21

    image = np.zeros((SIZE, SIZE), np.uint8)
    image[37, 11] = 255  # a marker at x = 11, y = 37
    ys, xs = np.nonzero(image[:, ::-1])
    pts = np.full((1, 21, 2), np.nan)
    pts[0, 13] = (11, 37)  # nose-left, which the mirror calls nose-right (15)
    got = mirror_points(pts, SIZE, FLIP_21)
    np.testing.assert_allclose(got[0, 15], (xs[0], ys[0]))
    np.testing.assert_allclose(mirror_points(got, SIZE, FLIP_21), pts)


def _write(tmp_path, fm, names, **meta):
    path = tmp_path / "labels.npz"
    params = np.stack([_faces(fm, len(names)), _faces(fm, len(names), seed=9)], axis=1)
    save_labels(path, names, params, fm, {"format": "edgefa-aflw-labels/1", **meta})
    return path, params


def test_labels_file_round_trips_by_name(tmp_path, toy_face_model):
    path, params = _write(tmp_path, toy_face_model, ["a.jpg", "b.jpg", "c.jpg"], lam=1)
    got = read_labels(path, ["c.jpg", "a.jpg"])
    np.testing.assert_allclose(got["params"], params[[2, 0]].astype(np.float32))
    np.testing.assert_allclose(got["pts68"][1, 1], g.landmarks(params[0, 1], toy_face_model), atol=1e-3)
    assert got["meta"]["lam"] == 1 and got["pose"].shape == (2, 2, 3)


def test_broken_or_mismatched_labels_file_is_one_error_line(tmp_path, toy_face_model):
    path, _ = _write(tmp_path, toy_face_model, ["a.jpg", "b.jpg"])
    with pytest.raises(EdgefaError, match=r"no labels for 1 of the 2 crops \(e.g. z.jpg\)"):
        read_labels(path, ["a.jpg", "z.jpg"])
    with pytest.raises(EdgefaError, match="labels file not found"):
        read_labels(tmp_path / "none.npz", ["a.jpg"])
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip at all")
    with pytest.raises(EdgefaError, match="junk.npz: not a readable labels file"):
        read_labels(junk, ["a.jpg"])
    other = tmp_path / "other.npz"
    np.savez(other, names=np.array(["a.jpg"]), params=np.zeros((1, 62)))
    with pytest.raises(EdgefaError, match="other.npz: not an edgefa labels file"):
        read_labels(other, ["a.jpg"])
    wrong = tmp_path / "wrong.npz"
    save_labels(wrong, ["a.jpg"], np.zeros((1, 2, 62)), toy_face_model, {"format": "something-else"})
    with pytest.raises(EdgefaError, match="labels format 'something-else'"):
        read_labels(wrong, ["a.jpg"])


@pytest.mark.shared
def test_labels_command_on_real_crops_feeds_the_reader_and_augmentation(tmp_path, capsys):
    """End to end on 40 aflw-train crops: teacher prior, selection on the val faces, the file, then
    the reader's samples carry params for the crop and its mirror that a flip uses."""
    from edgefa.data.registry import create_dataset
    from edgefa.training.augment import AugmentConfig
    from edgefa.training.data import TrainSet
    from tests.conftest import shared_path

    root = shared_path("data", "aflw-train")
    shared_path("peers", "3ddfa_v2_mb05", "mb05_120x120.pth")
    out = tmp_path / "labels.npz"
    assert main([str(out), "--data", f"aflw-train:{root},n=40", "--steps", "30"]) == 0
    ds = create_dataset(f"aflw-train:{root},n=40,labels={out}")
    meta = ds.labels["meta"]
    assert meta["selection"]["faces"] == 2 and len(meta["selection"]["table"]) == 2 * len(LAMBDAS)
    sample = ds[3]
    assert np.isfinite(sample["params"]).all() and np.isfinite(sample["mirror_params"]).all()
    item = TrainSet(ds, AugmentConfig(flip=1.0, color=0, blur=0, occlude=0), seed=0)[3]
    assert torch.isfinite(item["params"]).all()  # the flip took the mirror labels
    assert main([str(tmp_path / "x.npz"), "--data", f"aflw-train:{root},n=40", "--steps", "0"]) == 2
    assert "--steps 0: must be at least 1" in capsys.readouterr().err
    assert main([str(tmp_path / "x.npz"), "--data", f"aflw-train:{root},n=40", "--lambdas", "1,x"]) == 2
    assert "--lambdas 1,x: expected a comma list of positive numbers" in capsys.readouterr().err
    assert not (tmp_path / "x.npz").exists()
    with pytest.raises(EdgefaError, match="no labels for"):
        create_dataset(f"aflw-train:{root},n=60,labels={out}")


def test_truncated_labels_file_is_one_error_line(tmp_path, toy_face_model):
    path, _ = _write(tmp_path, toy_face_model, ["a.jpg", "b.jpg"])
    data = path.read_bytes()
    for i, broken in enumerate((data[: len(data) // 2], data[:200] + bytes(len(data) - 200))):
        bad = tmp_path / f"bad{i}.npz"
        bad.write_bytes(broken)
        with pytest.raises(EdgefaError, match=f"bad{i}.npz: not"):
            read_labels(bad, ["a.jpg"])
