import json
import shlex
from dataclasses import replace

import pytest
import torch

from edgefa.app.cli import main
from edgefa.errors import EdgefaError
from edgefa.models.checkpoint import load_checkpoint
from edgefa.training.config import load_config

QUICK = "training/configs/synthetic-quick.yaml"


def test_config_loads_with_overrides():
    cfg = load_config(QUICK, ["epochs=2", "optimizer.lr=0.01", "model.cfg.drop_rate=0.1", "name=x"])
    assert cfg["epochs"] == 2 and cfg["optimizer"]["lr"] == 0.01
    assert cfg["model"]["cfg"] == {"drop_rate": 0.1}
    assert cfg["output"] == "runs/x" and cfg["seed"] == 0


@pytest.mark.parametrize("override,message", [
    ("epoch=2", "unknown config key 'epoch', did you mean 'epochs'"),
    ("optimizer.lrr=1", "did you mean 'optimizer.lr'"),
    ("epochs", "expected key=value"),
    # settings of the wrong type or out of range: one line naming the key, before any work
    ("epochs=ten", "'epochs' must be a whole number (got 'ten')"),
    ("epochs=-1", "'epochs' must be >= 1 (got -1)"),
    ("batch_size=0", "'batch_size' must be >= 1"),
    ("optimizer.lr=-0.1", "'optimizer.lr' must be > 0"),
    ("augment.rotate=lots", "'augment.rotate' must be a number"),
    ("augment.flip=2", "'augment.flip' must be 0.0 to 1.0"),
    ("epochs.x=3", "'epochs' must be a whole number"),
    ("epochs=[1", "not valid YAML"),
    ("data=synthetic", "'data' must be a mapping"),
    ("optimizer.name=adam", "'optimizer.name' must be one of adamw, sgd"),
])
def test_bad_overrides(override, message):
    with pytest.raises(EdgefaError) as info:
        load_config(QUICK, [override])
    assert message in str(info.value) and "\n" not in str(info.value)


def test_checkpoint_config_names_the_shared_folder_so_another_machine_resolves_it(tmp_path, monkeypatch):
    from edgefa.quantization.config import load_compression_config
    from edgefa.training.config import portable_config

    specs = ['data.train=["aflw-train:{shared}/data/aflw-train,split=train", "synthetic:seed=0,n=4"]',
             "teacher=3ddfa-v2-mb05:{shared}/peers/3ddfa_v2_mb05/mb05_120x120.pth"]
    monkeypatch.setenv("EDGEFA_SHARED", str(tmp_path / "gpu-box"))  # trained on an upload
    cfg = load_config(QUICK, specs)
    assert cfg["data"]["train"][0] == f"aflw-train:{tmp_path}/gpu-box/data/aflw-train,split=train"
    saved = portable_config(cfg)
    assert saved["data"]["train"] == ["aflw-train:{shared}/data/aflw-train,split=train", "synthetic:seed=0,n=4"]
    assert saved["teacher"] == "3ddfa-v2-mb05:{shared}/peers/3ddfa_v2_mb05/mb05_120x120.pth"
    assert cfg["data"]["train"][0].startswith("aflw-train:/")  # the run's own config is untouched
    monkeypatch.setenv("EDGEFA_SHARED", str(tmp_path / "laptop"))  # pruned / QAT'd elsewhere
    stage = load_compression_config(None, source_config=saved)
    assert stage["data"]["train"][0] == f"aflw-train:{tmp_path}/laptop/data/aflw-train,split=train"
    assert stage["teacher"] == f"3ddfa-v2-mb05:{tmp_path}/laptop/peers/3ddfa_v2_mb05/mb05_120x120.pth"


