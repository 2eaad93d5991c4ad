"""Shared fixtures: the real data under ../shared (skipped with a reason when absent)."""
from __future__ import annotations

from pathlib import Path

import pytest

from edgefa.paths import shared_root

SHARED = shared_root()


def shared_path(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (the shared data; set EDGEFA_SHARED to its folder)")
    return path


@pytest.fixture(scope="session")
def bfm68():
    from edgefa.facemodel.bfm import load_bfm68

    return load_bfm68(shared_path("data", "bfm68"))


@pytest.fixture(scope="session")
def peer_checkpoint() -> Path:
    return shared_path("peers", "3ddfa_v2_mb05", "mb05_120x120.pth")


@pytest.fixture(scope="session")
def aflw2000_root() -> Path:
    return shared_path("data", "aflw2000-3d")


@pytest.fixture(scope="session")
def toy_face_model():
    """A small random linear face model, so the math tests need no data."""
    import numpy as np

    from edgefa.facemodel.base import FaceModel

    rng = np.random.default_rng(0)
    mean = rng.normal(0, 50, (68, 3)).astype(np.float32)
    shp = rng.normal(0, 2, (204, 40)).astype(np.float32)
    exp = rng.normal(0, 2, (204, 10)).astype(np.float32)
    p_mean = np.zeros(62, np.float32)
    p_mean[[0, 5, 10]] = 0.5
    p_mean[[3, 7]] = 60
    p_std = np.ones(62, np.float32)
    p_std[:12] = 0.05
    return FaceModel("toy", mean, shp, exp, p_mean, p_std)


@pytest.fixture(scope="session")
def tiny_synthetic_checkpoint():
    """``make(path, config)``: writes an untrained 64 px MobileNetV3-Small checkpoint of the synthetic face model whose outputs vary
    per crop: a source for the export and compression studies' fast tests."""
    return _tiny_synthetic_checkpoint


def _tiny_synthetic_checkpoint(path: Path, config: dict) -> Path:
    import torch

    from edgefa.facemodel.synthetic import synthetic_face_model
    from edgefa.models.checkpoint import save_checkpoint
    from edgefa.models.registry import create_model

    torch.manual_seed(0)
    model = create_model("mobilenetv3_small_100", input_size=64)
    torch.nn.init.normal_(model.net.get_classifier().weight, std=0.05)
    save_checkpoint(path, model.eval(), synthetic_face_model(), config=config)
    return path
