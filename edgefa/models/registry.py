"""Model registry in timm's style: ``create_model(name, **cfg)`` and ``list_models()``.

Every registered model is a ``FaceRegressor``: a float NCHW crop in, 62 whitened 3DMM
parameters out, with the input convention (size, colour order, normalisation) on the module
so predictors and exporters feed it correctly.
"""
from __future__ import annotations

import fnmatch

from edgefa.errors import EdgefaError, unknown_name_error

# every family registers its models on import
from edgefa.models import dense, mobile_frnet, mobilenet_v1, multitask, query_decoder, timm_backbones  # noqa: F401
from edgefa.models.base import _REGISTRY, FaceRegressor, ModelEntry, register_model  # noqa: F401  (re-exported)
from edgefa.models.pretrained import pretrained_path, read_weights


def list_models(pattern: str = "*") -> list[str]:
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def model_entry(name: str) -> ModelEntry:
    if name not in _REGISTRY:
        raise unknown_name_error("model", name, _REGISTRY)
    return _REGISTRY[name]


def create_model(name: str, pretrained: bool = False, **cfg) -> FaceRegressor:
    """``pretrained=True`` loads the weights shipped for ``name`` (``list_pretrained()``); its
    face model (needed to turn the 62 outputs into points) comes from ``load_pretrained``."""
    entry = model_entry(name)
    if pretrained:
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
    _, fm, header = read_weights(pretrained_path(name))
    return create_model(name, pretrained=True), fm, header
