"""The compression study script (``benchmarks/compression.py``, behind ``reports/compression.md``): a
subset of its stages, a variant study compared with the float of another study of the same source,
and an earlier report's studies carried with the command and machine that measured them. Tiny: 64 px,
synthetic crops, ONNX only, one fine-tune epoch."""
from __future__ import annotations

import json

import pytest

from edgefa.benchmarks.compression import main as study

pytest.importorskip("torch_pruning")

TINY_DATA = ["data.train=synthetic:seed=0,n=16", "data.val=synthetic:seed=1,n=8", "data.cache=false",
             "batch_size=8", "augment=false"]
RUN = ["--formats", "onnx", "--calib-data", "synthetic:seed=2,n=16", "--calib-n", "8", "--parity-data",
       "synthetic:seed=3,n=8", "--parity-n", "8", "--workers", "0", "--finetune-epochs", "1", "--quiet"]


@pytest.fixture(scope="module")
def source(tmp_path_factory, tiny_synthetic_checkpoint):
    return tiny_synthetic_checkpoint(tmp_path_factory.mktemp("src") / "best.pt", {"face_model": "synthetic", "data": {"train": "synthetic:seed=0,n=16"}})


def _previous(tmp_path):
    row = {"variant": "float", "what": "trained float model", "file": "old-float.onnx", "format": "onnx",
           "precision": "fp32", "params_m": 1.0, "macs_m": 10.0, "size_mb": 4.0, "nme_mean": 5.0, "delta": 0.0,
           "study": "old"}
    path = tmp_path / "previous.json"
    path.write_text(json.dumps({"command": "python benchmarks/compression.py report old",
                                "machine": {"cpu": "Old CPU", "cores": 2, "os": "Linux"},
                                "studies": [{"run": "runs/gone", "rows": [row]}]}))
    return path


def test_stage_subset_variant_study_and_carried_report(source, tmp_path, capsys):
    base, taylor = tmp_path / "base", tmp_path / "taylor"
    assert study(["run", "--source", str(source), "-o", str(base), "--name", "tiny", "--stages", "float,p50",
                  *RUN, *TINY_DATA]) == 0
    assert sorted(p.name for p in (base / "files").iterdir()) == ["float", "p50", "p50-ft"]
    assert study(["run", "--source", str(source), "-o", str(taylor), "--name", "tiny-taylor", "--stages", "p50",
                  "--method", "taylor", *RUN, *TINY_DATA, "prune.taylor_crops=8"]) == 0
    assert json.loads((taylor / "study.json").read_text())["settings"]["method"] == "taylor"

    out = tmp_path / "report"
    assert study(["report", str(base), str(taylor), "-o", str(out), "--data", "synthetic:seed=4,n=8",
                  "--warmup", "1", "--min-time", "0.05", "--previous", str(_previous(tmp_path)), "--quiet"]) == 0
    record = json.loads(out.with_suffix(".json").read_text())
    assert [s["label"] for s in record["studies"]] == ["old", "tiny", "tiny-taylor"]
    old, tiny, tay = record["studies"]
    assert old["carried"] and old["rows"][0]["nme_mean"] == 5.0  # carried as measured, not re-benched
    float_nme = next(r["nme_mean"] for r in tiny["rows"] if r["variant"] == "float")
    assert {r["variant"] for r in tay["rows"]} == {"p50", "p50-ft"}
    for r in tay["rows"]:  # the variant study has no float of its own: it is compared with tiny's
        assert r["delta_vs"] == "tiny" and r["delta"] == pytest.approx(r["nme_mean"] - float_nme)
    text = out.with_suffix(".md").read_text()
    assert "## old † (source `?`)" in text and "Old CPU" in text
    assert "Δ vs float: the float files of `tiny`" in text and "--method taylor" in text


