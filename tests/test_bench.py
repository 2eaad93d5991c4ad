"""edgefa bench / report / pipeline on tiny exported models: real runtimes, few calls."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from edgefa.app.cli import main
from edgefa.benchmarks.bench import check_request, run_bench
from edgefa.benchmarks.cards import _export_commits, _val_origin
from edgefa.benchmarks.tables import flat_rows
from edgefa.benchmarks.timing import latency_stats, time_calls
from edgefa.converters.export import run_export
from edgefa.errors import EdgefaError
from edgefa.runtime.formats import RUNTIME_IMPORTS

QUIET = {"progress": lambda *_: None}
FAST = {"warmup": 1, "runs": 3, "progress": False}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A small checkpoint and its ONNX + TFLite files (post-processing in the graph)."""
    from edgefa.facemodel.synthetic import synthetic_face_model
    from edgefa.models.checkpoint import save_checkpoint
    from edgefa.models.registry import create_model

    root = tmp_path_factory.mktemp("bench")
    torch.manual_seed(0)
    model = create_model("mobilenetv3_small_100", input_size=64)
    torch.nn.init.normal_(model.net.get_classifier().weight, std=0.05)  # outputs that vary per face
    ckpt = root / "run" / "best.pt"
    ckpt.parent.mkdir()
    save_checkpoint(ckpt, model, synthetic_face_model())
    formats = "onnx,tflite" if _has("litert_torch") else "onnx"
    rows, _ = run_export(str(ckpt), formats, "fp32", root / "files", parity_n=2, postprocess=True, **QUIET)
    assert all(r.status == "ok" for r in rows)
    return root, ckpt, [r.file for r in rows]


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def test_latency_stats_are_the_percentiles_of_the_calls():
    calls = []
    times = time_calls(lambda: calls.append(1), warmup=2, runs=7)
    assert len(calls) == 9 and times.shape == (7,)
    t = np.array([1.0, 2.0, 3.0, 4.0, 10.0])
    stats = latency_stats(t, batch=2)
    assert stats["p50_ms"] == 3.0 and stats["p90_ms"] == pytest.approx(np.percentile(t, 90))
    assert stats["fps"] == pytest.approx(2000 / t.mean())


@pytest.mark.parametrize("kwargs,message", [
    ({"runtimes": "onnxruntme"}, "did you mean 'onnxruntime'"),
    ({"threads": "1,x"}, "comma list of integers"),
    ({"threads": "0"}, ">= 1"),
    ({"runs": 0}, "--runs >= 1"),
])
def test_bad_requests_fail_before_work(kwargs, message):
    args = {"runtimes": "onnxruntime", "threads": "1", "warmup": 1, "runs": None, "min_time": 1.0, "batch": 1, **kwargs}
    with pytest.raises(EdgefaError, match=message):
        check_request(**args)


def test_bench_runs_every_file_and_checkpoint_with_accuracy(exported, tmp_path):
    root, ckpt, files = exported
    record, code = run_bench([str(root / "files"), str(ckpt)], tmp_path / "run", threads="1,2",
                             data="synthetic:seed=3,n=6", **FAST)
    assert code == 0
    by_runtime = {t["runtime"]: t for t in record["targets"]}
    assert "onnxruntime" in by_runtime and "torch" in by_runtime
    for t in record["targets"]:
        assert t["status"] == "ok", t
        assert [r["threads"] for r in t["rows"]] == [1, 2]
        assert all(r["latency"]["runs"] == 3 and r["latency"]["p50_ms"] > 0 for r in t["rows"])
        acc = t["accuracy"]["nme"]
        assert sum(acc["counts"].values()) == 6 and np.isfinite(acc["balanced_mean"])
        assert t["info"]["params"] > 1e5 and t["info"]["macs"] > 1e6
    # the exported files compute what the checkpoint computes: same accuracy on the same faces
    onnx, torch_row = by_runtime["onnxruntime"], by_runtime["torch"]
    assert onnx["accuracy"]["nme"]["balanced_mean"] == pytest.approx(torch_row["accuracy"]["nme"]["balanced_mean"], abs=0.02)
    assert onnx["info"]["params"] == torch_row["info"]["params"]
    saved = json.loads((tmp_path / "run" / "bench.json").read_text())
    assert saved["machine"]["cores"] and saved["machine"]["versions"]["onnxruntime"] != "not installed"
    assert (tmp_path / "run" / "bench.md").read_text().count("| ok |") == len(record["targets"])
    with np.load(tmp_path / "run" / "overlays" / "run_best.pt.npz") as z:
        assert z["image"].shape == (3, 120, 120, 3) and z["nme"][0] <= z["nme"][1] <= z["nme"][2]


