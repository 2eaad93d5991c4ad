"""edgefa.training.pack_data: a compact copy of the training inputs that the readers load like the original."""
from __future__ import annotations

import tarfile

import cv2
import numpy as np

from edgefa.data.aflw_train import AFLWTrain
from edgefa.training.pack_data import main as pack_main


def _fake_shared(root, n=4):
    rng = np.random.default_rng(0)
    crops = root / "data" / "aflw-train" / "crops"
    crops.mkdir(parents=True)
    names = []
    for i in range(n):
        image = cv2.GaussianBlur(rng.integers(0, 256, (120, 120, 3), dtype=np.uint8), (0, 0), 3)  # photo-like
        names.append(f"image{i:05d}.jpg")
        cv2.imwrite(str(crops / names[-1]), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    aflw = crops.parent
    (aflw / "train.list").write_text("\n".join(names) + "\n")
    np.save(aflw / "pts21.npy", rng.uniform(0, 400, (n, 2, 21)).astype(np.float32))
    np.save(aflw / "roi_box.npy", np.tile(np.array([10, 20, 250, 260], np.float32), (n, 1)))
    np.save(aflw / "yaws.npy", rng.uniform(-90, 90, n).astype(np.float32))
    (root / "data" / "bfm68").mkdir()
    (root / "data" / "bfm68" / "u_base.txt").write_text("0\n")
    (root / "peers" / "3ddfa_v2_mb05").mkdir(parents=True)
    (root / "peers" / "3ddfa_v2_mb05" / "mb05_120x120.pth").write_bytes(b"weights")
    return aflw


def test_pack_reads_like_the_original_and_archives_to_one_file(tmp_path, capsys):
    src = _fake_shared(tmp_path / "shared")
    out = tmp_path / "pack"
    assert pack_main([str(out), "--shared", str(tmp_path / "shared"), "--archive"]) == 0
    original, packed = AFLWTrain(src), AFLWTrain(out / "data" / "aflw-train")
    assert len(packed) == len(original) == 4
    for i in range(len(original)):
        a, b = original[i], packed[i]
        for key in ("pts21", "pose", "roi_box"):
            np.testing.assert_array_equal(a[key], b[key])
        assert np.abs(a["image"].astype(int) - b["image"].astype(int)).mean() < 5  # WebP q50 of the JPEG
    assert (out / "peers" / "3ddfa_v2_mb05" / "mb05_120x120.pth").read_bytes() == b"weights"
    with tarfile.open(tmp_path / "pack.tgz") as tar:
        names = tar.getnames()
    assert "data/aflw-train/crops.bin" in names and "data/bfm68/u_base.txt" in names
    assert not (out / "data" / "aflw-train" / "crops").exists()  # one blob travels, not a file per crop
    # a split reads its own crops out of the blob
    val = AFLWTrain(out / "data" / "aflw-train", split="val")
    np.testing.assert_array_equal(val[0]["image"], packed[0]["image"])
    assert not list(tmp_path.glob("*.partial"))


def test_pack_bad_input_is_one_line_and_leaves_nothing(tmp_path, capsys):
    assert pack_main([str(tmp_path / "pack"), "--shared", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert "nowhere" in err and "not found" in err and len(err.splitlines()) == 1
    src = _fake_shared(tmp_path / "shared")
    (src / "crops" / "image00002.jpg").write_bytes(b"not an image")
    assert pack_main([str(tmp_path / "pack"), "--shared", str(tmp_path / "shared")]) == 2
    assert "image00002.jpg: not a readable image" in capsys.readouterr().err
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    (src / "crops" / "image00002.jpg").unlink()
    assert pack_main([str(tmp_path / "pack"), "--shared", str(tmp_path / "shared"), "--labels", str(tmp_path / "bad.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert "bad.npz: not a readable labels file" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "pack").exists() and not (tmp_path / "pack.partial").exists()


def test_pack_carries_compact_labels_that_read_back_the_same(tmp_path, bfm68):
    """--labels packs params only; the reader derives the 68 points and angles from them again."""
    import shutil

    from edgefa.data.labels import read_labels, save_labels
    from edgefa.paths import find_bfm68

    src = _fake_shared(tmp_path / "shared")
    shutil.rmtree(tmp_path / "shared" / "data" / "bfm68")
    shutil.copytree(find_bfm68(), tmp_path / "shared" / "data" / "bfm68")
    names = (src / "train.list").read_text().split()
    rng = np.random.default_rng(1)
    params = np.tile(bfm68.param_mean, (len(names), 2, 1)) + rng.normal(0, 0.3, (len(names), 2, 62)) * bfm68.param_std
    save_labels(tmp_path / "labels.npz", names, params, bfm68, {"format": "edgefa-aflw-labels/1", "face_model": "bfm68"})
    out = tmp_path / "pack"
    assert pack_main([str(out), "--shared", str(tmp_path / "shared"), "--labels", str(tmp_path / "labels.npz")]) == 0
    packed = out / "labels.npz"
    full, compact = read_labels(tmp_path / "labels.npz", names[::-1]), read_labels(packed, names[::-1])
    # fp16 whitened params: landmarks within 0.1 px of the originals, angles within 0.05 degrees
    np.testing.assert_allclose(compact["pts68"], full["pts68"], atol=0.1)
    np.testing.assert_allclose(compact["pose"], full["pose"], atol=0.05)
    assert not np.array_equal(compact["pts68"], full["pts68"])  # it is the derived copy being read
    ds = AFLWTrain(out / "data" / "aflw-train", labels=str(packed))
    np.testing.assert_allclose(ds[2]["params"], params[2, 0], rtol=2e-3, atol=1e-3 * bfm68.param_std.max())