def test_resumed_study_with_other_settings_and_bad_input_are_one_line(source, tmp_path, capsys):
    run = tmp_path / "s"
    run.mkdir()
    (run / "study.json").write_text(json.dumps({"source": str(source), "label": "s", "stages": {},
                                                "settings": {"method": "magnitude"}}))
    cases = [
        (["run", "--source", str(source), "-o", str(run), "--stages", "p50", *RUN], "holds a study with other settings"),
        (["run", "--source", str(source), "-o", str(tmp_path / "t"), "--stages", "p5O"], "did you mean 'p50'"),
        (["run", "--source", str(source), "-o", str(tmp_path / "t"), "--stages", "p50-ft-qat"], "add p50"),
        (["run", "--source", str(source), "-o", str(tmp_path / "t"), "--stages", "p50-ft-ptq"], "add p50"),
        (["run", "--source", str(source), "-o", str(tmp_path / "t"), "--onnx-quantizer", "ort"], "--onnx-quantizer"),
        (["run", "--source", str(tmp_path / "none.pt"), "-o", str(tmp_path / "t")], "none.pt: checkpoint not found"),
        (["run", "--source", "mobilenet_v1_3dfa:pretrained", "-o", str(tmp_path / "t")],
         "--source mobilenet_v1_3dfa:pretrained: no shipped weights of that name (did you mean mobilenet_v1_3ddfa:pretrained?"),
        (["report", str(run), "--previous", str(tmp_path / "none.json")], "none.json: file not found"),
        (["report", str(run), "--notes", str(tmp_path / "none.md")], "--notes"),
        (["report", str(tmp_path / "broken")], "broken/study.json: not a study.json"),
        (["run", "--source", str(source), "-o", str(tmp_path / "broken")], "broken/study.json: not a study.json"),
    ]
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "study.json").write_text("{not json")
    for args, message in cases:
        assert study(args) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "t").exists()  # nothing left behind


def test_a_shipped_model_is_a_source(tmp_path):
    # NAME:pretrained, as edgefa prune / qat take it: the study is labelled with the name
    run = tmp_path / "s"
    assert study(["run", "--source", "mobilenet_v1_3ddfa:pretrained", "-o", str(run), "--stages", "float", *RUN]) == 0
    log = json.loads((run / "study.json").read_text())
    assert log["label"] == "mobilenet_v1_3ddfa" and log["source"] == "mobilenet_v1_3ddfa:pretrained"
    assert [p.name for p in (run / "files" / "float").glob("*.onnx")] == ["mobilenet_v1_3ddfa-float.onnx"]


def test_train_only_run_then_the_same_study_exports_without_training_again(source, tmp_path):
    # the GPU half (training stages, no converters there) and the CPU half (exports) of one study
    run = tmp_path / "s"
    assert study(["run", "--source", str(source), "-o", str(run), "--name", "t", "--stages", "p50", "--train-only",
                  *RUN, *TINY_DATA]) == 0
    log = json.loads((run / "study.json").read_text())
    assert set(log["stages"]) == {"p50"} and not (run / "files").exists()
    trained = (run / "p50" / "finetune" / "best.pt").stat().st_mtime_ns
    assert study(["run", "--source", str(source), "-o", str(run), "--name", "t", "--stages", "float,p50",
                  *RUN, *TINY_DATA]) == 0
    log = json.loads((run / "study.json").read_text())
    assert (run / "p50" / "finetune" / "best.pt").stat().st_mtime_ns == trained  # not trained again
    assert {"export float", "export p50", "export p50-ft"} <= set(log["stages"])
    assert sorted(p.name for p in (run / "files").iterdir()) == ["float", "p50", "p50-ft"]
    assert len(log["commands"]) == 2 and "--train-only" in log["commands"][0] and "--train-only" not in log["commands"][1]
    assert log["stages"]["p50"]["on"]  # the machine each stage ran on, for its time


def test_a_file_that_fails_its_gate_is_a_failed_row_and_a_rerun_retries_it(source, tmp_path, capsys, monkeypatch):
    import edgefa.converters.export
    from edgefa.benchmarks.compression_report import _section, study_rows

    run = tmp_path / "s"
    real_gate = edgefa.converters.export.gate
    monkeypatch.setattr(edgefa.converters.export, "gate", lambda parity, precision: (False, "forced by the test"))
    assert study(["run", "--source", str(source), "-o", str(run), "--name", "t", "--stages", "float", *RUN]) == 2
    err = capsys.readouterr().err.strip()
    assert "float onnx fp32: forced by the test" in err and len(err.splitlines()) == 1
    assert not list((run / "files" / "float").glob("*.onnx"))  # kept out
    rows = study_rows(run, {"settings": {"threads": [1]}, "targets": []})
    assert [(r["variant"], r["format"], r["failed"]) for r in rows] == [("float", "onnx", "forced by the test")]
    text = "\n".join(_section({"label": "t", "source": str(source), "stages": {}, "run_commands": ["x"],
                               "rows": [{**rows[0], "delta": None}]}))
    assert "✗ not written: forced by the test" in text

    monkeypatch.setattr(edgefa.converters.export, "gate", real_gate)
    assert study(["run", "--source", str(source), "-o", str(run), "--name", "t", "--stages", "float", *RUN]) == 0
    assert list((run / "files" / "float").glob("*.onnx"))
    assert "failed" not in json.loads((run / "study.json").read_text())["stages"]["export float"]


