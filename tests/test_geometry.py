import numpy as np
import pytest
import torch

from edgefa.facemodel import geometry as g
from edgefa.facemodel.base import FaceModel
from edgefa.facemodel.fit import fit_params


def _posed_params(fm, angles, scale=0.5, t=(60.0, 60.0, 0.0), seed=0):
    rng = np.random.default_rng(seed)
    angles = np.atleast_2d(np.asarray(angles, dtype=np.float64))
    rot = g.euler_to_rotation(angles) * scale
    params = np.zeros((len(angles), 62))
    params[:, :12] = np.concatenate([rot, np.tile(np.asarray(t)[None, :, None], (len(angles), 1, 1))], 2).reshape(-1, 12)
    params[:, 12:] = rng.normal(0, 1, (len(angles), 50))
    return params


def test_landmarks_hand_values():
    # one landmark at (1, 2, 3) with identity rotation, scale 2, t = (10, 20, 30), crop 120:
    # V = 2 * (1, 2, 3) + t = (12, 24, 36) -> x - 1 = 11, y = 120 - 24 = 96, z = 36
    mean = np.zeros((68, 3), np.float32)
    mean[0] = (1, 2, 3)
    fm = FaceModel("hand", mean, np.zeros((204, 40), np.float32), np.zeros((204, 10), np.float32),
                   np.zeros(62, np.float32), np.ones(62, np.float32))
    params = np.zeros(62, np.float32)
    params[:12] = [2, 0, 0, 10, 0, 2, 0, 20, 0, 0, 2, 30]
    pts = g.landmarks(params, fm)
    assert pts.shape == (68, 3)
    np.testing.assert_allclose(pts[0], [11, 96, 36])
    np.testing.assert_allclose(pts[1], [9, 100, 30])  # the zero landmark lands on t


def test_shape_and_expression_bases_add_linearly(toy_face_model):
    fm = toy_face_model
    base = _posed_params(fm, [0, 0, 0])[0]
    base[12:] = 0
    moved = base.copy()
    moved[12] = 1.0  # first shape weight
    diff = g.landmarks(moved, fm) - g.landmarks(base, fm)
    expect = 0.5 * fm.shape_basis[:, 0].reshape(68, 3)
    expect[:, 1] *= -1  # y flips in crop pixels
    np.testing.assert_allclose(diff, expect, rtol=1e-4, atol=1e-4)


def test_whiten_roundtrip_numpy_and_torch(toy_face_model):
    x = np.random.default_rng(1).normal(size=(5, 62)).astype(np.float32)
    raw = g.dewhiten(x, toy_face_model)
    assert isinstance(raw, np.ndarray)
    np.testing.assert_allclose(g.whiten(raw, toy_face_model), x, atol=1e-4)
    raw_t = g.dewhiten(torch.from_numpy(x), toy_face_model)
    assert isinstance(raw_t, torch.Tensor)
    np.testing.assert_allclose(raw_t.numpy(), raw, atol=1e-6)


def test_landmarks_torch_matches_numpy_and_has_gradients(toy_face_model):
    params = _posed_params(toy_face_model, [[20, 5, -3], [-50, 10, 8]]).astype(np.float32)
    pts_np = g.landmarks(params, toy_face_model)
    p = torch.from_numpy(params).requires_grad_(True)
    pts_t = g.landmarks(p, toy_face_model)
    np.testing.assert_allclose(pts_t.detach().numpy(), pts_np, rtol=1e-5, atol=1e-4)
    pts_t.sum().backward()
    assert p.grad is not None and torch.isfinite(p.grad).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numpy_and_torch_give_the_same_geometry(toy_face_model, dtype):
    """One implementation (array API): numpy in -> numpy out, torch in -> torch out, same numbers."""
    fm = toy_face_model
    params = _posed_params(fm, [[20, 5, -3], [-89.995, 10, 8], [60, -40, 30]]).astype(dtype)
    t = torch.from_numpy(params)
    tol = {"rtol": 1e-5, "atol": 1e-4} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-9}
    for fn in (lambda p: g.landmarks(p, fm), g.euler_angles, lambda p: g.dewhiten(p, fm), lambda p: g.landmarks(p[0], fm),
               lambda p: g.euler_to_rotation(p[:, :3] * 100)):
        got_np, got_t = fn(params), fn(t)
        assert type(got_np) is np.ndarray and got_np.dtype == dtype
        assert isinstance(got_t, torch.Tensor) and got_t.dtype == t.dtype
        np.testing.assert_allclose(got_t.numpy(), got_np, **tol)


def test_geometry_gradients_are_the_derivatives(toy_face_model):
    """Autograd through the array-API code: analytic gradients match finite differences (float64)."""
    fm = toy_face_model
    params = torch.from_numpy(_posed_params(fm, [[20, 5, -3], [-50, 10, 8]]))
    params[:, 12:] *= 0.1
    assert torch.autograd.gradcheck(lambda p: g.landmarks(g.dewhiten(p, fm), fm), g.whiten(params, fm).requires_grad_())
    assert torch.autograd.gradcheck(g.euler_angles, params.clone().requires_grad_())
    angles = torch.tensor([[30.0, -20.0, 10.0]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(g.euler_to_rotation, angles)


@pytest.mark.parametrize("angles", [[0, 0, 0], [35, -12, 8], [-70, 25, -30], [89.5, 10, 0], [10, 60, 40]])
def test_euler_roundtrip(angles):
    params = _posed_params(None, angles)
    np.testing.assert_allclose(g.euler_angles(params)[0], angles, atol=1e-6)


def test_euler_hand_value_pure_yaw():
    # Pose_Para convention: R = (Rz Ry Rx)^T; a pure yaw of +30 degrees has R[0, 2] = -sin(30)
    params = np.zeros(62)
    c, s = np.cos(np.radians(30)), np.sin(np.radians(30))
    params[:12] = [c, 0, -s, 0, 0, 1, 0, 0, s, 0, c, 0]
    np.testing.assert_allclose(g.euler_angles(params), [30, 0, 0], atol=1e-9)


def test_euler_is_scale_invariant():
    a = _posed_params(None, [25, -10, 5], scale=0.001)
    b = _posed_params(None, [25, -10, 5], scale=3.0)
    np.testing.assert_allclose(g.euler_angles(a), g.euler_angles(b), atol=1e-6)


@pytest.mark.parametrize("dims", [3, 2])
def test_fit_recovers_landmarks(toy_face_model, dims):
    fm = toy_face_model
    params = _posed_params(fm, [[30, 10, -5], [-75, -20, 15], [0, 0, 0]], seed=3)
    params[:, 12:] *= 0.5
    pts = g.landmarks(params, fm)
    fitted = fit_params(pts[..., :dims], fm, iterations=30)
    assert fitted.shape == (3, 62)
    err = np.abs(g.landmarks(fitted, fm)[..., :2] - pts[..., :2]).max()
    assert err < 0.5, err  # pixels, on a ~120 px crop
    np.testing.assert_allclose(g.euler_angles(fitted), g.euler_angles(params), atol=2.0)


def test_fit_accepts_torch_and_single_face(toy_face_model):
    params = _posed_params(toy_face_model, [10, 0, 0])[0]
    pts = torch.from_numpy(g.landmarks(params, toy_face_model))
    fitted = fit_params(pts, toy_face_model)
    assert isinstance(fitted, torch.Tensor) and fitted.shape == (62,)


def test_fit_rejects_wrong_shape(toy_face_model):
    with pytest.raises(ValueError, match="68"):
        fit_params(np.zeros((5, 21, 2)), toy_face_model)