def test_bad_config_files(tmp_path):
    with pytest.raises(EdgefaError, match="config not found"):
        load_config(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [1, 2\n")
    with pytest.raises(EdgefaError, match="not valid YAML"):
        load_config(bad)


def _tiny(tmp_path, *extra):
    return ["train", "--config", QUICK, "--quiet", "epochs=2", "data.train=synthetic:seed=0,n=48",
            "data.val=synthetic:seed=1,n=16", "data.workers=0", "batch_size=16", f"output={tmp_path}/run",
            *extra]


@pytest.mark.parametrize("ema", [[], ["ema=0.9"]], ids=["plain", "ema"])
def test_train_tiny_run_writes_checkpoints_and_resumes_exactly(tmp_path, capsys, monkeypatch, ema):
    assert main(_tiny(tmp_path, *ema)) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    assert last["epoch"] == 2 and len(last["history"]) == 2
    assert best["config"]["epochs"] == 2 and "balanced_mean" in best["metrics"]
    assert out["best_val_nme"] == pytest.approx(min(h["val_nme"] for h in last["history"]), abs=1e-3)
    if ema:  # last.pt holds both sets of weights; they differ
        assert set(last["ema"]) == set(last["state_dict"])
        assert any(not torch.equal(last["ema"][k], v) for k, v in last["state_dict"].items())

    # interrupt the same run after epoch 1 (Ctrl-C once last.pt is written), then resume it
    import edgefa.training.trainer as trainer

    real_save = trainer.save_checkpoint

    def save_then_interrupt(path, *args, **kwargs):
        real_save(path, *args, **kwargs)
        if path.name == "last.pt" and kwargs["epoch"] == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "save_checkpoint", save_then_interrupt)
    assert main(_tiny(tmp_path, *ema, f"output={tmp_path}/a")) == 130
    monkeypatch.setattr(trainer, "save_checkpoint", real_save)
    first = load_checkpoint(tmp_path / "a" / "last.pt")
    assert first["epoch"] == 1
    if ema:  # after epoch 1 best.pt is that epoch's validated weights: the average, not the raw ones
        for key, value in first["ema"].items():
            torch.testing.assert_close(load_checkpoint(tmp_path / "a" / "best.pt")["state_dict"][key], value, msg=key)
    assert main(_tiny(tmp_path, *ema, f"output={tmp_path}/a") + ["--resume", str(tmp_path / "a" / "last.pt")]) == 0
    resumed = load_checkpoint(tmp_path / "a" / "last.pt")
    for key, value in last["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][key], value, msg=key)
    for key, value in last.get("ema", {}).items():
        torch.testing.assert_close(resumed["ema"][key], value, msg=key)


def test_same_config_and_threads_give_identical_weights_with_loader_workers(tmp_path, capsys):
    """The README's run-to-run spread: with augmentation in 2 worker processes, two runs of one
    config at one thread count end bit-identical, so a spread comes from code or thread count."""
    for run in ("a", "b"):
        assert main(_tiny(tmp_path, "epochs=1", "data.workers=2", "threads=2", f"output={tmp_path}/{run}")) == 0
    a, b = (load_checkpoint(tmp_path / run / "last.pt")["state_dict"] for run in ("a", "b"))
    for key, value in a.items():
        assert torch.equal(b[key], value), key


def test_init_starts_a_second_stage_from_a_runs_or_a_published_weights_file(tmp_path, capsys):
    from edgefa.models.pretrained import read_weights, save_weights
    from edgefa.models.registry import create_model
    from edgefa.training.trainer import init_weights

    assert main(_tiny(tmp_path, "epochs=1", f"output={tmp_path}/stage1")) == 0
    stage1 = load_checkpoint(tmp_path / "stage1" / "best.pt")
    cfg = load_config(QUICK, [f"init={tmp_path}/stage1/best.pt"])
    model = create_model(cfg["model"]["name"])
    digest = init_weights(model, cfg)
    for key, value in stage1["state_dict"].items():
        torch.testing.assert_close(model.state_dict()[key], value, msg=key)
    # a published (fp16) file of the same weights starts the same model, to fp16 precision
    from edgefa.models.checkpoint import model_from_checkpoint

    _, fm, _ = model_from_checkpoint(tmp_path / "stage1" / "best.pt")
    save_weights(tmp_path / "w.safetensors", stage1["state_dict"], fm, {"model": cfg["model"]["name"]})
    other = create_model(cfg["model"]["name"])
    init_weights(other, {**cfg, "init": str(tmp_path / "w.safetensors")})
    for key, value in read_weights(tmp_path / "w.safetensors")[0].items():
        torch.testing.assert_close(other.state_dict()[key], value, msg=key)
    # the second stage records where it started
    assert main(_tiny(tmp_path, "epochs=1", f"init={tmp_path}/stage1/best.pt", f"output={tmp_path}/stage2")) == 0
    summary = json.loads((tmp_path / "stage2" / "summary.json").read_text())
    assert summary["init"] == {"path": f"{tmp_path}/stage1/best.pt", "weights_digest": digest}
    capsys.readouterr()
    assert main(_tiny(tmp_path, f"init={tmp_path}/nope.pt")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope.pt: no such file" in err[0]
    assert main(_tiny(tmp_path, "model.name=mobilenetv2_100", f"init={tmp_path}/stage1/best.pt")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds weights of" in err[0] and "mobilenetv2_100" in err[0]


def test_init_from_the_3ddfa_peer_fine_tunes_its_network(peer_checkpoint, bfm68):
    """``init: 3ddfa-v2-mb05:PATH`` starts mobilenet_v1_3ddfa from the peer's weights: before any step
    it predicts exactly what the peer predicts; another architecture is one error line."""
    from edgefa.models.checkpoint import load_3ddfa_v2
    from edgefa.models.registry import create_model
    from edgefa.training.trainer import init_weights

    cfg = load_config(QUICK, ["model.name=mobilenet_v1_3ddfa", "face_model=bfm68",
                              "init=3ddfa-v2-mb05:{shared}/peers/3ddfa_v2_mb05/mb05_120x120.pth"])
    assert cfg["init"] == f"3ddfa-v2-mb05:{peer_checkpoint}"
    model = create_model("mobilenet_v1_3ddfa")
    init_weights(model, cfg, bfm68)
    peer, _ = load_3ddfa_v2(peer_checkpoint)
    x = torch.randn(2, 3, 120, 120)
    torch.testing.assert_close(model.eval()(x), peer(x))
    with pytest.raises(EdgefaError, match="fit model mobilenet_v1_3ddfa with widen_factor=0.5"):
        init_weights(create_model("mobilenetv3_small_100"), {**cfg, "model": {"name": "mobilenetv3_small_100", "cfg": {}}})
    with pytest.raises(EdgefaError, match="parameter statistics differ"):
        init_weights(create_model("mobilenet_v1_3ddfa"), cfg, replace(bfm68, param_std=bfm68.param_std * 2))


def test_without_a_tty_progress_is_plain_lines_with_loss_lr_and_eta(tmp_path, capsys):
    """tqdm hides its bar when stdout is not a terminal (a log file, CI): the trainer then prints
    plain progress lines, so a long epoch is not silent."""
    args = [a for a in _tiny(tmp_path, "epochs=1") if a != "--quiet"]
    assert main(args) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("epoch 1/1 batch ")]
    assert [ln.split(":")[0] for ln in lines] == ["epoch 1/1 batch 1/3", "epoch 1/1 batch 2/3", "epoch 1/1 batch 3/3"]
    assert all("loss " in ln and "lr " in ln and "epoch ETA" in ln for ln in lines)


def test_unwritable_run_dir_reported_before_training(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(_tiny(tmp_path, f"output={blocker}/run")) == 2
    assert "is a file" in capsys.readouterr().err


def test_ddp_two_gloo_processes_end_with_identical_weights(tmp_path):
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           "-m", "edgefa", "train", *_tiny(tmp_path, "device=cpu", "threads=1")[1:]]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["world_size"] == 2
    digests = summary["rank_weight_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]
    assert load_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == 2


def _recipe_kind(path) -> str:
    import yaml

    keys = set(yaml.safe_load(open(path)))
    if "train" in keys:
        return "pipeline"
    return "compression" if keys & {"qat", "prune", "source"} else "training"


@pytest.mark.parametrize("recipe", sorted(p.name for p in __import__("pathlib").Path("training/configs").glob("*.yaml")))
def test_every_recipe_loads_and_names_a_registered_model(recipe):
    from edgefa.models.registry import list_models

    path = f"training/configs/{recipe}"
    kind = _recipe_kind(path)
    if kind == "pipeline":
        from edgefa.app.pipeline import load_pipeline_config

        load_pipeline_config(path)  # every key checked
        return
    if kind == "compression":  # model and data come from the source checkpoint; keys still checked
        from edgefa.quantization.config import load_compression_config

        cfg = load_compression_config(path)
    else:
        cfg = load_config(path)
        assert cfg["model"]["name"] in list_models()
    assert "{shared}" not in str(cfg["data"]) and "{shared}" not in str(cfg["teacher"])


@pytest.mark.shared
def test_distillation_from_the_peer_on_real_crops(tmp_path, capsys):
    from tests.conftest import shared_path

    shared_path("peers", "3ddfa_v2_mb05")
    args = ["train", "--config", "training/configs/mobilenetv3-small.yaml", "--quiet", "epochs=1", "batch_size=16",
            'data.train=["aflw-train:{shared}/data/aflw-train,n=32", "synthetic:seed=0,n=16"]',
            "data.val=aflw-train:{shared}/data/aflw-train,split=val,n=16", "data.workers=0",
            f"output={tmp_path}/run"]
    assert main(args) == 0
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    terms = state["history"][0]["terms"]
    assert {"distill", "pts21", "landmarks"} <= set(terms)  # teacher, AFLW-21 points, synthetic 68 points
    assert state["face_model"]["name"] == "bfm68"


def test_nan_loss_stops_with_batch_index_and_keeps_last_good_checkpoint(tmp_path, capsys, monkeypatch):
    import edgefa.training.trainer as trainer

    real_terms = trainer.loss_terms
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        terms = real_terms(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 5:  # epoch 2 (3 batches an epoch), its second batch
            terms["params"] = terms["params"] * float("nan")
        return terms

    monkeypatch.setattr(trainer, "loss_terms", poisoned)
    code = main(_tiny(tmp_path))
    err = capsys.readouterr().err
    assert code == 2 and "loss is nan at epoch 2, batch 1" in err
    assert load_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == 1


def test_paper_step_schedule_and_cosine():
    from edgefa.training.schedule import lr_at

    cfg = load_config("training/configs/multitask-mobilevit-s.yaml")
    assert lr_at(0, cfg) == pytest.approx(1e-5)  # 1e-5 -> 5e-4 over 5 epochs
    assert lr_at(2.5, cfg) == pytest.approx((1e-5 + 5e-4) / 2)
    assert lr_at(5, cfg) == pytest.approx(5e-4) and lr_at(39.9, cfg) == pytest.approx(5e-4)
    assert lr_at(40, cfg) == pytest.approx(1e-4) and lr_at(55, cfg) == pytest.approx(2e-5)  # /5 at 40, /25 at 50
    quick = load_config(QUICK)
    base = quick["optimizer"]["lr"]
    assert lr_at(1, quick) == pytest.approx(base)  # end of the warm-up
    assert lr_at(quick["epochs"], quick) == pytest.approx(base * quick["schedule"]["min_lr_ratio"])


def test_training_report_from_a_run(tmp_path):
    from edgefa.training.report import main as report_main

    listed = 'data.train=["synthetic:seed=0,n=16"]'  # quotes and brackets: the command must paste back
    assert main(_tiny(tmp_path, "epochs=1", listed)) == 0
    out = tmp_path / "rep" / "training"
    assert report_main([str(tmp_path / "run"), "--data", "synthetic:seed=5,n=8", "-o", str(out)]) == 0
    data = json.loads(out.with_suffix(".json").read_text())
    row = data["rows"][0]
    assert row["model"] == "mobilenetv3_small_100" and row["epochs_done"] == 1
    assert row["params"] > 1e6 and row["macs"] > 1e7 and row["train_command"].startswith("edgefa train --config")
    assert listed in shlex.split(row["train_command"])
    md = out.with_suffix(".md").read_text()
    assert "| mobilenetv3_small_100 | synthetic-quick |" in md and "python -m edgefa.training.report" in md

    # a later report carries this row over (its run gone) and marks it; a re-evaluated run replaces it
    later = tmp_path / "rep" / "later"
    assert report_main(["--previous", str(out.with_suffix(".json")), "--data", "synthetic:seed=5,n=8",
                        "-o", str(later)]) == 0
    kept = json.loads(later.with_suffix(".json").read_text())["rows"]
    assert [r["nme_balanced"] for r in kept] == [row["nme_balanced"]]
    assert kept[0]["carried_from"] == str(out.with_suffix(".json")) and kept[0]["evaluated_by"] == data["command"]
    assert "| mobilenetv3_small_100 † | synthetic-quick |" in later.with_suffix(".md").read_text()
    assert report_main([str(tmp_path / "run"), "--previous", str(later.with_suffix(".json")),
                        "--data", "synthetic:seed=5,n=8", "-o", str(later)]) == 0
    again = json.loads(later.with_suffix(".json").read_text())["rows"]
    assert len(again) == 1 and "carried_from" not in again[0]


def test_training_report_bad_previous_is_one_line(tmp_path, capsys):
    from edgefa.training.report import main as report_main

    bad = tmp_path / "old.json"
    bad.write_text('{"rows": []}')
    assert report_main(["--previous", str(bad), "--data", "synthetic:n=2", "-o", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bad) in err and "not a training report JSON" in err
    assert not (tmp_path / "r.md").exists()


def test_training_report_prints_the_label_quality_a_labels_file_records(tmp_path, capsys, toy_face_model):
    import numpy as np

    from edgefa.data.labels import LABELS_FORMAT, save_labels
    from edgefa.training.report import main as report_main

    block = {"balanced_mean": 3.1, "bins": {"[0,30]": 2.3, "(30,60]": 3.1, "(60,90]": 4.1}}
    meta = {"format": LABELS_FORMAT, "command": "python -m edgefa.training.labels L --check",
            "chosen": {"correspondence": "learned", "lambda": 100.0},
            "selection": {"method": "leave-one-point-out", "faces": 9,
                          "table": [{"correspondence": "learned", "lambda": 100.0, "loo_nme": 3.37}]},
            "check": {"nme": {"teacher": {**block, "balanced_mean": 3.79}, "refined": block}}}
    labels = tmp_path / "labels.npz"
    save_labels(labels, ["a.jpg"], np.zeros((1, 2, 62)), toy_face_model, meta)
    out = tmp_path / "r"
    assert report_main(["--peer", "mobilenetv3_small_100", "--labels", str(labels), "--data", "synthetic:n=4",
                        "-o", str(out)]) == 0
    md = out.with_suffix(".md").read_text()
    assert f"### Label quality: `{labels}`" in md and "| refined | 2.300 | 3.100 | 4.100 | **3.100** |" in md
    assert json.loads(out.with_suffix(".json").read_text())["label_quality"][0]["chosen"]["lambda"] == 100.0
    # a later report without the labels file carries its section over, marked; given again, it is fresh
    later = tmp_path / "later"
    assert report_main(["--peer", "mobilenetv3_small_100", "--previous", str(out.with_suffix(".json")),
                        "--data", "synthetic:n=4", "-o", str(later)]) == 0
    md = later.with_suffix(".md").read_text()
    assert f"### Label quality: `{labels}` (carried unchanged from `{out.with_suffix('.json')}`" in md
    assert "| refined | 2.300 | 3.100 | 4.100 | **3.100** |" in md
    assert report_main(["--peer", "mobilenetv3_small_100", "--labels", str(labels), "--previous",
                        str(later.with_suffix(".json")), "--data", "synthetic:n=4", "-o", str(later)]) == 0
    quality = json.loads(later.with_suffix(".json").read_text())["label_quality"]
    assert len(quality) == 1 and "carried_from" not in quality[0]
    del meta["check"]
    save_labels(labels, ["a.jpg"], np.zeros((1, 2, 62)), toy_face_model, meta)
    capsys.readouterr()
    assert report_main(["--peer", "mobilenetv3_small_100", "--labels", str(labels), "--data", "synthetic:n=4",
                        "-o", str(tmp_path / "s")]) == 2
    assert "made without --check" in capsys.readouterr().err


def test_persistent_loader_workers_see_each_new_epoch():
    """The trainer's loader is built once with persistent workers: set_epoch must still reach them,
    so epoch 2's augmentation is epoch 2's, as without workers."""
    from torch.utils.data import DataLoader

    from edgefa.training.data import build_train_set

    def images(workers):
        train_set, parts = build_train_set("synthetic:seed=0,n=8", {"rotate": 20, "rotate_prob": 1.0}, 0, True, 0, False)
        loader = DataLoader(train_set, batch_size=8, num_workers=workers, persistent_workers=workers > 0)
        out = []
        for epoch in (0, 1):
            parts[0].set_epoch(epoch)
            out.append(next(iter(loader))["image"])
        return out

    with_workers, without = images(2), images(0)
    assert not torch.equal(with_workers[0], with_workers[1])
    for a, b in zip(with_workers, without):
        assert torch.equal(a, b)


def test_report_counts_the_wall_time_of_every_resumed_segment():
    from edgefa.training.report import wall_seconds

    straight = [{"seconds": 60.0}, {"seconds": 120.0}, {"seconds": 180.0}]
    resumed = [{"seconds": 60.0}, {"seconds": 120.0}, {"seconds": 70.0}, {"seconds": 130.0}]  # resumed after 2
    assert wall_seconds(straight) == 180.0
    assert wall_seconds(resumed) == 250.0
