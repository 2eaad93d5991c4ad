"""Bad input: one clear line naming the file/argument and the problem, exit code 2, nothing written.

One representative case per defect class of issue #24 is in benchmarks/reliability_cases.py (run by
tests/test_reliability.py and the report); the variants and the finer checks stay here."""
import pickle

import cv2
import numpy as np
import pytest
import scipy.io
import torch

from edgefa.app.cli import main
from edgefa.data.images import read_image
from edgefa.errors import EdgefaError

MODEL = "mobilenetv3_small_100"  # an untrained registry model: no files needed


def run_cli(capsys, *argv):
    code = main(list(argv))
    err = capsys.readouterr().err.strip()
    return code, err


def assert_one_line(code, err, *fragments):
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for frag in fragments:
        assert frag in lines[0], lines[0]


@pytest.fixture
def face_jpg(tmp_path):
    img = np.random.default_rng(0).integers(0, 255, (120, 120, 3), dtype=np.uint8)
    path = tmp_path / "face.jpg"
    cv2.imwrite(str(path), img)
    return path


def _folder_with(tmp_path, name, writer):
    folder = tmp_path / "faces"
    folder.mkdir(exist_ok=True)
    cv2.imwrite(str(folder / "a_good.png"), np.full((120, 120, 3), 128, np.uint8))
    writer(folder / name)
    return folder


@pytest.mark.parametrize("name,writer,problem", [
    ("b.jpg", lambda p: p.write_bytes(cv2.imencode(".jpg", np.full((120, 120, 3), 90, np.uint8))[1].tobytes()[:400]),
     "truncated JPEG"),
    ("b.png", lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20 + b"IEND"), "not a readable image"),
    ("b.png", lambda p: cv2.imwrite(str(p), np.zeros((120, 120), np.uint8)), "grayscale"),
    ("b.png", lambda p: cv2.imwrite(str(p), np.zeros((120, 120, 4), np.uint8)), "RGBA"),
    ("b.png", lambda p: cv2.imwrite(str(p), np.zeros((120, 120, 3), np.uint16)), "16-bit"),
    ("b.jpg", lambda p: p.write_bytes(b""), "empty file"),
])
def test_bad_images_give_one_line(tmp_path, capsys, name, writer, problem):
    folder = _folder_with(tmp_path, name, writer)
    out = tmp_path / "out.json"
    code, err = run_cli(capsys, "eval", "--model", MODEL, "--data", f"folder:{folder}", "--json", str(out),
                        "--quiet", "--batch", "1")
    assert_one_line(code, err, name, problem)
    assert not out.exists()  # nothing partial written
    assert list(tmp_path.glob("*.tmp")) == []


def test_read_image_accepts_colour(face_jpg):
    assert read_image(face_jpg).shape == (120, 120, 3)


def test_missing_paths(tmp_path, capsys):
    code, err = run_cli(capsys, "eval", "--model", MODEL, "--data", f"aflw2000-3d:{tmp_path / 'nope'}")
    assert_one_line(code, err, "nope", "not found")
    code, err = run_cli(capsys, "eval", "--model", str(tmp_path / "missing.pt"), "--data", "synthetic:n=2")
    assert_one_line(code, err, "missing.pt", "not found")


def test_unknown_names_suggest_closest(capsys):
    code, err = run_cli(capsys, "eval", "--model", "mobilenetv2_10", "--data", "synthetic:n=2")
    assert_one_line(code, err, "unknown model 'mobilenetv2_10'", "did you mean 'mobilenetv2_100'")
    code, err = run_cli(capsys, "eval", "--model", MODEL, "--data", "aflw2000:/x")
    assert_one_line(code, err, "unknown dataset 'aflw2000'", "did you mean 'aflw2000-3d")
    code, err = run_cli(capsys, "eval", "--model", MODEL, "--data", "synthetic:sed=1")
    assert_one_line(code, err, "unknown option 'sed'", "did you mean 'seed'")


@pytest.mark.parametrize("spec,message", [
    ("synthetic:n=-1", "option n must be a whole number >= 1 (got -1)"),  # was a silent slice
    ("synthetic:n=0", "option n must be a whole number >= 1"),
    ("synthetic:n=abc", "option n must be a whole number"),
    ("synthetic:seed=abc", "option seed must be a whole number >= 0"),
    ("synthetic:n=2,contour=maybe", "option contour must be true or false"),
])
def test_dataset_options_are_checked_before_any_work(capsys, spec, message):
    code, err = run_cli(capsys, "eval", "--model", MODEL, "--data", spec)
    assert_one_line(code, err, spec, message)


@pytest.mark.parametrize("argv,message", [
    (["eval", "--model", MODEL, "--data", "synthetic:n=2", "--batch", "0"], "argument --batch: must be >= 1, got 0"),
    (["eval", "--model", MODEL, "--data", "synthetic:n=2", "--workers", "-1"], "argument --workers: must be >= 0"),
    (["eval", "--model", MODEL, "--data", "synthetic:n=2", "--threads", "-1"], "argument --threads: must be >= 0"),
    (["eval", "--model", MODEL, "--data", "synthetic:n=2", "--batch", "abc"], "expected a whole number, got 'abc'"),
    (["bench", "x.onnx", "--timeout", "0"], "argument --timeout: must be >= 1.0"),
])
def test_numeric_flags_are_range_checked(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and "Traceback" not in err


def test_not_a_checkpoint(tmp_path, capsys):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a checkpoint" * 10)
    code, err = run_cli(capsys, "eval", "--model", str(junk), "--data", "synthetic:n=2")
    assert_one_line(code, err, "junk.pt", "not a PyTorch checkpoint")

    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    code, err = run_cli(capsys, "eval", "--model", str(other), "--data", "synthetic:n=2")
    assert_one_line(code, err, "other.pt", "not an edgefa checkpoint")


class _Evil:
    def __reduce__(self):
        return (exec, ("raise SystemExit('pwned')",))


def test_malicious_param_pickle_is_refused(tmp_path):
    from edgefa.facemodel.bfm import load_param_stats

    path = tmp_path / "param_mean_std_62d_120x120.pkl"
    path.write_bytes(pickle.dumps({"mean": _Evil()}))
    with pytest.raises(EdgefaError, match="refusing to load"):
        load_param_stats(path)


def test_label_array_length_mismatch(tmp_path, capsys):
    folder = tmp_path / "faces"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"{i}.png"), np.full((120, 120, 3), 100, np.uint8))
    np.save(folder / "labels.npy", np.zeros((2, 68, 2), np.float32))
    code, err = run_cli(capsys, "eval", "--model", MODEL, "--data", f"folder:{folder}")
    assert_one_line(code, err, "labels.npy", "2 entries", "3 images")


