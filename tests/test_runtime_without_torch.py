"""The runtime install (``pip install edgefa[runtime]``: no torch, timm or torchvision) runs an exported
file: in a process where those cannot be imported, an .onnx file gives the same landmarks and pose as
with torch installed; and the numpy input preparation it uses matches the torch one."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from edgefa.errors import EdgefaError
from edgefa.models.inputs import prepare_tensor
from edgefa.runtime.inputs import prepare_input

ROOT = Path(__file__).resolve().parent.parent

# the child process: torch, timm and torchvision (and their submodules) cannot be imported
CHILD = textwrap.dedent("""
    import sys

    BLOCKED = ("torch", "timm", "torchvision")

    class BlockTraining:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)  # as when not installed
            return None

    sys.meta_path.insert(0, BlockTraining())
    import numpy as np

    from edgefa.predictor import load_predictor

    crops = np.load(sys.argv[2])
    results = {}
    for i, path in enumerate(sys.argv[3:]):
        predictor = load_predictor(path, threads=1)
        lms, pose = predictor.predict_geometry(crops)
        results[f"lms{i}"], results[f"pose{i}"], results[f"params{i}"] = lms, pose, predictor.predict(crops)
    np.savez(sys.argv[1], **results)
    print("loaded:", " ".join(sorted(m for m in BLOCKED if m in sys.modules)) or "none of " + ", ".join(BLOCKED))
""")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A small seeded model exported to ONNX bare (numpy geometry in the runtime) and with in-graph
    post-processing; the model itself for the reference; synthetic crops."""
    from edgefa.converters.export import run_export
    from edgefa.data.synthetic import SyntheticFaces
    from edgefa.facemodel.synthetic import synthetic_face_model
    from edgefa.models.checkpoint import save_checkpoint
    from edgefa.models.registry import create_model

    out = tmp_path_factory.mktemp("runtime")
    torch.manual_seed(0)
    model = create_model("mobilenetv3_small_100", input_size=64)  # 120 px crops, resized in the input prep
    torch.nn.init.normal_(model.net.get_classifier().weight, std=0.05)  # outputs that vary per face
    save_checkpoint(out / "m.pt", model, synthetic_face_model())
    files = []
    for postprocess in (False, True):
        rows, _ = run_export(str(out / "m.pt"), "onnx", "fp32", out / f"post{int(postprocess)}", parity_n=2,
                             postprocess=postprocess, progress=lambda _: None)
        assert rows[0].status == "ok", rows[0].reason
        files.append(rows[0].file)
    data = SyntheticFaces(n=3, seed=5)
    return files, model, np.stack([data[i]["image"] for i in range(3)]), out


