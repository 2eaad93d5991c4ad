"""QAT (torchao pt2e) and PTQ int8: a QAT run checkpoints like training and reloads from tensors;
its int8 ONNX / TFLite files pass the parity gate against the fake-quant model and track the float
model; every int8 artifact records its calibration; bad input is one line. Tiny: 64 px inputs,
16 synthetic crops, two one-batch epochs."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edgefa.app.cli import main
from edgefa.models.checkpoint import model_from_checkpoint, save_checkpoint
from edgefa.models.registry import create_model

pytest.importorskip("torchao")
pytest.importorskip("litert_torch")

SIZE = 64
TINY = ["data.train=synthetic:seed=0,n=16", "data.val=synthetic:seed=1,n=8", "data.workers=0", "data.cache=false",
        "batch_size=16", "augment=false", "qat.epochs=2", "qat.freeze_bn_after=1", "qat.freeze_observers_after=1",
        "qat.xnnpack_int8=true"]
QUIET = {"progress": lambda _: None}


@pytest.fixture(scope="module")
def float_checkpoint(tmp_path_factory):
    from edgefa.facemodel.synthetic import synthetic_face_model

    torch.manual_seed(0)
    model = create_model("mobilenetv3_small_100", input_size=SIZE)
    torch.nn.init.normal_(model.net.get_classifier().weight, std=0.05)  # outputs that vary per crop
    path = tmp_path_factory.mktemp("float") / "best.pt"
    save_checkpoint(path, model.eval(), synthetic_face_model(), config={"face_model": "synthetic"})
    return path


@pytest.fixture(scope="module")
def qat_run(float_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("qat")
    assert main(["qat", "--checkpoint", str(float_checkpoint), "--config",
                 "training/configs/qat.yaml", "-o", str(out), "--quiet", *TINY]) == 0
    return out


def test_qat_checkpoints_like_training_and_reloads_from_tensors(qat_run):
    from edgefa.quantization.qat import QATRegressor

    for name in ("best.pt", "last.pt"):
        state = torch.load(qat_run / name, weights_only=True)  # no pickled GraphModule
        assert {"config", "metrics", "git_commit", "epoch"} <= set(state)
        qat = state["compression"]["qat"]
        frozen = state["epoch"] > 1  # the freezes apply from the second epoch (best.pt may be the first)
        assert qat["bn_frozen"] == frozen and qat.get("observers_frozen", False) == frozen and qat["epochs"] == 2
    last = torch.load(qat_run / "last.pt", weights_only=True)
    assert last["epoch"] == 2 and "optimizer" in last
    a, _, _ = model_from_checkpoint(qat_run / "last.pt")
    b, _, _ = model_from_checkpoint(qat_run / "last.pt")
    assert isinstance(a, QATRegressor) and not a.training
    # the network's output is left float (make_quantizer(float_output=True)): no observer on it
    assert "activation_post_process" not in str(next(n for n in a.qat.graph.nodes if n.op == "output").all_input_nodes[0])
    x = torch.randn(3, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x))
    # the learned scales came back: the same tensors as saved
    saved = {k: v for k, v in last["state_dict"].items() if k.endswith(".scale")}
    assert saved and all(torch.equal(a.state_dict()[k], v) for k, v in saved.items())
    # observers frozen: more forward passes in train mode leave the scales alone
    a.train()
    with torch.no_grad():
        a(torch.randn(4, 3, SIZE, SIZE) * 10)
    assert all(torch.equal(a.state_dict()[k], v) for k, v in saved.items())


def test_qat_int8_files_pass_parity_and_track_the_float_model(qat_run, float_checkpoint, tmp_path):
    from edgefa.converters.export import load_crops, run_export
    from edgefa.converters.graph import ExportGraph
    from edgefa.converters.parity import compare, torch_outputs
    from edgefa.runtime.artifact import load_runner

    rows, _ = run_export(str(qat_run / "best.pt"), "onnx,tflite", "int8", tmp_path, parity_n=8, **QUIET)
    assert [r.status for r in rows] == ["ok", "ok"], [r.reason for r in rows]
    float_model, fm, _ = model_from_checkpoint(float_checkpoint)
    graph = ExportGraph(float_model, fm)
    x = graph.prepare(load_crops("synthetic:seed=8", 8, "parity-data"))
    ref = torch_outputs(graph, x)
    for row in rows:
        _, runner = load_runner(row.file)
        meta = runner.metadata
        assert "quantization-aware training" in meta["edgefa.calibration"]
        assert "qat" in json.loads(meta["edgefa.compression"])
        drift = compare(graph, ref, runner.run(x))["nme_points_mean"]
        # int8 vs float: the same 2-point bound the parity gate allows int8 (converters/parity.py)
        assert drift < 2.0, f"{row.format}: int8 file moved landmarks by {drift:.2f} NME points from float"
    tflite = next((r.file for r in rows if r.format == "tflite"), None)
    if tflite:  # qat.xnnpack_int8=true: no int8 HARD_SWISH cuts XNNPACK's graph, the SE means are int8
        from edgefa.benchmarks.tflite_ops import op_table

        table = op_table(tflite)
        assert not any(name == "HARD_SWISH" and "int8" in types for name, types in table["network"])
        assert table["network"].get(("MEAN", "int32/int8"), 0) > 1
        assert table["network_partitions"] == 1
    if any(r.format == "onnx" for r in rows):
        import onnx

        ops = {n.op_type for n in onnx.load(next(r.file for r in rows if r.format == "onnx")).graph.node}
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ from the learned scales


def test_qat_model_refuses_float_precisions(qat_run, tmp_path):
    from edgefa.converters.export import run_export

    rows, _ = run_export(str(qat_run / "best.pt"), "onnx", "fp32", tmp_path, parity_n=2, **QUIET)
    assert rows[0].status == "failed" and "QAT checkpoint exports as" in rows[0].reason


def test_ptq_int8_artifacts_record_calibration(float_checkpoint, tmp_path):
    from edgefa.converters.export import run_export
    from edgefa.runtime.artifact import load_runner

    rows, _ = run_export(str(float_checkpoint), "onnx,tflite", "int8", tmp_path, calib_n=10, parity_n=4, **QUIET)
    assert [r.status for r in rows] == ["ok", "ok"], [r.reason for r in rows]
    for row in rows:
        note = load_runner(row.file)[1].metadata["edgefa.calibration"]
        # ONNX calibrates on every crop with its default settings (Int8Settings), named in the note
        count = "10 calibration crops" if row.format == "onnx" else "10 crops"
        assert count in note and ("MinMax" in note or "histogram" in note), note


def test_qat_cli_bad_input_is_one_line(float_checkpoint, tmp_path, capsys):
    cfg = "training/configs/qat.yaml"
    assert main(["qat", "--checkpoint", str(tmp_path / "missing.pt"), "--config", cfg]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    assert main(["qat", "--checkpoint", str(float_checkpoint), "--config", cfg, "qat.freeze_bn_afer=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "did you mean 'qat.freeze_bn_after'" in err and len(err.splitlines()) == 1
    # ranges frozen before any data was seen would be +-inf: refused before training
    assert main(["qat", "--checkpoint", str(float_checkpoint), "--config", cfg, "-o", str(tmp_path / "q"),
                 "qat.freeze_observers_after=0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "qat.freeze_observers_after" in err and len(err.splitlines()) == 1
    assert main(["qat", "--checkpoint", str(float_checkpoint), "--config", cfg, "-o", str(tmp_path / "q"),
                 "qat.float_parts=stm"]) == 2
    err = capsys.readouterr().err.strip()
    assert "qat.float_parts part" in err and "did you mean 'stem'" in err and len(err.splitlines()) == 1


def test_plain_quantizer_observes_the_output():
    from edgefa.quantization.qat import QATRegressor

    qat = QATRegressor(create_model("mobilenetv3_small_100", input_size=SIZE).eval(), {"float_output": False})
    out = next(n for n in qat.qat.graph.nodes if n.op == "output").all_input_nodes[0]
    assert "activation_post_process" in str(out.target)
    assert np.isfinite(qat(torch.zeros(1, 3, SIZE, SIZE)).detach().numpy()).all()


def test_compression_recipe_config_layers_and_checks_keys(float_checkpoint):
    from edgefa.errors import EdgefaError
    from edgefa.quantization.config import load_compression_config, stage_config

    cfg = load_compression_config("training/configs/compress-mobilenetv3-small.yaml", ["prune.ratio=0.5"],
                                  source=str(float_checkpoint),
                                  source_config={"face_model": "synthetic", "init": "runs/stage1/best.pt",
                                                 "ema": 0.999})
    assert cfg["prune"]["ratio"] == 0.5 and cfg["source"] == str(float_checkpoint)
    assert cfg["face_model"] == "synthetic"  # inherited from the source checkpoint's config
    ft = stage_config(cfg, "finetune", float_checkpoint.parent / "ft", teacher=str(float_checkpoint))
    assert ft["teacher"] == str(float_checkpoint) and ft["epochs"] == cfg["finetune"]["epochs"]
    assert ft["schedule"]["warmup_epochs"] == 0 and ft["schedule"]["name"] == "cosine"  # trained weights
    assert "prune" not in ft and "qat" not in ft
    assert ft["init"] is None  # a second-stage source's own init would overwrite the source's weights
    assert ft["ema"] == 0.999 and stage_config(cfg, "qat", float_checkpoint.parent / "q", teacher=None)["ema"] == 0
    with pytest.raises(EdgefaError, match="did you mean 'prune.ratio'"):
        load_compression_config(None, ["prune.ratoi=0.5"])


def test_coreml_int8_records_that_it_is_weight_only(float_checkpoint, tmp_path):
    pytest.importorskip("coremltools")
    import coremltools as ct

    from edgefa.converters.export import run_export

    rows, _ = run_export(str(float_checkpoint), "coreml", "int8", tmp_path, parity_n=2, **QUIET)
    assert rows[0].status in ("ok", "unverified"), rows[0].reason
    meta = ct.models.MLModel(rows[0].file, skip_model_load=True).user_defined_metadata
    assert meta["edgefa.calibration"].startswith("none: weight-only")


def test_qat_refuses_models_with_training_only_outputs():
    from edgefa.errors import EdgefaError
    from edgefa.quantization.qat import prepare_qat

    with pytest.raises(EdgefaError, match="QAT of 'query_decoder_mobilenetv3_small' is not supported"):
        prepare_qat(create_model("query_decoder_mobilenetv3_small"))


def test_qat_checkpoint_from_before_xnnpack_shaping_rebuilds_unshaped(tmp_path):
    """A QAT checkpoint saved without ``xnnpack_int8`` (older runs) holds the observers of the graph
    with its hard-swishes whole: it must rebuild that graph, not the split one new runs get."""
    from edgefa.facemodel.synthetic import synthetic_face_model
    from edgefa.quantization.qat import prepare_qat

    def hardswish_ops(model):
        return sum("hardswish" in str(n.target) for n in model.qat.graph.nodes)

    torch.manual_seed(0)
    float_model = create_model("mobilenetv3_small_100", input_size=SIZE).eval()
    shaped = prepare_qat(float_model, {"xnnpack_int8": True})
    assert hardswish_ops(shaped) == 0
    old = prepare_qat(float_model)  # the default: unshaped, as before the setting
    assert not old.settings["xnnpack_int8"] and hardswish_ops(old) > 0
    with torch.no_grad():
        old.train()
        old(torch.randn(4, 3, SIZE, SIZE))  # observers see data, so the saved ranges are not defaults
        old.eval()
    del old.settings["xnnpack_int8"], old.settings["float_parts"]  # as written before the settings existed
    save_checkpoint(tmp_path / "old.pt", old, synthetic_face_model(), config={"face_model": "synthetic"})
    back, _, _ = model_from_checkpoint(tmp_path / "old.pt")
    assert hardswish_ops(back) == hardswish_ops(old)
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(back(x), old(x))


def test_qat_keeps_the_stem_float_like_the_ptq_default(tmp_path):
    """``qat.float_parts: stem``: the stem trains without fake quantization and stays float in the
    TFLite file, as in post-training int8 (``--int8-float stem``); the setting survives a reload."""
    from edgefa.benchmarks.tflite_ops import op_table
    from edgefa.converters.export import run_export
    from edgefa.facemodel.synthetic import synthetic_face_model
    from edgefa.quantization.qat import prepare_qat

    def fake_quants(model):
        return sum(n.name.startswith("activation_post_process") for n in model.qat.graph.nodes)

    torch.manual_seed(0)
    float_model = create_model("mobilenetv3_small_100", input_size=SIZE).eval()
    whole, stem_float = prepare_qat(float_model), prepare_qat(float_model, {"float_parts": ["stem"]})
    assert fake_quants(stem_float) < fake_quants(whole)
    with torch.no_grad():
        stem_float.train()
        stem_float(torch.randn(4, 3, SIZE, SIZE))
        stem_float.eval()
    save_checkpoint(tmp_path / "q.pt", stem_float, synthetic_face_model(), config={"face_model": "synthetic"})
    back, _, _ = model_from_checkpoint(tmp_path / "q.pt")
    assert back.settings["float_parts"] == ["stem"]
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(back(x), stem_float(x))
    rows, _ = run_export(str(tmp_path / "q.pt"), "tflite", "int8", tmp_path, parity_n=4, **QUIET)
    assert rows[0].status == "ok", rows[0].reason
    ops = op_table(rows[0].file)["network"]
    # the first convolution and the depthwise one that reads it: float, everything after: int8
    assert ops.get(("CONV_2D", "float32")) == 1 and ops.get(("DEPTHWISE_CONV_2D", "float32")) == 1
    assert ops.get(("CONV_2D", "int32/int8"), 0) > 10
