"""Structured pruning: MACs drop by the asked ratio, the pruned model saves as tensors, reloads,
fine-tunes with distillation and exports with passing parity; bad input is one line, exit 2.
Tiny: 64 px inputs, synthetic crops, one short fine-tune."""
from __future__ import annotations

import pytest
import torch

from edgefa.app.cli import main
from edgefa.errors import EdgefaError
from edgefa.models.checkpoint import model_from_checkpoint, save_checkpoint
from edgefa.models.registry import create_model
from edgefa.profile import count_macs

pytest.importorskip("torch_pruning")

SIZE = 64
TINY_DATA = ["data.train=synthetic:seed=0,n=16", "data.val=synthetic:seed=1,n=8", "data.workers=0",
             "data.cache=false", "batch_size=8", "augment=false"]


def _checkpoint(tmp_path, name="mobilenetv3_small_100"):
    from edgefa.facemodel.synthetic import synthetic_face_model

    torch.manual_seed(0)
    model = create_model(name, input_size=SIZE)
    torch.nn.init.normal_(model.net.get_classifier().weight, std=0.05)  # outputs that vary per crop
    path = tmp_path / f"{name}.pt"
    save_checkpoint(path, model.eval(), synthetic_face_model(),
                    config={"face_model": "synthetic", "data": {"train": "synthetic:seed=0,n=16"}})
    return path, model.eval()


@pytest.mark.parametrize("name", ["mobilenetv2_100", "mobilenetv3_small_100", "mobilenetv3_large_100"])
@pytest.mark.parametrize("ratio", [0.3, 0.5])
def test_prune_removes_the_asked_fraction_of_macs(name, ratio):
    from edgefa.quantization.prune import prune_model

    model = create_model(name, input_size=SIZE).eval()
    macs = count_macs(model)
    result = prune_model(model, ratio)
    got = 1 - count_macs(result.model) / macs  # counted here, not taken from the record
    assert abs(got - ratio) <= 0.05, f"{name}: removed {got:.3f} of MACs, asked {ratio}"
    assert result.model.net.get_classifier().out_features == 62  # the regression head is kept
    assert result.record["params_after"] < result.record["params_before"]
    with torch.no_grad():
        assert result.model(torch.zeros(2, 3, SIZE, SIZE)).shape == (2, 62)
    # depthwise convs stayed depthwise (groups followed the pruned channels)
    for m in result.model.modules():
        if isinstance(m, torch.nn.Conv2d) and m.groups > 1:
            assert m.groups == m.in_channels == m.out_channels
    # every conv that lost channels keeps a multiple of 16 (the default round_to: CPU kernels' blocks)
    before = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}
    cut = {n: m.out_channels for n, m in result.model.named_modules()
           if isinstance(m, torch.nn.Conv2d) and m.out_channels != before[n]}
    assert cut and all(c % 16 == 0 for c in cut.values()), cut
    assert result.record["round_to"] == 16


def test_prune_round_to_one_keeps_exact_counts_and_bad_values_are_refused():
    from edgefa.quantization.prune import prune_model

    model = create_model("mobilenetv2_100", input_size=SIZE).eval()
    result = prune_model(model, 0.3, round_to=1)
    assert result.record["round_to"] == 1
    assert any(m.out_channels % 8 for m in result.model.modules() if isinstance(m, torch.nn.Conv2d))
    for bad in (0, -4, 2.5, "x"):
        with pytest.raises(EdgefaError, match="prune.round_to"):
            prune_model(model, 0.3, round_to=bad)


def test_pruned_checkpoint_reloads_without_pickles_and_exports(tmp_path):
    from edgefa.converters.export import run_export
    from edgefa.facemodel.synthetic import synthetic_face_model
    from edgefa.quantization.prune import prune_model

    _, model = _checkpoint(tmp_path)
    result = prune_model(model, 0.5)
    path = tmp_path / "pruned.pt"
    save_checkpoint(path, result.model, synthetic_face_model())
    state = torch.load(path, weights_only=True)  # tensors and plain values only
    assert state["compression"]["pruning"]["arch"]
    loaded, _, _ = model_from_checkpoint(path)
    x = torch.randn(3, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), result.model(x))
    assert count_macs(loaded) == result.record["macs_after"]
    formats = "onnx,tflite" if pytest.importorskip("litert_torch") else "onnx"
    rows, _ = run_export(str(path), formats, "fp32", tmp_path / "out", parity_n=4, progress=lambda _: None)
    assert [r.status for r in rows] == ["ok"] * len(rows), [r.reason for r in rows]


def test_mobilevit_v1_attention_is_pruned_per_head():
    from edgefa.quantization.prune import prune_model

    model = create_model("mobilevit_xxs").eval()
    result = prune_model(model, 0.3)
    got = 1 - count_macs(result.model) / count_macs(model)
    assert abs(got - 0.3) <= 0.05
    attns = [m for m in result.model.modules() if hasattr(m, "qkv") and hasattr(m, "num_heads")]
    assert attns and all(m.qkv.out_features == 3 * m.num_heads * m.head_dim for m in attns)
    with torch.no_grad():
        assert result.model(torch.zeros(1, 3, 128, 128)).shape == (1, 62)


