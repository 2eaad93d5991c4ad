"""The evaluator reproduces the 3DDFA-V2 peer's published AFLW2000-3D numbers (needs ../shared)."""
import json

import numpy as np
import pytest

from edgefa.app.cli import main
from edgefa.data.aflw2000 import AFLW2000Crops, AFLW2000Original
from edgefa.data.base import crop_to_original, original_to_crop
from edgefa.evaluate import evaluate
from edgefa.facemodel.fit import fit_params
from edgefa.facemodel.geometry import euler_angles, landmarks
from edgefa.metrics import nme, nme_by_yaw, pose_mae
from edgefa.predictor import load_predictor

pytestmark = pytest.mark.shared


@pytest.fixture(scope="module")
def crop_result(peer_checkpoint, aflw2000_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "out.json"
    code = main(["eval", "--model", f"3ddfa-v2-mb05:{peer_checkpoint}", "--data", f"aflw2000-3d:{aflw2000_root}",
                 "--json", str(out), "--quiet"])
    assert code == 0
    return json.loads(out.read_text())


def test_peer_reproduces_published_nme(crop_result):
    blk = crop_result["nme"]
    assert blk["counts"] == {"[0,30]": 1312, "(30,60]": 383, "(60,90]": 305}
    for got, want in zip(blk["bins"].values(), (2.925, 3.667, 4.784)):
        assert got == pytest.approx(want, abs=0.01)
    assert blk["balanced_mean"] == pytest.approx(3.792, abs=0.01)
    assert len(blk["per_face"]) == 2000
    assert blk["plain_mean"] == pytest.approx(np.mean(blk["per_face"]), abs=1e-3)
    assert "nme_reannotated" in crop_result


def test_peer_pose_mae_is_sane(crop_result):
    # a face model whose Euler convention were off would show 10-25 degree pitch/roll errors
    pose = crop_result["pose_mae"]
    assert pose["count"] == 1994
    assert pose["yaw"] < 4.5 and pose["pitch"] < 7 and pose["roll"] < 5.5


def test_original_images_cropped_by_roi_agree(peer_checkpoint, aflw2000_root, crop_result):
    predictor = load_predictor(f"3ddfa-v2-mb05:{peer_checkpoint}")
    result = evaluate(predictor, AFLW2000Original(aflw2000_root, box="roi"), progress=False)
    for got, want in zip(result["nme"]["bins"].values(), crop_result["nme"]["bins"].values()):
        assert got == pytest.approx(want, abs=0.05)
    assert result["nme"]["balanced_mean"] == pytest.approx(crop_result["nme"]["balanced_mean"], abs=0.05)


def test_original_layout_crop_matches_protocol_crop(aflw2000_root):
    crops, original = AFLW2000Crops(aflw2000_root, n=3), AFLW2000Original(aflw2000_root, box="roi", n=3)
    for i in range(3):
        a, b = crops[i], original[i]
        np.testing.assert_allclose(a["pts68"], b["pts68"], atol=1e-3)
        # same pixels up to JPEG re-encoding of the published crops
        assert np.abs(a["image"].astype(int) - b["image"].astype(int)).mean() < 6


def test_fit_to_ground_truth_reprojects_under_2_percent(bfm68, aflw2000_root):
    ds = AFLW2000Crops(aflw2000_root)
    crop_pts = original_to_crop(ds.pts68, ds.roi_boxes, ds.size)
    params = fit_params(crop_pts, bfm68)
    back = crop_to_original(landmarks(params.astype(np.float32), bfm68), ds.roi_boxes, ds.size)
    result = nme_by_yaw(nme(back, ds.pts68), ds.yaws)
    assert result["balanced_mean"] < 2.0
    assert max(result["bins"].values()) < 2.0
    # the fitted rotations give back the ground-truth Pose_Para angles: pins the Euler convention
    pose = pose_mae(euler_angles(params), ds.poses)
    assert pose["mean"] < 2.0, pose
