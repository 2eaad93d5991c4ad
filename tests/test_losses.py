"""edgefa.training.losses pinned against hand-computed values and independent numpy references."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from edgefa.errors import EdgefaError
from edgefa.facemodel.base import DenseMesh, FaceModel
from edgefa.facemodel.geometry import euler_to_rotation, whiten
from edgefa.training.losses import (
    LOSSES,
    build_loss,
    euler_angle_loss,
    masked_landmark_loss,
    multitask_loss,
    vdc_loss,
    wing_loss,
    wing_mse_loss,
    wpdc_loss,
    wpdc_weights,
)


# ---------------------------------------------------------------- numpy references (no edgefa geometry)
def np_vertices(raw, mean, shp, exp, size):
    """Raw params (62,) -> (N, 3) crop-pixel vertices, written out from the 3DDFA convention."""
    pose = raw[:12].reshape(3, 4)
    verts = mean + (shp @ raw[12:52]).reshape(-1, 3) + (exp @ raw[52:62]).reshape(-1, 3)
    v = verts @ pose[:, :3].T + pose[:, 3]
    return np.stack([v[:, 0] - 1, size - v[:, 1], v[:, 2]], axis=1)


def np_wpdc(pred_w, target_w, fm, bases=None, normalize="sum", ignore_tz=False, eps=1e-6):
    bases = bases or (fm.mean, fm.shape_basis, fm.expr_basis)
    pred_w, target_w = np.float64(pred_w), np.float64(target_w)
    std, mu = np.float64(fm.param_std), np.float64(fm.param_mean)
    losses = []
    for pw, tw in zip(pred_w, target_w):
        ref = np_vertices(tw * std + mu, *bases, fm.size)
        w = np.zeros(62)
        for i in range(62):
            mixed = tw.copy()
            mixed[i] = pw[i]
            w[i] = np.linalg.norm(np_vertices(mixed * std + mu, *bases, fm.size) - ref) + eps
        if ignore_tz:
            w[11] = 0
        if normalize == "sum":
            losses.append(np.sum(w / w.sum() * (pw - tw) ** 2))
        else:
            losses.append(np.mean(w / w.max() * (pw - tw) ** 2))
    return float(np.mean(losses))


def raw_params(fm, yaw=0.0, pitch=0.0, roll=0.0, scale=0.5, seed=0):
    rng = np.random.default_rng(seed)
    rot = euler_to_rotation(np.array([yaw, pitch, roll], np.float64))
    pose = np.concatenate([scale * rot, np.array([[60.0], [60.0], [-20.0]])], axis=1)
    return np.concatenate([pose.reshape(-1), rng.normal(0, 1, 50)]).astype(np.float32)


def whitened(fm, *raws):
    return whiten(torch.from_numpy(np.stack(raws)), fm)


@pytest.fixture(scope="module")
def pair(toy_face_model):
    rng = np.random.default_rng(1)
    target = torch.from_numpy(rng.normal(0, 1, (3, 62)).astype(np.float32))
    pred = target + torch.from_numpy(rng.normal(0, 0.3, (3, 62)).astype(np.float32))
    return pred, target


# ---------------------------------------------------------------- wing / wing+mse
def test_wing_hand_values():
    pred = torch.tensor([1.0, 20.0, -1.0, 0.0])
    w1 = 10 * math.log(1 + 1 / 2)  # |x| = 1 < w
    c = 10 - 10 * math.log(1 + 10 / 2)
    w20 = 20 - c  # |x| = 20 >= w
    assert wing_loss(pred, torch.zeros(4)).item() == pytest.approx((w1 + w20 + w1 + 0) / 4, rel=1e-6)
    # continuous at |x| = w, and w/eps are honoured
    assert wing_loss(torch.tensor([10.0]), torch.zeros(1)).item() == pytest.approx(10 * math.log(6), rel=1e-6)
    assert wing_loss(torch.tensor([3.0]), torch.zeros(1), w=15, eps=3).item() == pytest.approx(15 * math.log(2))


def test_wing_mse_hand_values():
    pred = torch.tensor([[[1.0, 0.0], [0.0, 20.0]]])
    target = torch.zeros_like(pred)
    wing = (10 * math.log(1.5) + 0 + 0 + 20 - (10 - 10 * math.log(6))) / 4
    mse = (1 + 400) / 4
    assert wing_mse_loss(pred, target).item() == pytest.approx(1.5 * wing + 0.5 * mse, rel=1e-6)
    # MSE restricted to the first point (the dense-520 code's 68-keypoint subset)
    assert wing_mse_loss(pred, target, mse_index=[0]).item() == pytest.approx(1.5 * wing + 0.5 * 0.5, rel=1e-6)


# ---------------------------------------------------------------- WPDC / VDC
@pytest.mark.parametrize("normalize,ignore_tz", [("sum", False), ("max", True)])
def test_wpdc_matches_numpy_reference(toy_face_model, pair, normalize, ignore_tz):
    pred, target = pair
    got = wpdc_loss(pred, target, toy_face_model, normalize=normalize, ignore_tz=ignore_tz).item()
    want = np_wpdc(pred.numpy(), target.numpy(), toy_face_model, normalize=normalize, ignore_tz=ignore_tz)
    assert got == pytest.approx(want, rel=1e-4)


def test_wpdc_single_parameter_and_gradient(toy_face_model, pair):
    _, target = pair
    for k in (3, 20):  # x translation, a shape weight: with only one wrong parameter its weight is ~1
        pred = target.clone()
        pred[:, k] += 0.7
        assert wpdc_loss(pred, target, toy_face_model).item() == pytest.approx(0.49, rel=1e-3)  # 61 eps
    # x translation by hand: w_3 = 0.7 * std_3 * sqrt(68) pixels, every other weight is eps = 1e-6
    w3 = 0.7 * 0.05 * math.sqrt(68)
    assert wpdc_loss(target, target, toy_face_model).item() == 0.0
    pred = target.clone()
    pred[:, 3] += 0.7
    delta2 = float(((pred - target)[0, 3]) ** 2)
    assert wpdc_loss(pred, target, toy_face_model).item() == pytest.approx(delta2 * w3 / (w3 + 61e-6), rel=1e-5)
    pred = pair[0].clone().requires_grad_(True)
    wpdc_loss(pred, target, toy_face_model).backward()
    weights = wpdc_weights(pred, target, toy_face_model)
    assert torch.allclose(weights.sum(1), torch.ones(3))
    assert torch.allclose(pred.grad, 2 * weights * (pred.detach() - target) / 3, atol=1e-6)


def test_wpdc_resample_dense(toy_face_model, pair):
    fm = toy_face_model
    rng = np.random.default_rng(2)
    dense = DenseMesh(mean=rng.normal(0, 50, (30, 3)).astype(np.float32),
                      shape_basis=rng.normal(0, 2, (90, 40)).astype(np.float32),
                      expr_basis=rng.normal(0, 2, (90, 10)).astype(np.float32),
                      triangles=np.zeros((0, 3), np.int32), landmark_index=np.arange(68) % 30)
    fm_dense = FaceModel("toy-dense", fm.mean, fm.shape_basis, fm.expr_basis, fm.param_mean, fm.param_std,
                         dense=dense)
    pred, target = pair
    bases = (np.concatenate([fm.mean, dense.mean]), np.concatenate([fm.shape_basis, dense.shape_basis]),
             np.concatenate([fm.expr_basis, dense.expr_basis]))
    got = wpdc_loss(pred, target, fm_dense, resample=1000).item()  # >= 30: every dense vertex
    assert got == pytest.approx(np_wpdc(pred.numpy(), target.numpy(), fm, bases=bases), rel=1e-4)
    some = wpdc_loss(pred, target, fm_dense, resample=5, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(some)
    with pytest.raises(ValueError, match="dense mesh"):
        wpdc_loss(pred, target, fm, resample=10)


def test_vdc_is_mean_squared_landmark_distance(toy_face_model, pair):
    fm = toy_face_model
    pred, target = pair
    std, mu = np.float64(fm.param_std), np.float64(fm.param_mean)
    d2 = [np.sum((np_vertices(p * std + mu, fm.mean, fm.shape_basis, fm.expr_basis, fm.size)
                  - np_vertices(t * std + mu, fm.mean, fm.shape_basis, fm.expr_basis, fm.size)) ** 2, axis=1).mean()
          for p, t in zip(np.float64(pred.numpy()), np.float64(target.numpy()))]
    assert vdc_loss(pred, target, fm).item() == pytest.approx(np.mean(d2), rel=1e-4)
    assert vdc_loss(target, target, fm).item() == 0.0
    only_tz = target.clone()
    only_tz[:, 11] += 1.0  # shifts every landmark's z by std[11] pixels
    assert vdc_loss(only_tz, target, fm).item() == pytest.approx(float(fm.param_std[11]) ** 2, rel=1e-4)
    assert vdc_loss(only_tz, target, fm, ignore_tz=True).item() == 0.0


# ---------------------------------------------------------------- Euler angles
def test_euler_zero_for_identical_and_10_degrees_yaw(toy_face_model):
    fm = toy_face_model
    target = whitened(fm, raw_params(fm, 0, 0, 0), raw_params(fm, 25, -10, 5))
    pred = target.clone().requires_grad_(True)
    loss = euler_angle_loss(pred, target, fm)
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-3) and torch.isfinite(pred.grad).all()

    pred = whitened(fm, raw_params(fm, yaw=10.0))
    target = whitened(fm, raw_params(fm, yaw=0.0))
    # SmoothL1 (beta 1) of (10, 0, 0) degrees, mean over the 3 angles: (10 - 0.5) / 3
    assert euler_angle_loss(pred, target, fm).item() == pytest.approx(9.5 / 3, rel=1e-4)
    rad = math.radians(10)
    assert euler_angle_loss(pred, target, fm, unit="rad").item() == pytest.approx(0.5 * rad ** 2 / 3, rel=1e-4)
    # the same through explicit target angles (AFLW2000-3D Pose_Para, degrees)
    assert euler_angle_loss(pred, None, fm, target_angles=torch.zeros(1, 3)).item() == pytest.approx(9.5 / 3,
                                                                                                  rel=1e-4)


def test_euler_wraps_roll(toy_face_model):
    fm = toy_face_model
    pred = whitened(fm, raw_params(fm, roll=179.0))
    target = whitened(fm, raw_params(fm, roll=-179.0))
    assert euler_angle_loss(pred, target, fm).item() == pytest.approx(1.5 / 3, rel=1e-3)  # 2 degrees apart


# ---------------------------------------------------------------- masked landmarks
def test_masked_landmark_loss_values_and_hidden_points():
    target = torch.tensor([[[0.0, 0.0], [0.0, 0.0], [float("nan"), 5.0]]])
    pred = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [100.0, -3.0]]], requires_grad=True)
    mask = torch.tensor([[True, True, False]])
    assert masked_landmark_loss(pred, target, mask, kind="l1").item() == pytest.approx(1.5)
    assert masked_landmark_loss(pred, target, mask, kind="l2").item() == pytest.approx(2.5)
    wing = (10 * math.log(1.5) + 10 * math.log(2.0)) / 2
    loss = masked_landmark_loss(pred, target, mask)
    assert loss.item() == pytest.approx(wing, rel=1e-6)
    loss.backward()
    assert torch.isfinite(pred.grad).all() and pred.grad[0, 2].abs().sum() == 0 and pred.grad[0, 0, 0] > 0
    moved = pred.detach().clone()
    moved[0, 2] = torch.tensor([-50.0, 7.0])  # a hidden point's prediction does not matter
    assert masked_landmark_loss(moved, target, mask).item() == pytest.approx(wing, rel=1e-6)
    # a 3D prediction against 2D targets uses x, y only; a (N,) mask broadcasts over the batch
    pred3d = torch.cat([pred.detach(), torch.full((1, 3, 1), 99.0)], dim=-1)
    assert masked_landmark_loss(pred3d, target, mask[0], kind="l1").item() == pytest.approx(1.5)


def test_masked_landmark_loss_none_visible():
    pred = torch.randn(2, 4, 2, requires_grad=True)
    loss = masked_landmark_loss(pred, torch.full((2, 4, 2), float("nan")), torch.zeros(2, 4))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(pred.grad, torch.zeros_like(pred))
    with pytest.raises(EdgefaError, match="landmark loss kind"):
        masked_landmark_loss(pred, pred, torch.ones(2, 4), kind="l3")


# ---------------------------------------------------------------- multi-task
def test_multitask_weighted_sum():
    pred = {"landmarks": torch.tensor([[[0.5, 3.0, 7.0]]]), "pose": torch.tensor([[10.0, -5.0, 1.0]]),
            "params": torch.tensor([[1.0, 2.0] + [0.0] * 60])}
    target = {"landmarks": torch.tensor([[[0.0, 0.0]]]), "pose": torch.zeros(1, 3), "params": torch.zeros(1, 62)}
    lmk = 0.5 * 0.5 ** 2 + (3.0 - 0.5)  # SmoothL1 beta 1 on x and y; z is dropped for a 2D target
    total, terms = multitask_loss(pred, target, {"landmarks": 2.0, "pose": 0.5, "params": 3.0})
    assert terms["landmarks"].item() == pytest.approx(lmk)
    assert terms["pose"].item() == pytest.approx(16.0)
    assert terms["params"].item() == pytest.approx(5.0)
    assert total.item() == pytest.approx(2.0 * lmk + 0.5 * 16.0 + 3.0 * 5.0)
    total, terms = multitask_loss(pred, {"pose": target["pose"], "params": target["params"]}, {"landmarks": 0})
    assert set(terms) == {"pose", "params"} and total.item() == pytest.approx(21.0)  # default weights 1
    with pytest.raises(EdgefaError, match="did you mean 'pose'"):
        multitask_loss(pred, target, {"poses": 1.0})
    with pytest.raises(ValueError, match="no 'landmarks'"):
        multitask_loss(pred, {"pose": target["pose"], "params": target["params"]})


# ---------------------------------------------------------------- registry
def test_registry_and_build_loss():
    assert set(LOSSES) == {"wpdc", "vdc", "wing", "wing_mse", "multitask", "euler", "masked_landmark"}
    x, y = torch.tensor([3.0, -40.0]), torch.zeros(2)
    assert build_loss("wing", w=15, eps=3)(x, y).item() == pytest.approx(wing_loss(x, y, 15, 3).item())
    assert build_loss("wing") is wing_loss
    with pytest.raises(EdgefaError, match="did you mean 'wing'"):
        build_loss("wng")
    with pytest.raises(EdgefaError, match="option of loss 'wing'"):
        build_loss("wing", omega=3)
