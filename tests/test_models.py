import numpy as np
import pytest
import torch

from edgefa.errors import EdgefaError
from edgefa.models.checkpoint import load_3ddfa_v2, model_from_checkpoint, save_checkpoint
from edgefa.models.registry import create_model, list_models

EXPECTED = {"mobilenetv2_100", "mobilenetv3_small_100", "mobilenetv3_large_100", "mobilevit_xxs", "mobilevit_xs",
            "mobilevit_s", "mobilevitv2_050", "mobilevitv2_075", "mobilevitv2_100", "resnet18", "resnet50",
            "mobilenet_v1_3ddfa"}


def test_registry_lists_the_backbones():
    assert EXPECTED <= set(list_models())
    assert list_models("mobilevit_*") == ["mobilevit_s", "mobilevit_xs", "mobilevit_xxs"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_forward_gives_62_params(name):
    torch.manual_seed(0)
    model = create_model(name).eval()
    size = model.input_size
    assert size == (128 if name.startswith("mobilevit") else 120)
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, 62) and torch.isfinite(out).all()
    spec = model.input_spec()
    assert spec["size"] == [size, size] and spec["color"] in ("RGB", "BGR")


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