def test_mobilevit_v2_is_refused_with_the_reason():
    from edgefa.quantization.prune import prune_model

    with pytest.raises(EdgefaError, match="MobileViT v2"):
        prune_model(create_model("mobilevitv2_050").eval(), 0.3)


def test_prune_cli_taylor_then_distilled_finetune(tmp_path, capsys):
    path, _ = _checkpoint(tmp_path)
    out = tmp_path / "run"
    code = main(["prune", "--checkpoint", str(path), "--ratio", "0.3", "--method", "taylor", "--finetune-epochs", "1",
                 "--round-to", "8", "-o", str(out), "--quiet", *TINY_DATA, "prune.taylor_crops=8"])
    assert code == 0
    state = torch.load(out / "finetune" / "best.pt", weights_only=True)
    assert state["config"]["teacher"] == str(path) and state["config"]["loss"]["distill"] > 0
    assert state["compression"]["pruning"]["method"] == "taylor"
    assert state["compression"]["pruning"]["round_to"] == 8
    model, _, _ = model_from_checkpoint(out / "finetune" / "best.pt")
    assert abs(1 - count_macs(model) / count_macs(create_model("mobilenetv3_small_100", input_size=SIZE)) - 0.3) <= 0.05


@pytest.mark.parametrize("args, message", [
    (["--ratio", "1.5"], "must be in (0, 1)"),
    (["--ratio", "0"], "must be in (0, 1)"),
    (["--ratio", "0.3", "--method", "magnitud"], "did you mean 'magnitude'"),
])
def test_prune_cli_bad_input_is_one_line(tmp_path, capsys, args, message):
    path, _ = _checkpoint(tmp_path)
    assert main(["prune", "--checkpoint", str(path), "-o", str(tmp_path / "r"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_prune_cli_round_to_is_range_checked_by_the_parser(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["prune", "--checkpoint", str(tmp_path / "x.pt"), "-o", str(tmp_path / "r"), "--ratio", "0.3",
              "--round-to", "0"])
    assert exit_info.value.code == 2 and "argument --round-to: must be >= 1, got 0" in capsys.readouterr().err


def test_prune_cli_missing_checkpoint(tmp_path, capsys):
    assert main(["prune", "--checkpoint", str(tmp_path / "nope.pt"), "--ratio", "0.3", "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "checkpoint not found" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("name", ["query_decoder_mobilenetv3_small", "mobile_frnet"])
def test_families_dep_graph_cannot_prune_are_refused_in_one_line(name):
    from edgefa.errors import EdgefaError
    from edgefa.models.registry import create_model
    from edgefa.quantization.prune import prune_model

    with pytest.raises(EdgefaError, match="cannot prune"):
        prune_model(create_model(name), 0.3)


def test_prune_cli_resumes_a_killed_finetune_from_its_last_checkpoint(tmp_path, capsys):
    path, _ = _checkpoint(tmp_path)
    out = tmp_path / "run"
    base = ["prune", "--checkpoint", str(path), "--ratio", "0.3", "-o", str(out), "--quiet", *TINY_DATA]
    assert main([*base, "--finetune-epochs", "1"]) == 0
    pruned = torch.load(out / "pruned.pt", weights_only=True)["state_dict"]
    # as if killed after epoch 1 of 2: the resumed call reuses pruned.pt and trains epoch 2 only
    assert main([*base, "--finetune-epochs", "2", "--resume", str(out / "finetune" / "last.pt")]) == 0
    last = torch.load(out / "finetune" / "last.pt", weights_only=True)
    assert last["epoch"] == 2 and [h["epoch"] for h in last["history"]] == [1, 2]
    again = torch.load(out / "pruned.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(pruned[k], again[k]) for k in pruned)
    model, _, _ = model_from_checkpoint(out / "finetune" / "best.pt")
    assert abs(1 - count_macs(model) / count_macs(create_model("mobilenetv3_small_100", input_size=SIZE)) - 0.3) <= 0.05
    capsys.readouterr()
    # another ratio than the one pruned.pt was made with is refused in one line
    assert main(["prune", "--checkpoint", str(path), "--ratio", "0.5", "-o", str(out), "--quiet", *TINY_DATA,
                 "--finetune-epochs", "3", "--resume", str(out / "finetune" / "last.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert "pruned with ratio 0.3" in err and len(err.splitlines()) == 1
    # so is another allocation (pruned.pt would not be the cut this call asks for)
    assert main([*base, "prune.allocation=global", "--finetune-epochs", "3",
                 "--resume", str(out / "finetune" / "last.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert "allocation uniform" in err and "allocation global" in err and len(err.splitlines()) == 1


def test_global_allocation_hits_the_ratio_and_cuts_layers_unevenly():
    from edgefa.quantization.prune import GLOBAL_MAX_RATIO, prune_model

    model = create_model("mobilenetv2_100", input_size=SIZE).eval()
    result = prune_model(model, 0.5, allocation="global")
    assert abs(1 - count_macs(result.model) / count_macs(model) - 0.5) <= 0.05
    assert result.record["allocation"] == "global"
    before = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}
    kept = {n: m.out_channels / before[n] for n, m in result.model.named_modules()
            if isinstance(m, torch.nn.Conv2d) and m.groups == 1 and before[n] >= 64}
    # uniform keeps every layer at one fraction (up to rounding); global spreads them
    assert max(kept.values()) - min(kept.values()) > 0.3, kept
    # no layer loses more than the cap (the rounding to 16 may keep a few more)
    assert min(kept.values()) >= 1 - GLOBAL_MAX_RATIO - 1e-6, kept


def test_prune_cli_bad_allocation_is_one_line(tmp_path, capsys):
    path, _ = _checkpoint(tmp_path)
    assert main(["prune", "--checkpoint", str(path), "-o", str(tmp_path / "r"), "--ratio", "0.3",
                 "prune.allocation=globl"]) == 2
    err = capsys.readouterr().err.strip()
    assert "did you mean 'global'" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r" / "pruned.pt").exists()


def test_prune_the_shipped_weights_by_name_fine_tunes_with_their_recipe(tmp_path):
    """``--checkpoint NAME:pretrained``: the shipped model is the source and the teacher, and the
    fine-tune inherits the recipe it was trained with (here its data is overridden to stay tiny)."""
    from edgefa.models.registry import create_model as make

    out = tmp_path / "run"
    assert main(["prune", "--checkpoint", "mobilenetv3_small_100:pretrained", "--ratio", "0.3", "--finetune-epochs", "1",
                 "-o", str(out), "--quiet", *TINY_DATA]) == 0
    pruned = torch.load(out / "pruned.pt", weights_only=True)
    assert "aflw-train" in pruned["config"]["data"]["train"]  # the shipped recipe's data, kept in the record
    assert pruned["metrics"]["nme"]["balanced_nme"] > 0  # the shipped file's own scores
    state = torch.load(out / "finetune" / "best.pt", weights_only=True)
    assert state["config"]["teacher"] == "mobilenetv3_small_100:pretrained"
    assert state["config"]["data"]["train"].startswith("synthetic:")
    model, _, _ = model_from_checkpoint(out / "finetune" / "best.pt")
    shipped = make("mobilenetv3_small_100", pretrained=True)
    assert abs(1 - count_macs(model) / count_macs(shipped) - 0.3) <= 0.05


def test_prune_unknown_shipped_name_is_one_line(tmp_path, capsys):
    assert main(["prune", "--checkpoint", "mobilenetv9:pretrained", "--ratio", "0.3", "-o", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert "no shipped weights of that name" in err and len(err.splitlines()) == 1


def test_shipped_recipe_is_rebuilt_with_the_recorded_overrides():
    """The header records the training command; its ``key=value`` overrides are part of the recipe,
    a flag's value (``--resume PATH``) is not."""
    from edgefa.app.compress import _pretrained_state

    header = {"eval": {}, "training": {"command": "edgefa train --config training/configs/mobilenetv3-small-refined.yaml "
                                                  "seed=7 ema=0.99 --resume runs/x/last.pt"}}
    config = _pretrained_state(header)["config"]
    assert (config["seed"], config["ema"]) == (7, 0.99)
    assert _pretrained_state({"training": {"command": "edgefa train --config no-such.yaml"}}) == {"metrics": {}}
    # a header that records the config is taken as it is, not rebuilt from the command
    recorded = {"seed": 3, "data": {"train": "synthetic:seed=0,n=8"}}
    assert _pretrained_state({"training": {**header["training"], "config": recorded}})["config"] == recorded


def test_prune_with_missing_finetune_data_fails_before_the_cut(tmp_path, capsys):
    """A fine-tune whose data folder is missing fails in one line before anything is pruned or saved."""
    path, _ = _checkpoint(tmp_path)
    out = tmp_path / "r"
    assert main(["prune", "--checkpoint", str(path), "-o", str(out), "--ratio", "0.3", "--finetune-epochs", "1",
                 *TINY_DATA, f"data.train=aflw-train:{tmp_path / 'nowhere'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "nowhere" in err and len(err.splitlines()) == 1
    assert not (out / "pruned.pt").exists()


def test_prune_misspelt_shipped_name_suggests_the_closest(tmp_path, capsys):
    assert main(["prune", "--checkpoint", "mobilenetv3_smal_100:pretrained", "--ratio", "0.3",
                 "-o", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert "did you mean mobilenetv3_small_100:pretrained?" in err and len(err.splitlines()) == 1