def test_exported_file_runs_without_torch(exported):
    from edgefa.facemodel.synthetic import synthetic_face_model
    from edgefa.predictor import TorchPredictor
    from edgefa.runtime.artifact import ArtifactPredictor

    files, model, crops, out = exported
    np.save(out / "crops.npy", crops)
    proc = subprocess.run([sys.executable, "-c", CHILD, str(out / "child.npz"), str(out / "crops.npy"), *map(str, files)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "loaded: none of torch, timm, torchvision" in proc.stdout
    child = np.load(out / "child.npz")
    ref_lms, ref_pose = TorchPredictor(model, synthetic_face_model(), "m").predict_geometry(crops)
    for i, path in enumerate(files):
        parent = ArtifactPredictor(path, threads=1)  # with torch importable: the same file, the same numbers
        lms, pose = parent.predict_geometry(crops)
        np.testing.assert_array_equal(child[f"lms{i}"], lms)
        np.testing.assert_array_equal(child[f"pose{i}"], pose)
        np.testing.assert_array_equal(child[f"params{i}"], parent.predict(crops))
        assert lms.shape == (3, 68, 3) and pose.shape == (3, 3)
        np.testing.assert_allclose(lms, ref_lms, atol=1e-2)  # and what the PyTorch model gives
        np.testing.assert_allclose(pose, ref_pose, atol=1e-2)


@pytest.mark.parametrize("src, dst", [(120, 64), (120, 96), (120, 120), (64, 120), (120, 224)])
@pytest.mark.parametrize("layout, dtype, color", [("NCHW", "float32", "RGB"), ("NHWC", "float32", "BGR"),
                                                  ("NHWC", "uint8", "RGB")])
def test_numpy_input_prep_matches_torch(src, dst, layout, dtype, color):
    """cv2 INTER_LINEAR (the runtimes) vs interpolate(bilinear, align_corners=False) (training): the same
    grid; measured identical when shrinking, <= 2e-5 (normalised units, 0.003 grey levels) when enlarging."""
    crops = np.random.default_rng(src + dst).integers(0, 256, (3, src, src, 3), dtype=np.uint8)
    spec = {"size": [dst, dst], "layout": layout, "dtype": dtype, "color": color,
            "mean": [127.5, 120.0, 110.0], "std": [128.0, 60.0, 70.0]}
    got = prepare_input(crops, spec)
    ref = prepare_tensor(torch.from_numpy(crops), spec).numpy()
    assert got.dtype == ref.dtype == np.dtype(dtype) and got.shape == ref.shape and got.flags.c_contiguous
    assert got.shape == ((3, 3, dst, dst) if layout == "NCHW" else (3, dst, dst, 3))
    diff = np.abs(got.astype(np.float64) - ref.astype(np.float64))
    if dst <= src:
        assert diff.max() == 0
    elif dtype == "uint8":  # a value a hair either side of .5 rounds apart: one grey level, < 1% of values
        assert diff.max() <= 1 and (diff > 0).mean() < 0.01
    else:
        assert diff.max() < 1e-4


def test_input_prep_hand_values():
    crops = np.zeros((1, 2, 2, 3), np.uint8)
    crops[..., 0], crops[..., 2] = 10, 250  # B = 10, R = 250
    spec = {"size": [2, 2], "layout": "NCHW", "dtype": "float32", "color": "RGB", "mean": [10.0] * 3, "std": [2.0] * 3}
    got = prepare_input(crops, spec)
    np.testing.assert_array_equal(got[0, :, 0, 0], [120, -5, 0])  # R first: (250 - 10) / 2


@pytest.mark.parametrize("key, value, message", [("layout", "CHW", "layout 'CHW' is not one of NCHW, NHWC"),
                                                 ("size", [64], "size [64] is not [height, width]"),
                                                 ("std", [1.0, 0.0, 1.0], "std non-zero"),
                                                 ("color", None, "color None")])
def test_bad_input_spec_is_one_line(key, value, message):
    spec = {"size": [64, 64], "layout": "NCHW", "dtype": "float32", "color": "RGB", "mean": [0.0] * 3, "std": [1.0] * 3}
    spec[key] = value
    with pytest.raises(EdgefaError, match="input spec") as err:
        prepare_input(np.zeros((1, 64, 64, 3), np.uint8), spec)
    assert message in str(err.value) and "\n" not in str(err.value)
    del spec[key]
    with pytest.raises(EdgefaError, match=f"missing '{key}'"):
        prepare_input(np.zeros((1, 64, 64, 3), np.uint8), spec)


def test_predict_and_face_aligner_run_without_torch(exported):
    """`edgefa predict`, `edgefa eval` and `FaceAligner` on an exported file in the runtime install (no
    torch); what needs torch says how to get it in one line."""
    import json

    import cv2

    files, _, crops, out = exported
    cv2.imwrite(str(out / "face.png"), crops[0])
    child = CHILD.split("import numpy as np")[0] + textwrap.dedent("""
        from edgefa.app.cli import main
        import edgefa

        code = main(["predict", "--model", sys.argv[1], "--source", sys.argv[2], "--detector", "none",
                     "--json", sys.argv[3], "--save", sys.argv[4], "--quiet"])
        faces = edgefa.FaceAligner(sys.argv[1], detector="none")(__import__("cv2").imread(sys.argv[2]))
        print("exit", code, "faces", len(faces), "torch" in sys.modules)
        print("eval exit", main(["eval", "--model", sys.argv[1], "--data", "synthetic:seed=1,n=4", "--quiet"]))
        print("train exit", main(["train", "--config", "training/configs/synthetic-quick.yaml"]))
    """)
    proc = subprocess.run([sys.executable, "-c", child, files[1], str(out / "face.png"), str(out / "faces.json"),
                           str(out / "drawn")], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "exit 0 faces 1 False" in proc.stdout
    assert "eval exit 0" in proc.stdout and "NME" in proc.stdout  # edgefa eval on the file, no torch
    assert "train exit 2" in proc.stdout and "pip install 'edgefa[train]'" in proc.stderr  # one line, no traceback
    assert "Traceback" not in proc.stderr
    face = json.loads((out / "faces.json").read_text())["images"][0]["faces"][0]
    assert np.asarray(face["landmarks"]).shape == (68, 3) and (out / "drawn" / "face.png").is_file()
