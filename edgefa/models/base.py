"""What every registered model is, and the table families add themselves to (``register_model``).

Family modules import this and nothing above it; ``edgefa.models.registry`` imports the families,
so the registry and its families form no cycle (timm's ``_registry`` / ``_factory`` split).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn


class FaceRegressor(nn.Module):
    """Base class: subclasses set ``self.net`` or override ``forward``."""

    input_size: int = 120
    input_color: str = "BGR"  # channel order the network was trained on
    input_mean: float = 127.5
    input_std: float = 128.0
    num_params: int = 62

    def input_spec(self) -> dict:
        return {"size": [self.input_size, self.input_size], "layout": "NCHW", "dtype": "float32",
                "color": self.input_color, "mean": [self.input_mean] * 3, "std": [self.input_std] * 3}


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., FaceRegressor]
    family: str
    defaults: dict


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, builder: Callable[..., FaceRegressor], family: str, **defaults) -> None:
    if name in _REGISTRY:
        raise ValueError(f"model '{name}' registered twice")
    _REGISTRY[name] = ModelEntry(name, builder, family, defaults)