def test_aflw2000_label_length_mismatch(tmp_path, capsys):
    root = tmp_path / "aflw"
    (root / "labels").mkdir(parents=True)
    (root / "AFLW2000-3D_crop.list").write_text("image00002.jpg\nimage00004.jpg\n")
    np.save(root / "labels" / "AFLW2000-3D_crop.roi_box.npy", np.zeros((1, 4), np.float32))
    code, err = run_cli(capsys, "eval", "--model", MODEL, "--data", f"aflw2000-3d:{root}")
    assert_one_line(code, err, "roi_box.npy", "1 entries", "image list has 2")


def test_mat_without_expected_keys(tmp_path, capsys):
    root = tmp_path / "AFLW2000"
    root.mkdir()
    cv2.imwrite(str(root / "image00002.jpg"), np.full((450, 450, 3), 100, np.uint8))
    scipy.io.savemat(str(root / "image00002.mat"), {"Pose_Para": np.zeros((1, 7))})
    code, err = run_cli(capsys, "eval", "--model", MODEL, "--data", f"aflw2000-3d-original:{root},box=landmarks")
    assert_one_line(code, err, "image00002.mat", "missing key 'pt3d_68'")


def test_json_output_unwritable_is_reported_before_work(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, err = run_cli(capsys, "eval", "--model", MODEL, "--data", "synthetic:n=2", "--json", str(blocker / "o.json"))
    assert_one_line(code, err, "is a file")


def test_debug_shows_traceback(tmp_path):
    with pytest.raises(EdgefaError):
        main(["--debug", "eval", "--model", MODEL, "--data", f"aflw2000-3d:{tmp_path / 'nope'}"])


def test_a_nan_label_leaves_that_face_out_and_says_so(tmp_path, capsys):
    """One face with a NaN landmark must not switch NME off for the rest (it used to, silently)."""
    import json

    folder = tmp_path / "faces"
    folder.mkdir()
    rng = np.random.default_rng(0)
    labels = np.stack([np.stack(np.meshgrid(np.linspace(30, 90, 17), np.linspace(30, 90, 4)), -1).reshape(-1, 2)[:68]
                       for _ in range(3)]).astype(np.float32)
    labels[1, 5, 0] = np.nan
    for k in range(3):
        cv2.imwrite(str(folder / f"face{k}.png"), rng.integers(0, 255, (120, 120, 3), dtype=np.uint8))
    np.save(folder / "labels.npy", labels)
    out = tmp_path / "out.json"
    assert main(["eval", "--model", MODEL, "--data", f"folder:{folder}", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    block = json.loads(out.read_text())["nme"]
    assert block["faces"] == 2 and block["per_face"][1] is None and block["per_face"][0] is not None
    assert block["left_out"]["faces"] == 1 and "face1" in block["left_out"]["examples"][0]
    assert "1 of 3 faces left out" in printed and "NaN" in printed


def test_disk_full_is_one_line_naming_the_file(tmp_path, capsys, monkeypatch):
    """An OSError while writing (ENOSPC here, simulated) is one line with the path, not a traceback."""
    import errno

    import edgefa.fileio as fileio

    def full(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(fileio, "atomic_write_json", full)
    out = tmp_path / "out.json"
    code, err = run_cli(capsys, "eval", "--model", MODEL, "--data", "synthetic:n=2", "--json", str(out))
    assert_one_line(code, err, "out.json", "No space left on device")
    assert not out.exists()


def test_a_killed_runs_temp_files_are_removed_by_the_next_run(tmp_path, capsys):
    """Temp files carry their process id: the next run removes those whose process is gone and
    leaves a live process's work in progress alone."""
    import subprocess
    import sys

    from edgefa.fileio import TEMP_MARK, temp_sibling

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    dead_pid = int(dead.stdout)
    out = tmp_path / "out"
    out.mkdir()
    stale_file = out / f".face{TEMP_MARK}{dead_pid}.onnx"
    stale_file.write_bytes(b"half a file")
    stale_dir = out / f".face{TEMP_MARK}{dead_pid}.mlpackage"
    stale_dir.mkdir()
    (stale_dir / "Manifest.json").write_text("{}")
    live = temp_sibling(out / "face.onnx")  # this process: alive
    live.write_bytes(b"in progress")
    assert temp_sibling(out / "last.pt").name == f".last{TEMP_MARK}{__import__('os').getpid()}.pt"
    code, err = run_cli(capsys, "eval", "--model", MODEL, "--data", "synthetic:n=2", "--json", str(out / "r.json"))
    assert code == 0, err
    assert not stale_file.exists() and not stale_dir.exists() and live.exists()
