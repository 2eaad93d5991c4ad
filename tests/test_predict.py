"""Photo -> faces: the detector decode, the crop rules, FaceAligner and `edgefa predict`."""
import json

import cv2
import numpy as np
import pytest

from edgefa.app.cli import main
from edgefa.detect import create_detector
from edgefa.detect.blazeface import box_iou, ssd_anchors, weighted_nms
from edgefa.detect.crop import FROM_LANDMARKS_ON_LABELS, LANDMARKS_3DDFA_V2, CropRule, landmark_box
from edgefa.errors import EdgefaError

from .conftest import shared_path

MODEL = "mobilenetv3_small_100"  # untrained registry model: the plumbing, no files needed
FACE_KEYS = {"box", "score", "landmarks", "pose", "params", "crop_box"}


def synthetic_crops(n=2):
    from edgefa.data.synthetic import SyntheticFaces

    ds = SyntheticFaces(n=n, seed=3)
    return [ds[i]["image"] for i in range(n)]


def assert_face_schema(face):
    assert set(face) == FACE_KEYS
    assert len(face["box"]) == 4 and len(face["crop_box"]) == 4 and len(face["params"]) == 62
    assert np.asarray(face["landmarks"]).shape == (68, 3)
    assert set(face["pose"]) == {"yaw", "pitch", "roll"}


def test_anchors_match_mediapipe_short_range_layout():
    anchors = ssd_anchors()
    assert anchors.shape == (896, 2)  # 16x16 cells x 2 + 8x8 cells x 6
    assert np.allclose(anchors[0], [0.5 / 16, 0.5 / 16]) and np.allclose(anchors[512], [0.5 / 8, 0.5 / 8])
    assert (anchors > 0).all() and (anchors < 1).all()


def test_weighted_nms_averages_overlaps_and_keeps_separate_faces():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], np.float32)
    kps = np.zeros((3, 6, 2), np.float32)
    kept = weighted_nms(boxes, kps, np.array([0.9, 0.6, 0.8]), iou=0.3)
    assert len(kept) == 2
    assert kept[0][2] == pytest.approx(0.9) and kept[0][0][0] == pytest.approx(0.6 / 1.5)  # score-weighted x1
    assert box_iou(kept[1][0], boxes[2:3])[0] == pytest.approx(1.0)


def test_crop_rules_are_square_and_near_3ddfa_v2s():
    box = np.array([10, 20, 70, 100], np.float32)  # 60 x 80
    crop = CropRule(0.1, -0.05, 1.5)(box)
    assert crop[2] - crop[0] == pytest.approx(120) and crop[3] - crop[1] == pytest.approx(120)
    assert (crop[0] + crop[2]) / 2 == pytest.approx(40 + 8) and (crop[1] + crop[3]) / 2 == pytest.approx(60 - 4)
    # the rule fitted on aflw-train is 3DDFA-V2's landmark rule within 2 % of the size
    assert abs(FROM_LANDMARKS_ON_LABELS.scale - LANDMARKS_3DDFA_V2.scale) < 0.03 and abs(FROM_LANDMARKS_ON_LABELS.dx) < 0.01
    pts = np.array([[0, 0, 5], [10, 20, 1]], np.float32)
    assert landmark_box(pts).tolist() == [0, 0, 10, 20]


def test_detector_specs_are_checked():
    with pytest.raises(EdgefaError, match="did you mean 'blazeface'"):
        create_detector("blazefce")
    with pytest.raises(EdgefaError, match="takes no path"):
        create_detector("none:x.tflite")
    with pytest.raises(EdgefaError, match="file not found"):
        create_detector("blazeface:/nonexistent/face.tflite")


