"""benchmarks/average_weights.py: float tensors averaged, the result loads as a model; checkpoints of
different architectures or a bad file are one error line and write nothing."""
import torch

from edgefa.benchmarks.average_weights import main
from edgefa.facemodel.synthetic import synthetic_face_model
from edgefa.models.checkpoint import model_from_checkpoint, save_checkpoint
from edgefa.models.registry import create_model


def _checkpoint(path, seed, name="mobilenetv3_small_100"):
    torch.manual_seed(seed)
    model = create_model(name, input_size=64)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, model, synthetic_face_model(), epoch=seed)
    return model


def test_average_of_two_checkpoints_is_their_mean_and_loads(tmp_path):
    a = _checkpoint(tmp_path / "a.pt", 0)
    b = _checkpoint(tmp_path / "b.pt", 1)
    out = tmp_path / "soup" / "best.pt"
    assert main([str(tmp_path / "a.pt"), str(tmp_path / "b.pt"), "-o", str(out)]) == 0
    soup, _, state = model_from_checkpoint(out)
    sa, sb = a.state_dict(), b.state_dict()
    for key, value in soup.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(value, (sa[key] + sb[key]) / 2)
        else:
            assert torch.equal(value, sb[key])
    assert state["epoch"] is None and state["averaged_from"] == [str(tmp_path / "a.pt"), str(tmp_path / "b.pt")]
    assert "metrics" not in state and "history" not in state  # no val data given or in a config
    assert soup(torch.rand(1, 3, 64, 64)).shape == (1, 62)


def test_the_average_records_its_own_validation_score(tmp_path, capsys):
    from edgefa.data.registry import create_dataset
    from edgefa.evaluate import evaluate
    from edgefa.predictor import load_predictor

    _checkpoint(tmp_path / "a.pt", 0)
    _checkpoint(tmp_path / "b.pt", 1)
    out = tmp_path / "soup.pt"
    assert main([str(tmp_path / "a.pt"), str(tmp_path / "b.pt"), "-o", str(out), "--val-data", "synthetic:seed=1,n=4"]) == 0
    state = torch.load(out, weights_only=True)
    again = evaluate(load_predictor(str(out)), create_dataset("synthetic:seed=1,n=4"), progress=False)["nme"]
    assert state["metrics"]["balanced_mean"] == again["balanced_mean"]
    assert f"{again['balanced_mean']:.3f} %" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt", "b.pt", "soup.pt"]  # no temp file left


def test_different_architectures_or_junk_is_one_error_line(tmp_path, capsys):
    _checkpoint(tmp_path / "a.pt", 0)
    _checkpoint(tmp_path / "c.pt", 0, name="mobilenetv3_large_100")
    out = tmp_path / "out.pt"
    assert main([str(tmp_path / "a.pt"), str(tmp_path / "c.pt"), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not the same architecture" in err
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    assert main([str(tmp_path / "a.pt"), str(tmp_path / "junk.pt"), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "junk.pt" in err
    assert main([str(tmp_path / "a.pt"), "-o", str(out)]) == 2
    assert "at least two" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".out.pt*"))
