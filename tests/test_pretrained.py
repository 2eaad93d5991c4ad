"""Shipped weights: tensors-only files, loadable by registry name, listed, with one-line errors."""
import numpy as np
import pytest
import torch

import edgefa.models.pretrained as pretrained
from edgefa.app.cli import main
from edgefa.errors import EdgefaError
from edgefa.models.registry import create_model, load_pretrained

NAME = "mobilenetv3_small_100"


@pytest.fixture()
def shipped(tmp_path, monkeypatch, toy_face_model):
    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", tmp_path)
    model = create_model(NAME).eval()
    pretrained.save_weights(tmp_path / f"{NAME}.safetensors", model.state_dict(), toy_face_model,
                            {"model": NAME, "model_cfg": {}})
    return model


def test_weights_file_round_trips_at_fp16(shipped, toy_face_model):
    model, fm, header = load_pretrained(NAME)
    assert header["model"] == NAME and fm.name == "toy"
    np.testing.assert_allclose(fm.shape_basis, toy_face_model.shape_basis)
    for key, value in shipped.state_dict().items():
        got = model.state_dict()[key]
        if value.is_floating_point():
            torch.testing.assert_close(got, value.half().float(), msg=key)
        else:
            assert torch.equal(got, value), key
    x = torch.randn(2, 3, 120, 120)
    with torch.no_grad():  # fp16 weights: the same outputs to fp16 precision
        torch.testing.assert_close(model(x), shipped(x), atol=0.05, rtol=0.05)


def test_pretrained_spec_is_listed_and_evaluates(shipped, capsys):
    assert pretrained.list_pretrained() == [NAME]
    assert main(["models", "--pretrained"]) == 0
    out = capsys.readouterr().out
    assert NAME in out and "mobilenetv2_100" not in out
    assert main(["eval", "--model", f"{NAME}:pretrained", "--data", "synthetic:seed=1,n=8", "--quiet"]) == 0
    assert "NME" in capsys.readouterr().out


def test_missing_or_broken_weights_are_one_line(shipped, tmp_path, capsys):
    with pytest.raises(EdgefaError, match="unknown pretrained model 'mobilenetv3_large_100'.*valid: " + NAME):
        create_model("mobilenetv3_large_100", pretrained=True)
    (tmp_path / "mobilenetv2_100.safetensors").write_bytes(b"\x00" * 64)
    assert main(["eval", "--model", "mobilenetv2_100:pretrained", "--data", "synthetic:seed=1,n=4"]) == 2
    err = capsys.readouterr().err.strip()
    assert "mobilenetv2_100.safetensors: not an edgefa weights file" in err and len(err.splitlines()) == 1
    assert main(["eval", "--model", f"{NAME},pretrained=true", "--data", "synthetic:seed=1,n=4"]) == 2
    assert f"write {NAME}:pretrained" in capsys.readouterr().err


def test_publish_writes_weights_and_a_card_measured_on_the_file(tmp_path, monkeypatch, capsys):
    """A trained checkpoint -> shipped weights whose header and model card carry the accuracy of
    the written (fp16) file, then listed and loadable by name."""
    from edgefa.training.publish import main as publish_main

    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", tmp_path / "weights")
    run = tmp_path / "run"
    assert main(["train", "--config", "training/configs/synthetic-quick.yaml", "--quiet", "epochs=1",
                 "data.train=synthetic:seed=0,n=32", "data.val=synthetic:seed=1,n=8", "data.workers=0",
                 "batch_size=16", f"output={run}"]) == 0
    capsys.readouterr()
    assert publish_main([str(run / "best.pt"), "--data", "synthetic:seed=2,n=8",
                         "--folder", str(tmp_path / "weights")]) == 0
    _, _, header = load_pretrained(NAME)
    nme = header["eval"]["nme"]["balanced_nme"]
    # the recipe as trained rides along: edgefa prune / qat of NAME:pretrained fine-tune with it
    from edgefa.models.checkpoint import load_checkpoint

    assert header["training"]["config"] == load_checkpoint(run / "best.pt")["config"]
    card = (tmp_path / "weights" / f"{NAME}.md").read_text()
    assert f"**{nme:.3f} %**" in card and "non-commercial" in card and "epochs=1" in card
    assert f"python -m edgefa.training.publish {run / 'best.pt'} --data synthetic:seed=2,n=8" in card
    assert main(["models", "--pretrained"]) == 0
    assert f"balanced NME {nme:.3f} %" in capsys.readouterr().out
    assert publish_main([str(tmp_path / "none.pt"), "--folder", str(tmp_path / "weights")]) == 2
    assert "none.pt: checkpoint not found" in capsys.readouterr().err


def test_pretrained_with_other_options_is_refused(shipped):
    with pytest.raises(EdgefaError, match="pretrained weights were trained with"):
        create_model(NAME, pretrained=True, drop_rate=0.3)