def test_missing_blazeface_file_says_where_it_looked(monkeypatch, tmp_path):
    import edgefa.detect as detect

    monkeypatch.setenv("EDGEFA_SHARED", str(tmp_path))
    monkeypatch.delenv("EDGEFA_FACE_DETECTOR", raising=False)
    monkeypatch.setattr(detect.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(EdgefaError, match="EDGEFA_FACE_DETECTOR.*--detector none"):
        create_detector("blazeface")


def test_face_aligner_on_crops_maps_back_to_image_pixels():
    from edgefa import FaceAligner

    crop = synthetic_crops(1)[0]
    big = cv2.resize(crop, (240, 240), interpolation=cv2.INTER_LINEAR)
    aligner = FaceAligner(MODEL, detector="none")
    small, large = aligner(crop)[0], aligner(big)[0]
    assert small.landmarks.shape == (68, 3) and small.params.shape == (62,)
    # the same face at twice the size: same crop content, landmarks twice as far (up to resampling)
    assert np.abs(large.landmarks[:, :2] - 2 * small.landmarks[:, :2]).max() < 2.0
    assert np.allclose(large.pose, small.pose, atol=1.0)
    with pytest.raises(EdgefaError, match="BGR uint8"):
        aligner(crop.astype(np.float32))


def test_predict_folder_json_schema_and_overlays(tmp_path, capsys):
    src = tmp_path / "photos"
    src.mkdir()
    for k, crop in enumerate(synthetic_crops(2)):
        cv2.imwrite(str(src / f"face{k}.png"), crop)
    (src / "notes.txt").write_text("not an image")
    out_json, save = tmp_path / "faces.json", tmp_path / "drawn"
    code = main(["predict", "--model", MODEL, "--source", str(src), "--detector", "none", "--json", str(out_json),
                 "--save", str(save), "--quiet"])
    assert code == 0, capsys.readouterr().err
    record = json.loads(out_json.read_text())
    assert [e["path"] for e in record["images"]] == [str(src / "face0.png"), str(src / "face1.png")]
    for entry in record["images"]:
        assert entry["width"] == entry["height"] == 120 and len(entry["faces"]) == 1
        assert_face_schema(entry["faces"][0])
    drawn = sorted(p.name for p in save.iterdir())
    assert drawn == ["face0.png", "face1.png"]
    assert not np.array_equal(cv2.imread(str(save / "face0.png")), cv2.imread(str(src / "face0.png")))


def test_predict_video_tracks_every_frame(tmp_path, capsys):
    crop = cv2.resize(synthetic_crops(1)[0], (160, 160))
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 160))
    for shift in range(5):
        writer.write(np.roll(crop, shift, axis=1))
    writer.release()
    out_json = tmp_path / "clip.json"
    code = main(["predict", "--model", MODEL, "--source", str(video), "--detector", "none", "--json", str(out_json),
                 "--save", str(tmp_path / "drawn"), "--smooth", "0.5", "--redetect-every", "2", "--quiet"])
    assert code == 0, capsys.readouterr().err
    frames = json.loads(out_json.read_text())["images"]
    assert [f["frame"] for f in frames] == [0, 1, 2, 3, 4]
    assert all(len(f["faces"]) == 1 for f in frames)
    drawn = tmp_path / "drawn" / "clip.mp4"
    capture = cv2.VideoCapture(str(drawn))
    assert capture.isOpened() and int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 5
    assert not [p for p in (tmp_path / "drawn").iterdir() if p.name.startswith(".")]  # no temp left


@pytest.mark.parametrize("name,data,fragment", [
    ("broken.jpg", b"\xff\xd8\xff\xe0 not really a jpeg", "broken.jpg"),
    ("broken.mp4", b"\x00\x00\x00\x18ftypmp42 garbage", "not a readable video"),
])
def test_predict_bad_file_is_one_line(tmp_path, capsys, name, data, fragment):
    path = tmp_path / name
    path.write_bytes(data)
    out_json = tmp_path / "out.json"
    code = main(["predict", "--model", MODEL, "--source", str(path), "--detector", "none", "--json", str(out_json)])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 2 and len(err) == 1 and fragment in err[0], err
    assert not out_json.exists()


