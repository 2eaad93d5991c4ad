"""edgefa pipeline: every stage end to end on a tiny run, and a finished stage is not redone."""
import json
import shlex

from edgefa.app.cli import main
from edgefa.app.pipeline import Pipeline, load_pipeline_config

CONFIG = "training/configs/pipeline-quick.yaml"
TINY = ['train.overrides=["epochs=1","batch_size=8","data.train=synthetic:seed=0,n=16","data.val=synthetic:seed=1,n=8",'
        '"data.workers=0","model.cfg.input_size=64"]', "export.formats=onnx", "export.precision=fp32",
        "export.parity_n=2", "bench.data=synthetic:seed=2,n=4", "bench.runs=2", "bench.warmup=1", "bench.threads=1"]


def test_stage_is_skipped_only_when_key_and_outputs_are_unchanged(tmp_path):
    cfg = load_pipeline_config(CONFIG, [f"output={tmp_path}"])
    calls = []
    out_file = tmp_path / "made.txt"

    def run():
        calls.append(1)
        out_file.write_text("x")
        return {"file": str(out_file)}

    def once(inputs):
        pipe = Pipeline(cfg, progress=False)
        return pipe.stage("export", inputs, run, lambda r: [r["file"]])

    once({"a": 1})
    once({"a": 1})
    assert len(calls) == 1  # unchanged: skipped
    once({"a": 2})
    assert len(calls) == 2  # changed input: redone
    out_file.unlink()
    once({"a": 2})
    assert len(calls) == 3  # output gone: redone


def test_pipeline_end_to_end_then_resumes(tmp_path, capsys):
    args = ["pipeline", "--config", CONFIG, "--quiet", f"output={tmp_path / 'p'}", "name=tiny", *TINY]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "[1/6] train: done" in out and "[6/6] report: done" in out
    report = tmp_path / "p" / "report" / "tiny"
    for suffix in (".md", ".html", ".csv", ".json"):
        assert report.with_suffix(suffix).is_file()
    # the commands paste as they stand: one code span each, the stage said outside it, said once
    command = shlex.join(["edgefa", "pipeline", "--config", CONFIG, *args[4:]])
    md = report.with_suffix(".md").read_text()
    heads = [ln for ln in md.splitlines() if ln.startswith(("Report:", "Bench:", "Command:"))]
    assert heads == [f"Report: `{command}` (its report stage)  ", f"Bench: `{command}` (its bench stage)  "]
    record = json.loads((tmp_path / "p" / "bench" / "bench.json").read_text())
    runtimes = {t["runtime"] for t in record["targets"]}
    assert runtimes == {"onnxruntime", "torch"} and all(t["status"] == "ok" for t in record["targets"])

    assert main(args) == 0  # nothing changed: every stage skipped
    out = capsys.readouterr().out
    assert out.count("unchanged, skipped") == 4  # train, export, bench, report (prune, qat: off)

    assert main(args + ["bench.threads=1,2"]) == 0  # only bench and what follows it are redone
    out = capsys.readouterr().out
    assert "train: unchanged" in out and "export: unchanged" in out and "bench: done" in out and "report: done" in out


def test_bad_pipeline_config_is_one_line(tmp_path, capsys):
    assert main(["pipeline", "--config", CONFIG, "export.formats=onnx", "bench.pears=true"]) == 2
    assert "did you mean 'bench.peers'" in capsys.readouterr().err
    bad = tmp_path / "p.yaml"
    bad.write_text("train: {config: nope.yaml}\n")
    assert main(["pipeline", "--config", str(bad), f"output={tmp_path / 'o'}"]) == 2
    assert "train.config nope.yaml: not found" in capsys.readouterr().err


def test_pipeline_with_pruning_and_qat(tmp_path, capsys):
    """prune -> fine-tune -> QAT in the pipeline: the int8 ONNX file comes from the QAT model's learned
    scales, the fp32 one from the pruned float model it started from; both benched."""
    qat = ["qat.enabled=true", 'qat.overrides=["qat.epochs=1","qat.freeze_bn_after=null",'
           '"qat.freeze_observers_after=null","batch_size=8","data.workers=0"]']
    args = ["pipeline", "--config", CONFIG, "--quiet", f"output={tmp_path / 'p'}", "name=tiny", *TINY,
            "export.precision=fp32,int8", "prune.enabled=true", "prune.ratio=0.3", "prune.finetune_epochs=1", *qat]
    assert main(args) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "[2/6] prune: done" in out and "[3/6] qat: done" in out
    files = sorted(p.name for p in (tmp_path / "p" / "export").glob("*.onnx"))
    assert files == ["tiny-qat-int8.onnx", "tiny.onnx"]
    meta = json.loads((tmp_path / "p" / "export" / "tiny-qat-export.json").read_text())
    assert meta["rows"][0]["status"] == "ok"
    record = json.loads((tmp_path / "p" / "bench" / "bench.json").read_text())
    assert all(t["status"] == "ok" for t in record["targets"]), [t["note"] for t in record["targets"]]
    from edgefa.models.checkpoint import load_checkpoint

    compression = load_checkpoint(tmp_path / "p" / "qat" / "best.pt")["compression"]
    assert set(compression) == {"pruning", "qat"} and abs(compression["pruning"]["macs_ratio"] - 0.3) <= 0.05


def test_changed_training_settings_start_over_instead_of_resuming(tmp_path):
    """A leftover last.pt of other settings (here: another network) is not resumed from."""
    base = [f"output={tmp_path / 'p'}", "name=tiny", *TINY]
    first = Pipeline(load_pipeline_config(CONFIG, base), progress=False)
    first.train()
    changed = base + [TINY[0].replace('"model.cfg.input_size=64"]', '"model.cfg.input_size=64","model.name=resnet18"]')]
    second = Pipeline(load_pipeline_config(CONFIG, changed), progress=False)
    checkpoint = second.train()
    from edgefa.models.checkpoint import load_checkpoint

    assert load_checkpoint(checkpoint)["model"]["name"] == "resnet18"


def test_pipeline_config_values_are_checked(tmp_path, capsys):
    assert main(["pipeline", "--config", CONFIG, f"output={tmp_path}", "train.overrides=epochs=2"]) == 2
    assert "train.overrides: expected a list" in capsys.readouterr().err
    assert main(["pipeline", "--config", CONFIG, f"output={tmp_path}", "prune.ratio=half"]) == 2
    assert "prune.ratio: expected a number" in capsys.readouterr().err
    (tmp_path / "pipeline.json").write_text("{not json")
    assert main(["pipeline", "--config", CONFIG, f"output={tmp_path}"]) == 2
    assert "not a pipeline state file" in capsys.readouterr().err
    (tmp_path / "pipeline.json").write_text('{"stages": {"train": "done"}}')  # a stage that is not a record
    assert main(["pipeline", "--config", CONFIG, f"output={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "not a pipeline state file" in err and len(err.splitlines()) == 1
