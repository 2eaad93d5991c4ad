"""Model registry in timm's style: ``create_model(name, **cfg)`` and ``list_models()``.

Every registered model is a ``FaceRegressor``: a float NCHW crop in, 62 whitened 3DMM
parameters out, with the input convention (size, colour order, normalisation) on the module
so predictors and exporters feed it correctly.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Callable

from torch import nn

from edgefa.errors import unknown_name_error


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


def _ensure_registered() -> None:
    # families register on import; importing here keeps `edgefa.models` import-light
    from edgefa.models import dense, mobile_frnet, mobilenet_v1, multitask, query_decoder, timm_backbones  # noqa: F401


def list_models(pattern: str = "*") -> list[str]:
    _ensure_registered()
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def model_entry(name: str) -> ModelEntry:
    _ensure_registered()
    if name not in _REGISTRY:
        raise unknown_name_error("model", name, _REGISTRY)
    return _REGISTRY[name]


def create_model(name: str, pretrained: bool = False, **cfg) -> FaceRegressor:
    """``pretrained=True`` loads the weights shipped for ``name`` (``list_pretrained()``); its
    face model (needed to turn the 62 outputs into points) comes from ``load_pretrained``."""
    entry = model_entry(name)
    if pretrained:
        from edgefa.errors import EdgefaError
        from edgefa.models.pretrained import pretrained_path, read_weights

        path = pretrained_path(name)
        state, _, header = read_weights(path)
        shipped = header.get("model_cfg", {})
        clash = {k: v for k, v in cfg.items() if shipped.get(k, entry.defaults.get(k)) != v}
        if clash:
            raise EdgefaError(f"model '{name}': the pretrained weights were trained with "
                              f"{ {k: shipped.get(k, entry.defaults.get(k)) for k in clash} }, not {clash}")
        cfg = {**shipped, **cfg}
    model = entry.builder(**{**entry.defaults, **cfg})
    model.registry_name = name
    model.registry_cfg = {**entry.defaults, **cfg}
    if pretrained:
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise EdgefaError(f"{path}: weights do not fit model '{name}' ({str(exc).splitlines()[0]})") from None
        model.eval()
    return model


def load_pretrained(name: str) -> tuple[FaceRegressor, object, dict]:
    """The shipped model ``name`` with its face model and header (training, metrics)."""
    from edgefa.models.pretrained import pretrained_path, read_weights

    _, fm, header = read_weights(pretrained_path(name))
    return create_model(name, pretrained=True), fm, header
