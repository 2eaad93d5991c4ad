"""Compressed models in plain edgefa checkpoints, with no pickled modules.

A checkpoint stays ``{model: {name, cfg}, state_dict, ...}`` plus a ``compression`` entry of
plain ints / floats / strings:

- ``pruning.arch``: for each module whose shape attributes pruning changed (``out_channels``,
  ``groups`` of a depthwise conv, ``num_features``, an attention's ``head_dim`` ...), the new
  values. Rebuilding = the registry's fresh model -> set those attributes -> give every parameter
  and buffer the shape the state_dict holds -> ``load_state_dict``.
- ``qat``: how the fake-quant graph was prepared; its float weights and observer / fake-quant
  tensors are the state_dict of that graph, and rebuilding re-runs the same ``prepare`` on the
  rebuilt float model before loading them. That step needs the QAT toolchain, which sits a layer
  above the models: ``edgefa.quantization.qat`` registers it here (``register_rebuild_hook``) on import.
"""
from __future__ import annotations

import torch
from torch import nn

from edgefa.errors import EdgefaError
from edgefa.models.registry import create_model

# compression kind -> fn(float model, recorded settings) -> the prepared model; set by the layers
# that own each kind (edgefa.quantization.qat registers "qat")
_REBUILD_HOOKS: dict = {}


def register_rebuild_hook(kind: str, fn) -> None:
    _REBUILD_HOOKS[kind] = fn

# module attributes that describe a layer's shape (and that pruning changes); everything else
# about a module (stride, padding, activation) comes from the registry's constructor
SHAPE_ATTRS = ("in_channels", "out_channels", "groups", "in_features", "out_features", "num_features",
               "normalized_shape", "num_channels", "num_groups", "num_heads", "head_dim", "attn_dim",
               "embed_dim", "scale")


def _plain(value):
    if isinstance(value, tuple):
        return [int(v) for v in value]
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value
    return None


def shape_attrs(model: nn.Module) -> dict[str, dict]:
    """{module name: {attr: value}} of every shape attribute that is a plain number (or tuple)."""
    out = {}
    for name, module in model.named_modules():
        attrs = {a: _plain(getattr(module, a)) for a in SHAPE_ATTRS if hasattr(module, a)}
        attrs = {a: v for a, v in attrs.items() if v is not None}
        if attrs:
            out[name] = attrs
    return out


def arch_diff(before: dict[str, dict], after: dict[str, dict]) -> dict[str, dict]:
    """The attributes that changed between two ``shape_attrs`` snapshots."""
    diff = {}
    for name, attrs in after.items():
        changed = {a: v for a, v in attrs.items() if before.get(name, {}).get(a) != v}
        if changed:
            diff[name] = changed
    return diff


def apply_arch(model: nn.Module, arch: dict[str, dict], state_dict: dict[str, torch.Tensor]) -> nn.Module:
    """Reshape a freshly built model in place to a pruned architecture: the recorded attributes,
    then every own parameter / buffer resized to its state_dict shape (values come at load)."""
    modules = dict(model.named_modules())
    for name, attrs in arch.items():
        if name not in modules:
            raise EdgefaError(f"pruned architecture names module '{name}', which model "
                              f"'{getattr(model, 'registry_name', '?')}' does not have")
        for attr, value in attrs.items():
            setattr(modules[name], attr, tuple(value) if isinstance(value, list) else value)
    for mod_name, module in modules.items():
        prefix = f"{mod_name}." if mod_name else ""
        for key, param in list(module.named_parameters(recurse=False)):
            saved = state_dict.get(prefix + key)
            if saved is not None and saved.shape != param.shape:
                setattr(module, key, nn.Parameter(torch.empty(saved.shape, dtype=param.dtype),
                                                  requires_grad=param.requires_grad))
        for key, buf in list(module.named_buffers(recurse=False)):
            saved = state_dict.get(prefix + key)
            if buf is not None and saved is not None and saved.shape != buf.shape:
                module.register_buffer(key, torch.empty(saved.shape, dtype=buf.dtype))
    return model


def rebuild_model(state: dict, path: str = "checkpoint"):
    """The model a checkpoint with a ``compression`` entry holds, weights loaded, in eval mode."""
    record = state["compression"]
    model = create_model(state["model"]["name"], **state["model"]["cfg"])
    weights = state["state_dict"]
    if "pruning" in record:
        float_weights = weights
        if "qat" in record:  # the fake-quant graph keeps the float weights under the same names
            float_weights = {k.removeprefix("qat."): v for k, v in weights.items() if k.startswith("qat.")}
        apply_arch(model, record["pruning"]["arch"], float_weights)
        model.compression_record = {"pruning": record["pruning"]}
    if "qat" in record:
        if "qat" not in _REBUILD_HOOKS:
            raise EdgefaError(f"{path}: a quantization-aware-trained checkpoint; import edgefa.quantization.qat "
                              "first (it rebuilds the fake-quant graph), or use its exported files")
        model = _REBUILD_HOOKS["qat"](model, record["qat"])
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise EdgefaError(f"{path}: weights do not fit the compressed model '{state['model']['name']}' "
                          f"({str(exc).splitlines()[0]})") from exc
    return model.eval()