def test_bad_inputs_fail_their_rows_and_the_rest_runs(exported, tmp_path, monkeypatch):
    root, _, files = exported
    onnx = next(f for f in files if f.endswith(".onnx"))
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(Path(onnx).read_bytes()[:5000])
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"not a model at all" * 10)
    monkeypatch.setitem(RUNTIME_IMPORTS, "litert", ("no_such_runtime",))
    record, code = run_bench([onnx, str(truncated), str(garbage), str(tmp_path / "missing.onnx")], tmp_path / "run",
                             runtimes="onnxruntime,litert", data="synthtic:n=4", **FAST)
    assert code == 1
    status = {t["name"]: (t["status"], t["note"]) for t in record["targets"]}
    assert status[Path(onnx).name][0] == "ok"
    assert status["truncated.onnx"][0] == "failed" and "truncated.onnx: not a loadable ONNX model" in status["truncated.onnx"][1]
    assert status["garbage.tflite"][0] == "skipped"
    assert "runtime 'litert' not installed" in status["garbage.tflite"][1]
    assert status["garbage.tflite"][1].endswith("pip install 'edgefa[runtime]'")  # running needs only the runtime extra
    assert status["missing.onnx"][0] == "failed" and "file not found" in status["missing.onnx"][1]
    assert "did you mean 'synthetic'" in record["settings"]["data_error"]


def test_cli_report_writes_every_format_and_compares_runs(exported, tmp_path, capsys):
    root, _, files = exported
    onnx = next(f for f in files if f.endswith(".onnx"))
    for run in ("a", "b"):
        assert main(["bench", onnx, "--runs", "3", "--warmup", "1", "--data", "synthetic:seed=3,n=6", "--quiet",
                     "-o", str(tmp_path / run)]) == 0
    notes = tmp_path / "notes.md"
    notes.write_text("**What is measured.** The `exported` file,\nwrapped over two lines.\n")
    assert main(["report", str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(tmp_path / "rep" / "cmp"),
                 "--notes", str(notes), "--cards", str(tmp_path / "cards")]) == 0
    out = tmp_path / "rep"
    # a model card from the record: the numbers measured on the file, its licence and crop rule
    (card_path,) = (tmp_path / "cards").glob("*.md")
    card = card_path.read_text()
    target = json.loads((tmp_path / "b" / "bench.json").read_text())["targets"][0]
    balanced = target["accuracy"]["nme"]["balanced_mean"]
    p50 = target["rows"][0]["latency"]["p50_ms"]
    assert f"**{balanced:.3f}**" in card and f"{p50:.2f} / " in card
    assert target["info"]["license"] in card and "box size s = max(x2 - x1, y2 - y1)" in card
    assert "edgefa report --cards" in card and str(tmp_path) not in card
    md = (out / "cmp.md").read_text()
    assert "Compared with the baseline run" in md and "| p50 ms 1t |" in md
    page = (out / "cmp.html").read_text()
    assert "data:image/png;base64," in page
    # the notes rendered as Markdown, status as words, no emoji-only cells
    assert "<strong>What is measured.</strong>" in page and "<code>exported</code>" in page and "**" not in page
    assert 'class="status status-ok">ok<' in page and "✅" not in page
    for text in (md, page, (out / "cmp.json").read_text()):  # no machine paths in anything a reader gets
        assert str(tmp_path) not in text
    for fig in ("ced", "pareto", "bins", "overlays"):
        assert (out / f"cmp-{fig}.png").read_bytes()[:4] == b"\x89PNG"
    rows = (out / "cmp.csv").read_text().splitlines()
    assert rows[0].startswith("run,name") and len(rows) == 3
    assert len(json.loads((out / "cmp.json").read_text())["comparisons"]) == 1
    assert main(["report", str(tmp_path / "nothing"), "-o", str(out / "x")]) == 2
    assert "no bench.json" in capsys.readouterr().err


