import numpy as np
import pytest
import torch

from edgefa.errors import EdgefaError
from edgefa.models.checkpoint import load_3ddfa_v2, model_from_checkpoint, save_checkpoint
from edgefa.models.registry import create_model, list_models, model_entry

EXPECTED = {"mobilenetv2_100", "mobilenetv3_small_100", "mobilenetv3_large_100", "mobilevit_xxs", "mobilevit_xs",
            "mobilevit_s", "mobilevitv2_050", "mobilevitv2_075", "mobilevitv2_100", "resnet18", "resnet50",
            "mobilenet_v1_3ddfa"}


def test_registry_lists_the_backbones():
    assert EXPECTED <= set(list_models())
    assert list_models("mobilevit_*") == ["mobilevit_s", "mobilevit_xs", "mobilevit_xxs"]


def _first_per_family() -> list[str]:
    first = {}
    for name in list_models():
        first.setdefault(model_entry(name).family, name)
    return sorted(first.values())


@pytest.mark.parametrize("name", list_models())
def test_forward_gives_62_params(name):
    torch.manual_seed(0)
    model = create_model(name).eval()
    size = model.input_size
    assert size == (128 if "mobilevit" in name else 120)
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, 62) and torch.isfinite(out).all()
    spec = model.input_spec()
    assert spec["size"] == [size, size] and spec["color"] in ("RGB", "BGR")


# families whose parameters are not trained directly (the dense regressor's come from a fit to its points)
FAMILY_LOSS = {"dense": ["loss.params=0", "loss.landmarks=0", "loss.dense=1", "model.cfg.k=120"]}


@pytest.mark.parametrize("name", _first_per_family())
def test_every_family_trains_with_edgefa_train(name, tmp_path, capsys):
    """One epoch of the trainer on a few synthetic crops, for the first model of each family."""
    import json

    from edgefa.app.cli import main

    args = ["train", "--config", "training/configs/synthetic-quick.yaml", "--quiet", "epochs=1",
            f"model.name={name}", "data.train=synthetic:seed=0,n=8", "data.val=synthetic:seed=1,n=4",
            "data.workers=0", "batch_size=4", "augment=false", f"output={tmp_path}/run",
            *FAMILY_LOSS.get(model_entry(name).family, [])]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert np.isfinite(out["best_val_nme"]) and (tmp_path / "run" / "best.pt").exists()
    model, _, _ = model_from_checkpoint(tmp_path / "run" / "best.pt")
    assert model.registry_name == name


def test_cfg_overrides_reach_the_model():
    model = create_model("mobilenetv3_small_100", input_size=96)
    assert model.input_size == 96 and model.registry_cfg["input_size"] == 96


def test_checkpoint_roundtrip(tmp_path, toy_face_model):
    torch.manual_seed(0)
    model = create_model("mobilenetv3_small_100").eval()
    path = tmp_path / "best.pt"
    save_checkpoint(path, model, toy_face_model, metrics={"nme": 1.5}, epoch=3)
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]  # no temp file left
    loaded, fm, state = model_from_checkpoint(path)
    assert state["metrics"] == {"nme": 1.5} and state["epoch"] == 3
    np.testing.assert_array_equal(fm.shape_basis, toy_face_model.shape_basis)
    x = torch.randn(1, 3, 120, 120)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


def test_truncated_checkpoint_is_an_error(tmp_path, toy_face_model):
    path = tmp_path / "best.pt"
    save_checkpoint(path, create_model("mobilenetv3_small_100"), toy_face_model)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(EdgefaError, match="not a PyTorch checkpoint"):
        model_from_checkpoint(path)


@pytest.mark.shared
def test_peer_loads_as_tensors_and_matches_its_size(peer_checkpoint):
    model, fm = load_3ddfa_v2(peer_checkpoint)
    n_params = sum(p.numel() for p in model.parameters())
    assert 0.80e6 < n_params < 0.90e6  # 0.85M, the published size
    assert fm.name == "bfm68"
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 120, 120))
    assert out.shape == (1, 62)