def test_a_killed_finetune_resumes_and_the_pruned_model_exports_as_ptq_int8(source, tmp_path):
    import torch

    run = tmp_path / "s"
    common = ["run", "--source", str(source), "-o", str(run), "--name", "t", *RUN[:-5], "--workers", "0", "--quiet"]
    assert study([*common, "--stages", "p50", "--finetune-epochs", "1", "--train-only", *TINY_DATA]) == 0
    (run / "study.json").unlink()  # as if killed after the first fine-tune epoch, before the stage was logged
    pruned = torch.load(run / "p50" / "pruned.pt", weights_only=True)["state_dict"]
    assert study([*common, "--stages", "p50,p50-ft-ptq", "--finetune-epochs", "2", "--onnx-quantizer",
                  "onnxruntime", *TINY_DATA]) == 0
    last = torch.load(run / "p50" / "finetune" / "last.pt", weights_only=True)
    assert [h["epoch"] for h in last["history"]] == [1, 2]  # epoch 1 kept, only epoch 2 trained
    again = torch.load(run / "p50" / "pruned.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(pruned[k], again[k]) for k in pruned)  # not pruned again
    log = json.loads((run / "study.json").read_text())
    assert log["settings"]["onnx_quantizer"] == "onnxruntime"
    from edgefa.training.report import wall_seconds

    # the stage's own clock saw only the resumed epoch; the recorded fine-tune time covers both
    assert log["stages"]["p50"]["finetune_seconds"] == round(wall_seconds(last["history"]), 1) > 0
    ptq = json.loads(next((run / "files" / "p50-ft-ptq").glob("*-export.json")).read_text())["rows"][0]
    assert ptq["status"] == "ok" and ptq["precision"] == "int8"
    assert "onnxruntime quantize_static" in ptq["info"]["calibration"]


def test_a_p50_model_fine_tuned_elsewhere_is_exported_as_given(source, tmp_path, capsys):
    """``--p50-finetuned``: e.g. an average of fine-tunes; no pruning runs, the file is that model's."""
    run = tmp_path / "given"
    common = ["run", "--source", str(source), "--name", "g", *RUN, "--onnx-quantizer", "onnxruntime", *TINY_DATA]
    assert study([*common, "-o", str(run), "--stages", "p50,p50-ft-ptq", "--p50-finetuned", str(source)]) == 0
    assert sorted(p.name for p in (run / "files").iterdir()) == ["p50-ft", "p50-ft-ptq"]
    assert not (run / "p50").exists()  # nothing pruned or trained
    log = json.loads((run / "study.json").read_text())
    assert log["stages"]["p50"]["given"] and log["settings"]["p50_finetuned"] == str(source)
    for variant, precision in (("p50-ft", "fp32"), ("p50-ft-ptq", "int8")):  # both made from the given model
        exported = json.loads(next((run / "files" / variant).glob("*-export.json")).read_text())
        assert exported["model"] == str(source)
        assert exported["rows"][0]["status"] == "ok" and exported["rows"][0]["precision"] == precision
    capsys.readouterr()
    assert study([*common, "-o", str(tmp_path / "x"), "--stages", "float", "--p50-finetuned", str(source)]) == 2
    assert "add p50 to --stages" in capsys.readouterr().err
    assert study([*common, "-o", str(tmp_path / "y"), "--stages", "p50", "--p50-finetuned",
                  str(tmp_path / "missing.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--p50-finetuned" in err and "missing.pt" in err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
