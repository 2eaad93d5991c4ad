"""The ONNX int8 study (``benchmarks/onnx_int8_study.py``, behind ``reports/onnx-int8.md``): its record
on a tiny untrained model with synthetic crops, and its per-layer comparison finding a tensor whose
quantization scale was deliberately broken."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edgefa.benchmarks.onnx_int8_study import activation_pairs, layer_errors, main

pytest.importorskip("onnxruntime")
pytest.importorskip("nncf")
DATA = ["--calib-data", "synthetic:seed=2", "--val-data", "synthetic:seed=0,n=16", "--eval-data",
        "synthetic:seed=1,n=16", "--parity-data", "synthetic:seed=3,n=4", "--parity-n", "4"]


@pytest.fixture(scope="module")
def source(tmp_path_factory, tiny_synthetic_checkpoint):
    return tiny_synthetic_checkpoint(tmp_path_factory.mktemp("src") / "best.pt", {"face_model": "synthetic"})


def test_study_record_and_report(source, tmp_path):
    out = tmp_path / "report"
    assert main(["--model", str(source), "-w", str(tmp_path / "work"), "-o", str(out), "--variants",
                 "nncf-float-classifier,ort-s8s8", *DATA, "--max-calib", "8", "--layers", "ort-s8s8",
                 "--layer-n", "8", "--rounds", "2", "--runs", "3", "--quiet"]) == 0
    record = json.loads(out.with_suffix(".json").read_text())
    assert [r["variant"] for r in record["rows"]] == ["fp32", "nncf-float-classifier", "ort-s8s8"]
    for row in record["rows"]:
        assert set(row["eval"]["bins"]) == {"[0,30]", "(30,60]", "(60,90]"}
        assert row["p50_ms"] > 0 and len(row["rounds_ms"]) == 2 and row["size_mb"] > 0
        assert np.isfinite([row["val"]["balanced"], row["eval"]["balanced"], row["delta_eval"]]).all()
    assert record["rows"][0]["delta_val"] == 0 and record["rows"][2]["settings"]["calib_n"] == 8
    assert record["chosen"] in ("nncf-float-classifier", "ort-s8s8") and "val split" in record["rule"]
    assert set(record["layers"]) == {"ort-s8s8", record["chosen"]}
    first = record["layers"]["ort-s8s8"][0]
    assert set(first) == {"tensor", "local", "off", "added", "on", "on_vs_off"}
    text = out.with_suffix(".md").read_text()
    assert "--variants nncf-float-classifier,ort-s8s8" in text and "## Variants" in text and "Per-layer SQNR: `ort-s8s8`" in text
    # the report renders again from the saved record, measuring nothing
    again = tmp_path / "again"
    assert main(["--render", str(tmp_path / "work" / "study.json"), "-o", str(again)]) == 0
    assert again.with_suffix(".md").read_text() == text


def test_layer_errors_find_a_broken_scale(source, tmp_path):
    import onnx
    from onnx import numpy_helper

    from edgefa.converters.export import load_crops, run_export
    from edgefa.converters.onnx_int8 import Int8Settings, quantize
    from edgefa.runtime.inputs import prepare_input

    rows, _ = run_export(str(source), "onnx", "fp32", tmp_path, parity_data="synthetic:seed=3,n=2", parity_n=2,
                         postprocess=True, progress=lambda *_: None)
    float_model = onnx.load(rows[0].file)
    spec = json.loads({p.key: p.value for p in float_model.metadata_props}["edgefa.input"])
    calib = prepare_input(load_crops("synthetic:seed=2", 8, "calib"), spec)
    x = prepare_input(load_crops("synthetic:seed=0", 8, "x"), spec)
    good = quantize(float_model, calib, Int8Settings(quantizer="onnxruntime", method="minmax"))
    before = layer_errors(float_model, good, x)
    assert all(r["on"] > 10 and r["off"] > 10 for r in before[:5]), before[:5]

    broken = onnx.ModelProto()
    broken.CopyFrom(good)
    order = list(activation_pairs(good))
    victim = [r["tensor"] for r in before][len(before) // 3]  # a tensor a third of the way in
    q_node = activation_pairs(broken)[victim][1]
    scale = next(i for i in broken.graph.initializer if i.name == q_node.input[1])
    scale.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(scale) * 40, scale.name))  # 40x coarser steps
    after = layer_errors(float_model, broken, x)
    worst = min(after, key=lambda r: r["added"])
    assert worst["tensor"] == victim and victim in order
    hit = next(r for r in after if r["tensor"] == victim)
    ok = next(r for r in before if r["tensor"] == victim)
    assert hit["local"] < ok["local"] - 15 and hit["on"] < ok["on"] - 10
    upstream = [r["tensor"] for r in before][: [r["tensor"] for r in before].index(victim)]
    for name in upstream[:3]:  # nothing before the broken pair changed
        a, b = next(r for r in before if r["tensor"] == name), next(r for r in after if r["tensor"] == name)
        assert a["off"] == b["off"] and a["on"] == b["on"]


def test_exporter_default_float_parts_and_fallback(source, tmp_path, monkeypatch):
    """The exporter's int8 default keeps the classifier float and names its settings; without NNCF
    it falls back to the study's best onnxruntime settings and says why."""
    import onnx

    from edgefa.converters import onnx_int8
    from edgefa.converters.export import run_export
    from edgefa.runtime.artifact import load_runner

    quiet = {"calib_data": "synthetic:seed=2", "calib_n": 8, "parity_data": "synthetic:seed=3", "parity_n": 2,
             "postprocess": True, "progress": lambda *_: None}
    rows, _ = run_export(str(source), "onnx", "fp32,int8", tmp_path / "a", **quiet)
    assert [r.status for r in rows] == ["ok", "ok"], [r.reason for r in rows]
    float_model = onnx.load(rows[0].file)
    tail = set(onnx_int8.float_only_nodes(float_model))
    parts = {p: onnx_int8.float_part_nodes(float_model, [p], tail) for p in onnx_int8.FLOAT_PARTS}
    assert len(parts["stem"]) == len(parts["classifier"]) == 1 and len(parts["se"]) == 18  # 9 SE blocks
    assert parts["classifier"][0] in parts["head"] and len(parts["depthwise"]) == 11
    note = load_runner(rows[1].file)[1].metadata["edgefa.calibration"]
    assert note.startswith("static PTQ, 8 calibration crops, NNCF") and "kept float: classifier" in note
    int8_model = onnx.load(rows[1].file)
    classifier = next(n for n in int8_model.graph.node if n.name == parts["classifier"][0])
    producers = {o: n.op_type for n in int8_model.graph.node for o in n.output}
    assert "DequantizeLinear" not in {producers.get(i) for i in classifier.input}  # float weights and input

    def missing(*args):
        raise ImportError("no nncf")

    monkeypatch.setattr(onnx_int8, "_quantize_nncf", missing)
    rows, _ = run_export(str(source), "onnx", "int8", tmp_path / "b", **quiet)
    assert rows[0].status == "ok", rows[0].reason
    note = load_runner(rows[0].file)[1].metadata["edgefa.calibration"]
    assert "onnxruntime quantize_static" in note and "(nncf not installed" in note