def test_report_of_runs_of_different_files_draws_them_all_and_compares_nothing(exported, tmp_path, monkeypatch):
    from edgefa.benchmarks import plots

    _, ckpt, files = exported
    onnx = next(f for f in files if f.endswith(".onnx"))
    for run, target in (("old", onnx), ("new", str(ckpt))):
        assert main(["bench", target, "--runs", "3", "--warmup", "1", "--data", "synthetic:seed=3,n=6", "--quiet",
                     "-o", str(tmp_path / run)]) == 0
    drawn = []
    real_pareto = plots.pareto_plot
    monkeypatch.setattr(plots, "pareto_plot", lambda rows, key: drawn.append([r["label"] for r in rows])
                        or real_pareto(rows, key))
    assert main(["report", str(tmp_path / "old"), str(tmp_path / "new"), "-o", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep.md").read_text()
    assert "## Run 1:" in md and "## Run 2:" in md and "Compared with" not in md
    assert len(drawn) == 1 and len(drawn[0]) == 2 and len(set(drawn[0])) == 2  # the old run's file is drawn too


def test_peer_ratio_uses_the_peer_file_of_the_same_format():
    target = lambda name, fmt, prec, p50, peer=False: {  # noqa: E731
        "name": name, "kind": "file", "runtime": "onnxruntime", "peer": peer, "status": "ok", "note": "",
        "info": {"format": fmt, "precision": prec, "postprocess": True}, "accuracy": {},
        "rows": [{"threads": 1, "status": "ok", "latency": {"p50_ms": p50}}]}
    record = {"settings": {"threads": [1]}, "targets": [
        target("3ddfa-v2-mb05.onnx", "onnx", "fp32", 2.0, peer=True), target("3ddfa-v2-mb05-int8.onnx", "onnx", "int8", 4.0, peer=True),
        target("a.onnx", "onnx", "fp32", 1.0), target("a-int8.onnx", "onnx", "int8", 1.0), target("a-fp16.onnx", "onnx", "fp16", 3.0)]}
    ratio = {r["name"]: r["vs_peer"] for r in flat_rows(record)}
    assert ratio["a.onnx"] == 0.5 and ratio["a-int8.onnx"] == 0.25 and ratio["a-fp16.onnx"] == 1.5


def test_a_model_past_its_timeout_fails_its_row(exported, tmp_path):
    _, _, files = exported
    record, code = run_bench([files[0]], tmp_path / "run", data=None, timeout=0.5, **FAST)
    assert code == 1
    assert record["targets"][0]["status"] == "failed" and "timed out after" in record["targets"][0]["note"]


@pytest.mark.shared
def test_peer_int8_onnx_is_quantized_like_the_benched_file(tmp_path, peer_checkpoint):
    """A file made with --onnx-quantizer onnxruntime is compared with a peer file made the same way
    (NNCF's placement runs several times slower in onnxruntime, so the ratio would mislead)."""
    from edgefa.benchmarks.bench import Target, _peek, peer_targets
    from edgefa.runtime.artifact import load_runner

    mine = Target("mine-int8.onnx", "file", "unused", "onnxruntime",
                  info={"format": "onnx", "precision": "int8", "postprocess": True, "onnx_quantizer": "onnxruntime"})
    peers = peer_targets([mine], tmp_path, progress=False)
    onnx_peers = [t for t in peers if t.ref.endswith(".onnx")]
    assert [Path(t.ref).name for t in onnx_peers] == ["3ddfa-v2-mb05-ortq-int8.onnx"]
    assert _peek(onnx_peers[0].ref, load_runner)["onnx_quantizer"] == "onnxruntime"  # read back from its metadata


def test_card_names_each_files_export_commit_when_they_differ():
    def file(name, commit):
        return {"info": {"commit": commit}}, {"name": name}

    assert _export_commits([file("a.onnx", "111"), file("a-int8.onnx", "111")]) == "commit 111"
    assert _export_commits([file("a.onnx", "111"), file("a-int8.onnx", "111"), file("a-int8.tflite", "222")]) == (
        "`a.onnx`, `a-int8.onnx`: commit 111; `a-int8.tflite`: commit 222")


def test_card_says_where_a_validation_score_comes_from():
    assert _val_origin({"balanced_nme": 6.4, "epoch": 52}) == "epoch 52; "
    # an averaged checkpoint has no training epoch: its score is its own, measured as exported
    assert "not a training epoch" in _val_origin({"balanced_nme": 6.45, "epoch": None})
