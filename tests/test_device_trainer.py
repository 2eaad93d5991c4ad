"""edgefa.training.device_trainer: several recipes on shared, device-resident, batch-augmented data."""
from __future__ import annotations

import json

import pytest
import torch

from edgefa.errors import EdgefaError
from edgefa.models.checkpoint import load_checkpoint
from edgefa.models.registry import create_model
from edgefa.training.config import load_config
from edgefa.training.device_trainer import check_shared, main, plan, train_together

QUICK = "training/configs/synthetic-quick.yaml"
# rotation, colour and blur on, flips off (synthetic faces carry no mirror labels): tiny and fast
TINY = ["epochs=2", "data.train=synthetic:seed=0,n=40", "data.val=synthetic:seed=1,n=12", "data.workers=0",
        "batch_size=16", "model.cfg.drop_rate=0.2"]


def _cfg(tmp_path, name, *extra):
    return load_config(QUICK, [*TINY, f"name={name}", f"output={tmp_path}/{name}", *extra])


def _weights(path):
    return load_checkpoint(path)["state_dict"]


def test_two_recipes_trained_together_end_as_each_does_alone(tmp_path):
    """Shared batches, own random streams (dropout on): together == alone, weight for weight."""
    together = [_cfg(tmp_path / "t", "a"), _cfg(tmp_path / "t", "b", "model.name=mobilenetv2_100", "optimizer.lr=0.001")]
    result = train_together(together, progress=False)
    assert set(result["recipes"]) == {"a", "b"}
    for cfg in together:
        alone = _cfg(tmp_path / "alone", cfg["name"], *([f"model.name={cfg['model']['name']}",
                                                         f"optimizer.lr={cfg['optimizer']['lr']}"]))
        train_together([alone], progress=False)
        mine, theirs = _weights(tmp_path / "t" / cfg["name"] / "last.pt"), _weights(tmp_path / "alone" / cfg["name"] / "last.pt")
        for key, value in mine.items():
            torch.testing.assert_close(value, theirs[key], rtol=0, atol=0, msg=key)
        torch.manual_seed(cfg["seed"])  # and training moved them away from where they started
        start = create_model(cfg["model"]["name"], **cfg["model"]["cfg"]).state_dict()
        assert not all(torch.equal(v, start[k]) for k, v in mine.items())
    history = json.loads((tmp_path / "t" / "a" / "summary.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2] and all(h["loss"] > 0 for h in history)
    assert set(history[0]["terms"]) == {"params", "landmarks"}


def test_an_interrupted_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    straight = _cfg(tmp_path / "s", "a")
    train_together([straight], progress=False)
    cut = _cfg(tmp_path / "c", "a", "epochs=1")
    train_together([cut], progress=False)
    resumed = _cfg(tmp_path / "c", "a")  # the same recipe's 2 epochs, continued from last.pt after epoch 1
    result = train_together([resumed], resume=True, progress=False)
    assert [h["epoch"] for h in result["recipes"]["a"]["history"]] == [1, 2]
    a, b = _weights(tmp_path / "s" / "a" / "last.pt"), _weights(tmp_path / "c" / "a" / "last.pt")
    for key, value in a.items():
        torch.testing.assert_close(value, b[key], msg=key)


def test_recipes_that_cannot_share_batches_are_one_error(tmp_path):
    with pytest.raises(EdgefaError, match="batch_size is 8 but a's is 16"):
        check_shared([_cfg(tmp_path, "a"), _cfg(tmp_path, "b", "batch_size=8")])
    with pytest.raises(EdgefaError, match="same output folder"):
        check_shared([_cfg(tmp_path, "a"), _cfg(tmp_path, "a")])


def test_cli_bad_recipe_is_one_line(tmp_path, capsys):
    assert main(["--config", QUICK, "--config", QUICK, *TINY, f"output={tmp_path}/x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "same output folder" in err[0]
    assert main(["--config", QUICK, *TINY, "--budget", "-3", f"output={tmp_path}/x"]) == 2
    assert "--budget -3" in capsys.readouterr().err


def test_cli_writes_fp16_weights_that_a_second_stage_starts_from(tmp_path, capsys):
    from edgefa.models.pretrained import read_weights

    out = tmp_path / "back"
    assert main(["--config", QUICK, *TINY, "epochs=1", "--quiet", f"output={tmp_path}/a", "--weights-out", str(out)]) == 0
    weights, _, header = read_weights(out / "synthetic-quick.safetensors")
    best = _weights(tmp_path / "a" / "best.pt")
    for key, value in best.items():
        if value.is_floating_point():
            torch.testing.assert_close(weights[key], value.half().float(), msg=key)
    assert header["model"] == "mobilenetv3_small_100" and header["epochs"] == 1
    record = json.loads((out / "device-train.json").read_text())
    assert record["recipes"]["synthetic-quick"]["history"][0]["epoch"] == 1


def _timing(shared=0.01, **step):
    return {"shared_s": shared, "step_s": step, "val_s": 1.0}


def test_plan_keeps_what_fits_in_order_and_shortens_the_first_when_nothing_does():
    cfgs = [{"name": "a", "epochs": 10}, {"name": "b", "epochs": 10}, {"name": "c", "epochs": 20}]
    # a alone: 10 * (100 * (0.01 + 0.05) + 1) = 70 s; a + b: 10*100*0.01 + 2 * 10 * (5 + 1) = 130 s
    kept, notes = plan(cfgs, _timing(a=0.05, b=0.05, c=0.5), steps=100, budget_s=200)
    assert [c["name"] for c in kept] == ["a", "b"]
    assert "c: left out" in notes[2]
    kept, notes = plan(cfgs, _timing(a=0.05, b=0.05, c=0.5), steps=100, budget_s=50)
    assert [(c["name"], c["epochs"]) for c in kept] == [("a", 6)]  # floor(0.9 * 50 / 7)
    assert "shortened from 10 to 6" in notes[0] and cfgs[0]["epochs"] == 10  # the caller's recipe is untouched
    with pytest.raises(EdgefaError, match="nothing left to train with"):
        plan(cfgs, _timing(a=0.05, b=0.05, c=0.5), steps=100, budget_s=-5)


def test_throughput_benchmark_times_every_path_and_writes_its_report(tmp_path):
    from edgefa.benchmarks.train_throughput import main as throughput

    out = tmp_path / "tp"
    # no loader worker processes: forked from a test process whose earlier tests left thread pools
    # behind, a worker once hung in threadpoolctl (fork + OpenMP); the paths are timed all the same
    assert throughput(["-o", str(out), "--data", "synthetic:seed=0,n=48", "--models", "mobilenetv3_small_100",
                       "--seconds", "0.2", "--batch", "16", "--workers", "0", "--device", "cpu"]) == 0
    record = json.loads(out.with_suffix(".json").read_text())
    row = record["rows"][0]
    assert row["model"] == "mobilenetv3_small_100" and all(row[p] > 0 for p in ("loader", "inline", "batched"))
    text = out.with_suffix(".md").read_text()
    assert f"| mobilenetv3_small_100 | {row['loader']:.1f} | {row['inline']:.1f} | {row['batched']:.1f} |" in text
    assert "Command: `python" in text and "batch 16" in text
