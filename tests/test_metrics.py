import numpy as np
import pytest

from edgefa.metrics import auc, ced_curve, nme, nme_by_yaw, pose_mae, yaw_bin_index


def test_nme_hand_value():
    gt = np.zeros((1, 68, 3))
    gt[0, :, 0] = np.linspace(0, 40, 68)  # bbox 40 wide
    gt[0, :, 1] = np.linspace(0, 10, 68)  # 10 high -> sqrt(w*h) = 20
    pred = gt.copy()[..., :2]
    pred[..., 0] += 3
    pred[..., 1] += 4  # every point 5 px off -> NME = 5 / 20 = 25 %
    np.testing.assert_allclose(nme(pred, gt), [25.0])


def test_nme_uses_only_xy():
    gt = np.random.default_rng(0).uniform(0, 100, (2, 68, 3))
    pred = gt.copy()
    pred[..., 2] += 50
    np.testing.assert_allclose(nme(pred, gt), [0.0, 0.0])


def test_yaw_bins_edges_follow_3ddfa():
    assert yaw_bin_index(np.array([0, 30, 30.01, -45, 60, 60.5, -95])).tolist() == [0, 0, 1, 1, 1, 2, 2]


def test_nme_by_yaw_hand_values():
    nmes = np.array([1.0, 3.0, 4.0, 10.0])
    yaws = np.array([10.0, -20.0, 45.0, 80.0])
    r = nme_by_yaw(nmes, yaws)
    assert r["bins"] == {"[0,30]": 2.0, "(30,60]": 4.0, "(60,90]": 10.0}
    assert r["counts"] == {"[0,30]": 2, "(30,60]": 1, "(60,90]": 1}
    assert r["balanced_mean"] == pytest.approx(16 / 3)
    assert r["plain_mean"] == pytest.approx(4.5)
    assert r["bin_std"] == pytest.approx(np.std([2.0, 4.0, 10.0]))


def test_pose_mae_drops_yaw_over_99_and_nan():
    gt = np.array([[10.0, 5.0, 1.0], [-100.0, 0.0, 0.0], [50.0, np.nan, 2.0]])
    pred = np.array([[12.0, 2.0, 1.0], [0.0, 0.0, 0.0], [44.0, 9.0, 0.0]])
    r = pose_mae(pred, gt)
    assert r["count"] == 2
    assert r["yaw"] == pytest.approx((2 + 6) / 2)
    assert r["pitch"] == pytest.approx(3.0)  # the NaN pitch is skipped
    assert r["roll"] == pytest.approx((0 + 2) / 2)
    assert r["mean"] == pytest.approx((4 + 3 + 1) / 3)


def test_ced_and_auc_hand_values():
    nmes = np.array([1.0, 2.0, 3.0, 100.0])
    x, y = ced_curve(nmes, max_nme=7.0, steps=8)
    assert x.tolist() == [0, 1, 2, 3, 4, 5, 6, 7]
    assert y.tolist() == [0, 0.25, 0.5, 0.75, 0.75, 0.75, 0.75, 0.75]
    # all faces at 0 error -> AUC 1; all beyond 7 % -> 0
    assert auc(np.zeros(5)) == pytest.approx(1.0)
    assert auc(np.full(5, 8.0)) == 0.0
    # uniform errors in [0, 7] -> area ~ 1/2
    assert auc(np.linspace(0, 7, 10001)) == pytest.approx(0.5, abs=1e-3)
