import cv2
import numpy as np
import pytest
import scipy.io

from edgefa.data.base import SAMPLE_KEYS, crop_to_original, original_to_crop
from edgefa.data.images import box_from_landmarks, crop_resize
from edgefa.data.registry import create_dataset
from edgefa.errors import EdgefaError
from edgefa.specs import parse_spec


def test_parse_spec():
    s = parse_spec("aflw2000-3d-original:/data/x,box=mat,n=10", {"aflw2000-3d-original"})
    assert (s.kind, s.path, s.options) == ("aflw2000-3d-original", "/data/x", {"box": "mat", "n": 10})
    s = parse_spec("synthetic:seed=0,n=500", {"synthetic"})
    assert (s.path, s.options) == (None, {"seed": 0, "n": 500})
    assert parse_spec("nothing:x", {"synthetic"}) is None
    # options without a path: the default location (the shared data) with options
    s = parse_spec("aflw2000-3d,n=64", {"aflw2000-3d", "aflw2000-3d-original"})
    assert (s.kind, s.path, s.options) == ("aflw2000-3d", None, {"n": 64})
    assert parse_spec("aflw2000-3d-original,n=5", {"aflw2000-3d", "aflw2000-3d-original"}).kind == "aflw2000-3d-original"


def test_crop_to_original_roundtrip_and_hand_value():
    box = np.array([[10.0, 20.0, 250.0, 140.0]])  # 240 x 120 px -> scale 2 x 1 from a 120 crop
    pts = np.array([[[60.0, 60.0, 6.0]]])
    orig = crop_to_original(pts, box, 120)
    np.testing.assert_allclose(orig, [[[130.0, 80.0, 9.0]]])
    np.testing.assert_allclose(original_to_crop(orig, box, 120), pts)


def test_crop_resize_pads_outside_the_image():
    img = np.full((50, 50, 3), 200, np.uint8)
    crop = crop_resize(img, (-50, 0, 50, 100), 100)  # left half outside -> black
    assert crop.shape == (100, 100, 3)
    assert crop[:, :45].max() == 0 and crop[:50, 55:].min() == 200


def test_box_from_landmarks_hand_value():
    pts = np.array([[0.0, 0.0], [10.0, 20.0]])  # square radius 10 around (5, 10), side * sqrt2
    box = box_from_landmarks(pts)
    half = 20 * np.sqrt(2) / 2
    np.testing.assert_allclose(box, [5 - half, 10 - half, 5 + half, 10 + half], rtol=1e-6)


def _write_300wlp(root):
    """A tiny fixture in the public 300W_LP layout: 2 images in AFW, 1 in AFW_Flip."""
    rng = np.random.default_rng(0)
    pts = np.stack([rng.uniform(100, 200, 68), rng.uniform(120, 220, 68)], 1)
    for sub, name in (("AFW", "AFW_1_1_0"), ("AFW", "AFW_1_1_1"), ("AFW_Flip", "AFW_1_1_0")):
        (root / sub).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / sub / f"{name}.jpg"), rng.integers(0, 255, (300, 300, 3), dtype=np.uint8))
        pose = np.array([[0.1, -0.5, 0.05, 0, 0, 0, 1.0]])
        scipy.io.savemat(str(root / sub / f"{name}.mat"), {"Pose_Para": pose, "pt2d": pts.T + 1})
    (root / "landmarks" / "AFW").mkdir(parents=True)
    scipy.io.savemat(str(root / "landmarks" / "AFW" / "AFW_1_1_0_pts.mat"), {"pts_3d": pts, "pts_2d": pts})
    return pts


def test_300w_lp_reader(tmp_path):
    root = tmp_path / "300W_LP"
    pts = _write_300wlp(root)
    ds = create_dataset(f"300w-lp:{tmp_path}")
    assert len(ds) == 3 and ds.names[0] == "AFW/AFW_1_1_0.jpg"
    s = ds[0]
    assert set(s) == set(SAMPLE_KEYS) and s["image"].shape == (120, 120, 3)
    np.testing.assert_allclose(s["pts68"][:, :2], pts, rtol=1e-5)  # pts_3d preferred
    np.testing.assert_allclose(ds[1]["pts68"][:, :2], pts + 1, rtol=1e-5)  # falls back to pt2d
    np.testing.assert_allclose(s["pose"], np.degrees([-0.5, 0.1, 0.05]), rtol=1e-5)
    # the crop box is 3DDFA-V2's box around the landmarks
    np.testing.assert_allclose(s["roi_box"], box_from_landmarks(pts), rtol=1e-5)
    assert len(create_dataset(f"300w-lp:{root},flip=false")) == 2
    with pytest.raises(EdgefaError, match="unknown subset 'HELN'"):
        create_dataset(f"300w-lp:{root},subsets=HELN")


def test_folder_reader_with_per_image_labels(tmp_path):
    img = np.zeros((200, 100, 3), np.uint8)
    cv2.imwrite(str(tmp_path / "x.png"), img)
    pts = np.stack([np.linspace(10, 90, 68), np.linspace(20, 180, 68)], 1).astype(np.float32)
    np.save(tmp_path / "x.npy", pts)
    ds = create_dataset(f"folder:{tmp_path}")
    s = ds[0]
    np.testing.assert_allclose(s["roi_box"], [0, 0, 100, 200])
    np.testing.assert_allclose(s["pts68"][:, :2], pts)
    assert np.isnan(s["pts68"][:, 2]).all()
    with pytest.raises(EdgefaError, match="expected 'image' or 'landmarks'"):
        create_dataset(f"folder:{tmp_path},box=face")


def test_folder_reader_rejects_bad_label_shape(tmp_path):
    cv2.imwrite(str(tmp_path / "x.png"), np.zeros((50, 50, 3), np.uint8))
    np.save(tmp_path / "x.npy", np.zeros((21, 2)))
    with pytest.raises(EdgefaError, match=r"x.npy: landmarks have shape \(21, 2\)"):
        create_dataset(f"folder:{tmp_path}")[0]


@pytest.mark.shared
def test_aflw_train_reader():
    from tests.conftest import shared_path

    ds = create_dataset(f"aflw-train:{shared_path('data', 'aflw-train')},n=50")
    assert len(ds) == 50
    s = ds[0]
    assert s["image"].shape == (120, 120, 3)
    assert np.isnan(s["pts68"]).all() and np.isnan(s["params"]).all()
    visible = ~np.isnan(s["pts21"][:, 0])
    assert visible.sum() >= 3
    # visible points fall inside the crop box in original pixels
    x1, y1, x2, y2 = s["roi_box"]
    vis = s["pts21"][visible]
    assert ((vis[:, 0] >= x1) & (vis[:, 0] <= x2) & (vis[:, 1] >= y1) & (vis[:, 1] <= y2)).all()
    assert -100 <= s["pose"][0] <= 100 and np.isnan(s["pose"][1])
    full = create_dataset(f"aflw-train:{shared_path('data', 'aflw-train')}")
    assert len(full) == 18392 and np.isnan(full.pts21[..., 0]).any()
    assert full.yaws.min() < -60 and full.yaws.max() > 60  # signed, despite the README's "|yaw|"
    val = create_dataset(f"aflw-train:{shared_path('data', 'aflw-train')},split=val")
    train = create_dataset(f"aflw-train:{shared_path('data', 'aflw-train')},split=train")
    assert len(val) + len(train) == 18392 and not set(val.names) & set(train.names)
