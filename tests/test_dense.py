"""Dense landmarks: the Delaunay-centroid sampler, the K x 3 regressor, its loss and training."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edgefa.facemodel.dense_sampling import (
    JAW,
    NOSE_TIP,
    delaunay_centroid_vertices,
    sample_dense_vertices,
)
from edgefa.facemodel.synthetic import synthetic_face_model


@pytest.fixture(scope="module")
def fm():
    return synthetic_face_model()


def test_sampler_gives_k_distinct_vertices_deterministically(fm):
    a, b = sample_dense_vertices(fm.dense, 520), sample_dense_vertices(fm.dense, 520)
    np.testing.assert_array_equal(a, b)
    assert len(a) == 520 and len(np.unique(a)) == 520
    assert set(fm.dense.landmark_index.tolist()) <= set(a.tolist())  # the 68-point subset is exact
    assert sample_dense_vertices(fm.dense, 100).shape == (100,)
    with pytest.raises(ValueError, match="fewer than the 68"):
        sample_dense_vertices(fm.dense, 50)


def test_delaunay_iterations_grow_from_jaw_and_nose_tip(fm):
    seeds = [int(fm.dense.landmark_index[i]) for i in (*JAW, NOSE_TIP)]
    counts = [len(delaunay_centroid_vertices(fm.dense, it)) for it in (0, 1, 2, 3)]
    assert counts[0] == len(seeds) == 18
    assert counts[0] < counts[1] < counts[2] < counts[3]
    pts = delaunay_centroid_vertices(fm.dense, 3)
    assert pts[:18] == seeds and len(set(pts)) == len(pts)
    # every pick faces the camera, on the head (not ears or neck)
    assert np.all(fm.dense.extras["part"][pts] == 0)


def test_sampler_on_a_user_mesh_without_labels(fm):
    """Any DenseMesh works (a user's dense BFM has no part labels): here the synthetic mesh without them."""
    from dataclasses import replace

    bare = replace(fm.dense, extras={})
    out = sample_dense_vertices(bare, 300)
    assert len(np.unique(out)) == 300


@pytest.fixture(scope="module")
def model():
    from edgefa.models.registry import create_model

    torch.manual_seed(0)
    return create_model("dense_mobilenetv2", k=120)


def test_regressor_outputs(model, fm):
    x = torch.randn(2, 3, 120, 120)
    model.train()
    out = model(x)
    assert out["dense"].shape == (2, 120, 3) and out["params"].shape == (2, 62)
    assert out["dense_index"][out["dense_lmk68"]].tolist() == fm.dense.landmark_index.tolist()
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (2, 62)


def test_params_from_exact_points_reproduce_the_landmarks(model, fm):
    """The fit that turns the 68-point subset into params loses little on a real face."""
    from edgefa.data.synthetic import sample_params
    from edgefa.facemodel.geometry import dewhiten, landmarks

    raw = np.stack([sample_params(np.random.default_rng([3, i]), fm) for i in range(4)])
    dense = landmarks(raw, fm, dense=True)[:, model.dense_index.numpy()]
    params_w = model.params_from_points(torch.from_numpy(dense).float())
    err = np.linalg.norm(landmarks(dewhiten(params_w.numpy(), fm), fm)[..., :2] - landmarks(raw, fm)[..., :2], axis=-1)
    assert err.mean() < 0.5, err.mean()  # crop pixels


def test_dense_loss_term(fm, model):
    from edgefa.data.synthetic import sample_params
    from edgefa.facemodel.geometry import landmarks, whiten
    from edgefa.training.objectives import loss_terms

    raw = np.stack([sample_params(np.random.default_rng([5, i]), fm) for i in range(2)])
    exact = torch.from_numpy(landmarks(raw, fm, dense=True)[:, model.dense_index.numpy()]).float()
    batch = {"params": torch.from_numpy(raw), "pts68": torch.from_numpy(landmarks(raw, fm)),
             "pts21": torch.full((2, 21, 2), float("nan")), "pose": torch.full((2, 3), float("nan"))}
    cfg = {"params": 0, "landmarks": 0, "pts21": 0, "yaw": 0, "distill": 0, "euler": 0, "branch_landmarks": 0,
           "dense": 1, "param_loss": "l2", "distill_loss": "vdc"}
    aux = {"dense_index": model.dense_index, "dense_lmk68": model.dense_lmk68}
    pred_w = torch.from_numpy(whiten(raw, fm)).float()
    assert loss_terms(pred_w, batch, fm, cfg, aux={**aux, "dense": exact})["dense"] < 1e-4
    assert loss_terms(pred_w, batch, fm, cfg, aux={**aux, "dense": exact + 2.0})["dense"] > 1.0


def test_trains_with_edgefa_train(tmp_path, capsys):
    from edgefa.app.cli import main
    from edgefa.models.checkpoint import load_checkpoint

    args = ["train", "--config", "training/configs/dense-synthetic.yaml", "--quiet", "epochs=1",
            "data.train=synthetic:seed=0,n=8", "data.val=synthetic:seed=1,n=4", "data.workers=0", "batch_size=4",
            "augment=false", "model.cfg.k=120", f"output={tmp_path}/run"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["best_val_nme"] > 0
    assert set(load_checkpoint(tmp_path / "run" / "last.pt")["history"][-1]["terms"]) == {"dense"}


def test_exportable_fit_equals_fit_params(fm):
    """LandmarkFit3D (no SVD / solve) gives fit_params' answer on noisy 3D landmarks, and the polar
    iteration gives the SVD's rotation."""
    from edgefa.data.synthetic import sample_params
    from edgefa.facemodel.fit import LandmarkFit3D, fit_params, polar_rotation
    from edgefa.facemodel.geometry import landmarks

    raw = np.stack([sample_params(np.random.default_rng([7, i]), fm) for i in range(6)])
    pts = landmarks(raw, fm) + np.random.default_rng(0).normal(0, 1.0, (6, 68, 3))
    ref = fit_params(pts, fm, iterations=10)
    got = LandmarkFit3D(fm, iterations=10)(torch.from_numpy(pts).float()).double().numpy()
    assert np.abs(landmarks(got, fm) - landmarks(ref, fm)).max() < 1e-3  # crop pixels
    m = torch.randn(5, 3, 3, dtype=torch.float64)
    m = m * torch.sign(torch.linalg.det(m)).view(-1, 1, 1)  # det > 0: a proper rotation exists
    u, _, vh = torch.linalg.svd(m)
    torch.testing.assert_close(polar_rotation(m, steps=12), u @ vh, atol=1e-9, rtol=0)