def test_predict_skips_a_bad_file_among_good_ones(tmp_path, capsys):
    cv2.imwrite(str(tmp_path / "a.png"), synthetic_crops(1)[0])
    (tmp_path / "b.jpg").write_bytes(b"junk")
    out_json = tmp_path / "out.json"
    code = main(["predict", "--model", MODEL, "--source", str(tmp_path / "*.*g"), "--detector", "none",
                 "--json", str(out_json), "--quiet"])
    captured = capsys.readouterr()
    assert code == 1 and "skipped" in captured.err and "b.jpg" in captured.err
    record = json.loads(out_json.read_text())
    assert len(record["images"]) == 1 and "b.jpg" in record["skipped"][0]


def test_predict_bad_flags_name_the_flag(capsys):
    for flag, value in (("--smooth", "1.5"), ("--passes", "0"), ("--redetect-every", "0")):
        with pytest.raises(SystemExit):
            main(["predict", "--model", MODEL, "--source", "x.jpg", flag, value])
        assert f"argument {flag}:" in capsys.readouterr().err.splitlines()[-1]


def test_predict_source_errors(tmp_path, capsys):
    for source, fragment in ((str(tmp_path / "nope.jpg"), "no such file"), (str(tmp_path / "*.png"), "matches no"),
                             (str(tmp_path), "no images or videos")):
        code = main(["predict", "--model", MODEL, "--source", source, "--detector", "none"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and fragment in err[0], err


# --- with the real detector and model (../shared) ---

@pytest.fixture(scope="module")
def real_aligner():
    from edgefa import FaceAligner

    detector = shared_path("peers", "mediapipe_face", "face_detection_short_range.tflite")
    shared_path("data", "bfm68")  # the committed ONNX file's face model
    return FaceAligner("reports/models/mobilenetv3-small.onnx", detector=f"blazeface:{detector}", threads=1)


def aflw_image(root, stem):
    from edgefa.data.images import read_image

    return read_image(root / "AFLW2000" / f"{stem}.jpg")


def test_blazeface_finds_each_face_and_none_in_a_blank_image(real_aligner, aflw2000_root):
    a, b = aflw_image(aflw2000_root, "image00002"), aflw_image(aflw2000_root, "image00004")
    two = np.concatenate([a, b], axis=1)  # a 900 x 450 photo with two people
    faces = real_aligner(two)
    assert len(faces) == 2
    centres = sorted(float(f.landmarks[:, 0].mean()) for f in faces)
    assert centres[0] < 450 < centres[1]
    assert real_aligner(np.full((300, 400, 3), 127, np.uint8)) == []


def test_full_image_landmarks_match_the_labels(real_aligner, aflw2000_root):
    from edgefa.data.aflw2000 import AFLW2000Crops
    from edgefa.metrics import nme

    ds = AFLW2000Crops(aflw2000_root, n=20)
    errors = []
    for i, name in enumerate(ds.names):
        faces = real_aligner(aflw_image(aflw2000_root, name.rsplit(".", 1)[0]))
        best = max(faces, key=lambda f: box_iou(landmark_box(ds.pts68[i]), landmark_box(f.landmarks)[None])[0])
        errors.append(nme(best.landmarks[None], ds.pts68[i][None])[0])
    assert np.median(errors) < 5.0  # the protocol crops give ~3.5 on these faces


def test_predict_no_face_photo_is_an_empty_list(real_aligner, tmp_path, capsys):
    blank = tmp_path / "wall.jpg"
    cv2.imwrite(str(blank), np.full((240, 320, 3), 90, np.uint8))
    out_json = tmp_path / "out.json"
    code = main(["predict", "--model", "reports/models/mobilenetv3-small.onnx", "--source", str(blank),
                 "--detector", f"blazeface:{real_aligner.detector.path}", "--json", str(out_json), "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert json.loads(out_json.read_text())["images"][0]["faces"] == []
