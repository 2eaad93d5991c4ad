"""Export: the format table, the exported graph's math, the parity gate, atomic writes, and the
backbone x format x precision matrix (tiny inputs; CoreML execution is skipped on Linux with the
reason, its spec is still validated)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from edgefa.app.cli import main
from edgefa.converters import parity
from edgefa.converters.export import run_export
from edgefa.converters.graph import ExportGraph
from edgefa.converters.onnx_int8 import FALLBACK_INT8, INT8_QUANTIZERS, quantizer_of_note
from edgefa.errors import EdgefaError
from edgefa.facemodel.geometry import euler_angles, euler_to_rotation, landmarks
from edgefa.models.registry import create_model, list_models
from edgefa.runtime.formats import FORMATS, get_format, plan

QUIET = {"progress": lambda _: None}


def _skip_missing(fmt_name: str) -> None:
    missing = get_format(fmt_name).missing()
    if missing:
        pytest.skip(f"format {fmt_name} needs {', '.join(missing)} (pip install 'edgefa[{get_format(fmt_name).extra}]')")


# --- the graph that gets exported ------------------------------------------------------------

def test_euler_angles_invert_euler_to_rotation_including_gimbal_lock():
    rng = np.random.default_rng(0)
    angles = np.concatenate([rng.uniform([-89, -60, -60], [89, 60, 60], (200, 3)),
                             [[90, 10, 0], [-90, -20, 0], [0, 0, 0]]])
    rot = euler_to_rotation(angles)
    scale, t = rng.uniform(1e-4, 2e-3, (len(rot), 1, 1)), rng.normal(0, 50, (len(rot), 3, 1))
    pose = torch.from_numpy(np.concatenate([rot * scale, t], axis=2))
    params = torch.zeros(len(rot), 62, dtype=torch.float64)
    params[:, :12] = pose.reshape(-1, 12)
    got = euler_angles(params.numpy())
    np.testing.assert_allclose(got[:200], angles[:200], atol=1e-6)
    # at |yaw| = 90 pitch and roll are one angle: all of it in pitch, roll 0, the same rotation
    np.testing.assert_allclose(got[200:202, [0, 2]], [[90, 0], [-90, 0]], atol=1e-4)
    np.testing.assert_allclose(euler_to_rotation(got), rot, atol=1e-6)


def test_postprocess_graph_equals_library_math(toy_face_model):
    model = create_model("mobilenetv3_small_100", input_size=64)
    graph = ExportGraph(model, toy_face_model, postprocess=True)
    rng = np.random.default_rng(1)
    params = toy_face_model.param_mean + toy_face_model.param_std * rng.normal(size=(8, 62)).astype(np.float32)
    lms, pose = graph.geometry(torch.from_numpy(params))
    np.testing.assert_allclose(lms.numpy(), landmarks(params, toy_face_model), atol=1e-3)
    np.testing.assert_allclose(pose.numpy(), euler_angles(params.astype(np.float64)), atol=1e-3)
    # uint8 RGB NHWC crop at the face model's size in, resized to the network's 64 inside
    crops = rng.integers(0, 256, (2, 120, 120, 3), dtype=np.uint8)
    with torch.no_grad():
        out = graph(torch.from_numpy(graph.prepare(crops)))
        ref = model(torch.from_numpy(ExportGraph(model, toy_face_model).prepare(crops)))
    raw = ref.numpy() * toy_face_model.param_std + toy_face_model.param_mean
    np.testing.assert_allclose(out[2].numpy(), raw, rtol=1e-4, atol=1e-4)
    assert graph.input_spec() == {"size": [120, 120], "layout": "NHWC", "dtype": "uint8", "color": "RGB",
                                  "mean": [0.0] * 3, "std": [1.0] * 3}


# --- the format table: every flag checked before any work --------------------------------------

def test_plan_checks_flags_against_the_table():
    assert [(f.name, p) for f, p in plan("onnx,tflite", "fp32,int8")] == \
        [("onnx", "fp32"), ("onnx", "int8"), ("tflite", "fp32"), ("tflite", "int8")]
    assert [p for _, p in plan("onnx,coreml", "fp16,palette4")] == ["fp16", "fp16", "palette4"]
    with pytest.raises(EdgefaError, match=r"did you mean 'tflite'"):
        plan("tflit", "fp32")
    with pytest.raises(EdgefaError, match=r"not supported by format 'onnx' \(supported: fp32, fp16, int8\)"):
        plan("onnx", "palette4")
    with pytest.raises(EdgefaError, match=r"did you mean 'fp16'"):
        plan("onnx", "fp61")


def test_missing_extra_names_the_install_command(monkeypatch):
    from dataclasses import replace

    monkeypatch.setitem(FORMATS, "tflite", replace(FORMATS["tflite"], requires=("no_such_module_xyz",)))
    with pytest.raises(EdgefaError, match=r"pip install 'edgefa\[tflite\]'"):
        run_export("mobilenetv3_small_100", "tflite", "fp32", "unused-dir", **QUIET)


@pytest.mark.parametrize("args, message", [
    (["--model", "mobilenetv3_smal_100"], "did you mean 'mobilenetv3_small_100'"),
    (["--model", "mobilenetv3_small_100", "--formats", "onxx"], "did you mean 'onnx'"),
    (["--model", "mobilenetv3_small_100", "--precision", "palette6"], "not supported by format 'onnx'"),
    (["--model", "mobilenetv3_small_100", "--eval-data", "aflw2000"], "--eval-data aflw2000: unknown dataset"),
    (["--model", "mobilenetv3_small_100", "--onnx-quantizer", "onnxrt"], "did you mean 'onnxruntime'"),
    (["--model", "mobilenetv3_small_100", "--int8-float", "stm"], "did you mean 'stem'"),
])
def test_bad_flags_are_one_line_errors(args, message, tmp_path, capsys):
    assert main(["export", *args, "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()  # rejected before any work


def test_bad_paths_are_one_line_errors(tmp_path, capsys):
    garbage = tmp_path / "broken.pt"
    garbage.write_bytes(b"not a checkpoint")
    a_file = tmp_path / "file"
    a_file.write_text("x")
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [(["--model", str(garbage), "-o", str(tmp_path / "o")], "not a PyTorch checkpoint"),
             (["--model", "mobilenetv3_small_100", "-o", str(a_file)], "output path is a file"),
             (["--model", "mobilenetv3_small_100", "--precision", "int8", "--calib-data", f"folder:{empty}",
               "-o", str(tmp_path / "o")], "--calib-data")]
    for args, message in cases:
        assert main(["export", *args]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    with pytest.raises(SystemExit) as exit_info:  # argparse checks the range: usage + one error line
        main(["export", "--model", "mobilenetv3_small_100", "--calib-n", "0", "-o", str(tmp_path / "o")])
    assert exit_info.value.code == 2 and "argument --calib-n: must be >= 1" in capsys.readouterr().err


def test_unwritable_output_dir(tmp_path, capsys):
    import os

    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    if os.access(locked, os.W_OK):
        pytest.skip("running as a user that can write anywhere (root)")
    assert main(["export", "--model", "mobilenetv3_small_100", "-o", str(locked)]) == 2
    assert "not writable" in capsys.readouterr().err


# --- the gate and atomic writes -------------------------------------------------------------

def test_failed_gate_keeps_the_file_out(tmp_path, monkeypatch):
    monkeypatch.setitem(parity.GATES, "fp32", {"landmark_px_max": -1.0})  # nothing can pass
    rows, summary = run_export("mobilenetv3_small_100:input_size=64", "onnx", "fp32", tmp_path, parity_n=2, **QUIET)
    assert rows[0].status == "failed" and "landmark_px_max" in rows[0].reason
    assert [p.name for p in tmp_path.iterdir()] == [summary.name]  # no model file, no temp file


@pytest.mark.parametrize("name", ["sub/x", "../escaped", ".hidden", ""])
def test_name_is_a_stem_inside_the_output_folder(tmp_path, name):
    with pytest.raises(EdgefaError, match="must be a file name stem"):
        run_export("mobilenetv3_small_100:input_size=64", "onnx", "fp32", tmp_path / "out", name=name, **QUIET)
    assert list(tmp_path.iterdir()) == []  # checked before any work: not even the output folder


def test_status_is_ok_only_once_the_file_is_in_place(tmp_path, monkeypatch):
    import os

    real_replace = os.replace

    def disk_full_for_models(src, dst):  # the summary JSON still gets written
        if str(dst).endswith(".onnx"):
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", disk_full_for_models)
    rows, _ = run_export("mobilenetv3_small_100:input_size=64", "onnx", "fp32", tmp_path, parity_n=2, **QUIET)
    assert rows[0].status == "failed" and "No space left" in rows[0].reason and not rows[0].file


def test_interrupt_leaves_no_half_file(tmp_path, monkeypatch):
    from edgefa.converters import to_onnx

    def interrupted(graph, path, *args, **kwargs):
        path.write_bytes(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(to_onnx, "export", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_export("mobilenetv3_small_100:input_size=64", "onnx", "fp32", tmp_path, parity_n=2, **QUIET)
    assert list(tmp_path.iterdir()) == []


# --- the matrix ---------------------------------------------------------------------------------

def one_model_per_family() -> dict[str, str]:
    """{registry family: its first registered model}: every family is exported, new ones included."""
    from edgefa.models.registry import model_entry

    first = {}
    for name in list_models():
        first.setdefault(model_entry(name).family, name)
    return first


# the timm family by op kind: SE + hard-swish, MobileViT attention, MobileViT v2 linear attention
# (the expand_as rewrite); every other family by its first model (3DDFA's MobileNet-V1, Mobile-FRNet,
# the multi-task heads, the query decoder, the dense regressor's exportable fit)
BACKBONES = sorted({"mobilenetv3_small_100", "mobilevit_xxs", "mobilevitv2_050"}
                   | {name for family, name in one_model_per_family().items() if family != "timm"})


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("backbone", BACKBONES)
def test_backbone_exports_fp32(backbone, fmt, tmp_path):
    _skip_missing(fmt)
    torch.manual_seed(0)  # the dense regressor's fit is conditioned by its random head
    rows, _ = run_export(backbone, fmt, "fp32", tmp_path, parity_n=2, postprocess=fmt != "onnx", **QUIET)
    _check_row(rows[0], fmt)


def _check_row(row, fmt):
    if get_format(fmt).runs_here():
        assert row.status == "ok", row.reason
        assert row.parity["landmark_px_max"] <= parity.GATES[row.precision].get("landmark_px_max", math.inf)
    else:
        print(f"{fmt} {row.precision}: execution skipped, {row.reason}")
        assert row.status == "unverified", row.reason
        assert row.parity["spec"]["ok"]
    assert row.file and row.size_mb > 0


PRECISIONS = [(f.name, p) for f in FORMATS.values() for p in f.precisions]


@pytest.mark.shared
@pytest.mark.parametrize("fmt, precision", PRECISIONS)
def test_peer_exports_every_precision(fmt, precision, tmp_path, peer_checkpoint, aflw2000_root):
    """Real weights (the 3DDFA-V2 peer) on real crops, with in-graph post-processing, so the
    fp16/int8 gates are tested where they mean something."""
    _skip_missing(fmt)
    train = aflw2000_root.parent / "aflw-train"
    rows, summary = run_export(f"3ddfa-v2-mb05:{peer_checkpoint}", fmt, precision, tmp_path, postprocess=True,
                               calib_data=f"aflw-train:{train},split=val", calib_n=32,
                               parity_data=f"aflw2000-3d:{aflw2000_root}", parity_n=8, **QUIET)
    _check_row(rows[0], fmt)
    if get_format(fmt).runs_here():  # the file itself says how to feed it, and evaluates like the model
        from edgefa.runtime.artifact import ArtifactPredictor

        predictor = ArtifactPredictor(rows[0].file)
        assert json.loads(predictor.runner.metadata["edgefa.input"])["dtype"] in ("uint8", "float32")
        assert predictor.runner.metadata["edgefa.model"] == "mobilenet_v1_3ddfa"
    assert json.loads(summary.read_text())["rows"][0]["status"] == rows[0].status


@pytest.mark.shared
def test_onnxruntime_quantizer_fuses_every_conv_of_the_peer(tmp_path, peer_checkpoint, aflw2000_root):
    """--onnx-quantizer onnxruntime: Q/DQ placed where onnxruntime fuses each convolution into
    QLinearConv (its fast int8 path), classifier float, and the file passes the int8 parity gate."""
    import onnxruntime as ort

    train = aflw2000_root.parent / "aflw-train"
    rows, _ = run_export(f"3ddfa-v2-mb05:{peer_checkpoint}", "onnx", "int8", tmp_path, postprocess=True,
                         calib_data=f"aflw-train:{train},split=val", calib_n=16, onnx_quantizer="onnxruntime",
                         parity_data=f"aflw2000-3d:{aflw2000_root}", parity_n=8, **QUIET)
    assert rows[0].status == "ok", rows[0].reason
    assert "onnxruntime quantize_static" in rows[0].info["calibration"]
    assert "kept float: classifier" in rows[0].info["calibration"]
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(rows[0].file, options, providers=["CPUExecutionProvider"])
    import onnx

    ops = [n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]
    assert ops.count("QLinearConv") == 27 and "Conv" not in ops and "FusedConv" not in ops


@pytest.mark.parametrize("postprocess", [False, True])
def test_exported_file_evaluates_like_the_model(postprocess, tmp_path):
    """``edgefa eval FILE``: fed and read from the file's own metadata, it gives the model's landmarks."""
    from edgefa.data.synthetic import SyntheticFaces
    from edgefa.facemodel.synthetic import synthetic_face_model
    from edgefa.predictor import TorchPredictor
    from edgefa.runtime.artifact import ArtifactPredictor

    torch.manual_seed(0)
    model = create_model("mobilenetv3_small_100", input_size=64)
    torch.nn.init.normal_(model.net.get_classifier().weight, std=0.05)  # outputs that vary per face
    ckpt = tmp_path / "m.pt"
    from edgefa.models.checkpoint import save_checkpoint

    save_checkpoint(ckpt, model, synthetic_face_model())
    rows, _ = run_export(str(ckpt), "onnx", "fp32", tmp_path, parity_n=2, postprocess=postprocess, **QUIET)
    data = SyntheticFaces(n=4, seed=5)
    crops = np.stack([data[i]["image"] for i in range(4)])
    got_lms, got_pose = ArtifactPredictor(rows[0].file).predict_geometry(crops)
    ref_lms, ref_pose = TorchPredictor(model, synthetic_face_model(), "m").predict_geometry(crops)
    np.testing.assert_allclose(got_lms, ref_lms, atol=1e-2)
    np.testing.assert_allclose(got_pose, ref_pose, atol=1e-2)


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_device_file_metadata_carries_crop_rule_licence_and_its_own_scores(fmt, tmp_path):
    _skip_missing(fmt)
    from edgefa.detect.crop import FROM_BLAZEFACE
    from edgefa.runtime.artifact import load_runner

    rows, _ = run_export("mobilenetv3_small_100:input_size=64", fmt, "fp32", tmp_path, parity_n=2, postprocess=True,
                         eval_data="synthetic:seed=2,n=8", **QUIET)
    assert rows[0].status == "ok", rows[0].reason
    meta = load_runner(rows[0].file)[1].metadata
    crop = json.loads(meta["edgefa.crop"])
    assert crop["size"] == 120 and crop["from_detector"]["scale"] == round(FROM_BLAZEFACE.scale, 4)
    assert "MIT" in meta["edgefa.license"]  # a random init on no third-party data
    scored = json.loads(meta["edgefa.eval"])  # measured on the written file, in its runtime
    assert scored["measured_on"].startswith(f"this file, {fmt}") and scored["balanced_nme"] == rows[0].info["eval"]["balanced_nme"]
    assert scored["balanced_nme"] > 0
    from edgefa.paths import REPO_ROOT, shared_root

    assert not [v for v in meta.values() if str(REPO_ROOT) in v or str(shared_root()) in v]  # no machine paths


def test_portable_drops_machine_paths():
    from edgefa.converters.export import license_terms, portable
    from edgefa.paths import shared_root

    assert portable(f'"aflw-train:{shared_root()}/data/aflw-train,split=train"') == '"aflw-train:{shared}/data/aflw-train,split=train"'
    assert portable('"folder:/home/me/photos/set1,n=3"') == '"folder:.../photos/set1,n=3"'
    assert portable('{"size": [120, 120], "note": "x/y"}') == '{"size": [120, 120], "note": "x/y"}'
    assert "non-commercial" in license_terms('"aflw-train:{shared}/data/aflw-train"', "bfm68")


def test_shell_command_pastes_back_as_it_ran():
    """A recorded command is shell-quoted (overrides hold quotes and brackets) and names the repo's
    and the default shared folder's paths relative to the repository root."""
    import shlex

    from edgefa.paths import REPO_ROOT, shell_command

    argv = ["edgefa", "pipeline", "--config", str(REPO_ROOT / "training/configs/pipeline-quick.yaml"),
            'train.overrides=["epochs=1","data.workers=0"]', f"bench.data=aflw2000-3d:{REPO_ROOT.parent / 'shared'}/data/x"]
    command = shell_command(argv)
    assert shlex.split(command) == ["edgefa", "pipeline", "--config", "training/configs/pipeline-quick.yaml",
                                    'train.overrides=["epochs=1","data.workers=0"]', "bench.data=aflw2000-3d:../shared/data/x"]
    assert str(REPO_ROOT) not in command


@pytest.mark.parametrize("name", sorted(INT8_QUANTIZERS))
def test_quantizer_of_note_reads_back_each_named_quantizer(name):
    note = f"static PTQ, 256 calibration crops, {INT8_QUANTIZERS[name].describe()}; settings chosen in x.md"
    assert quantizer_of_note(note) == name


def test_quantizer_of_note_does_not_name_the_fallback():
    # the fallback is an onnxruntime quantize_static recipe, but not the one `--onnx-quantizer onnxruntime` asks for
    note = f"static PTQ, 256 calibration crops, {FALLBACK_INT8.describe()} (nncf not installed)"
    assert quantizer_of_note(note) is None
    assert quantizer_of_note("learned in QAT") is None


def test_quantizer_of_note_needs_the_whole_settings():
    from dataclasses import replace

    more_float = replace(INT8_QUANTIZERS["nncf"], float_parts=("classifier", "se"))  # starts like nncf's
    assert quantizer_of_note(f"static PTQ, 8 calibration crops, {more_float.describe()}") is None
    assert quantizer_of_note(f"static PTQ, 8 calibration crops, {INT8_QUANTIZERS['nncf'].describe()}") == "nncf"
