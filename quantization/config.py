"""Compression recipes: the training keys (data, loss, optimizer, ...) plus ``prune``, ``finetune``,
``qat`` and ``export`` sections, every key checked (an unknown one names the closest).

Layering, lowest first: training defaults -> the source checkpoint's own training config (so a
recipe that says nothing about data or loss fine-tunes on what the model was trained on) -> the
recipe YAML -> ``key=value`` overrides.
"""
from __future__ import annotations

import copy
from pathlib import Path

from edgefa.errors import EdgefaError
from edgefa.paths import fill_shared
from edgefa.quantization.float_parts import DEFAULT_INT8_FLOAT_PARTS

COMPRESSION_DEFAULTS = {
    "source": None,  # checkpoint to compress; `--checkpoint` on the command line wins
    "prune": {"ratio": 0.5, "method": "magnitude", "tolerance": 0.02,
              "round_to": 16,  # kept channels in multiples of 16: CPU kernels block by 8/16 (see prune.py)
              "taylor_crops": 32,  # labelled crops whose loss gradients rank channels (taylor)
              "allocation": "uniform"},  # or "global": channels ranked across layers (prune.py)
    # fine-tune after pruning, distilled from the unpruned source model
    "finetune": {"epochs": 0, "lr": 1e-3, "distill": 1.0},
    # quantization-aware training; the freezes count finished QAT epochs (null: never)
    # xnnpack_int8: hard-swish split and means int8 (quantization/qat.py): a faster TFLite file, a slower ONNX one
    # float_parts: network parts trained and exported float, as post-training int8's `--int8-float` (or "none")
    "qat": {"epochs": 2, "lr": 1e-4, "distill": 1.0, "freeze_bn_after": 1, "freeze_observers_after": 1,
            "xnnpack_int8": False, "float_parts": ",".join(DEFAULT_INT8_FLOAT_PARTS)},
    "export": {"formats": "onnx,tflite", "calib_data": None, "calib_n": 200, "parity_data": None,
               "parity_n": 32, "postprocess": False},
}
SECTIONS = tuple(COMPRESSION_DEFAULTS)


def _training_defaults() -> dict:
    from edgefa.training.config import DEFAULTS

    return copy.deepcopy({**DEFAULTS, **COMPRESSION_DEFAULTS})


def _fill_shared(cfg: dict) -> dict:
    """"{shared}" in data / teacher / export specs -> the shared data folder, as training's loader does."""
    for key in ("train", "val"):
        cfg["data"][key] = fill_shared(cfg["data"][key])
    cfg["teacher"] = fill_shared(cfg["teacher"])
    for key in ("calib_data", "parity_data"):
        cfg["export"][key] = fill_shared(cfg["export"][key])
    return cfg


def load_compression_config(path: str | Path | None, overrides: list[str] = (), source: str | None = None,
                            source_config: dict | None = None) -> dict:
    """The full recipe dict. ``source_config``: the source checkpoint's stored training config."""
    from edgefa.training.config import DEFAULTS, check_values, merge_checked, parse_overrides, read_yaml_mapping

    defaults = _training_defaults()
    cfg = copy.deepcopy(defaults)
    if source_config:  # only keys training still knows (old checkpoints may hold retired ones)
        inherited = {k: v for k, v in source_config.items() if k in defaults and k not in SECTIONS + ("name", "output")}
        try:
            merge_checked(cfg, copy.deepcopy(inherited), "source checkpoint config", defaults=defaults)
        except EdgefaError:
            pass  # a config from an older edgefa: keep the defaults rather than fail
    if path is not None:
        merge_checked(cfg, read_yaml_mapping(path), str(path), defaults=defaults)
    for where, tree in parse_overrides(list(overrides)):
        merge_checked(cfg, tree, where, defaults=defaults)
    if source:
        cfg["source"] = str(source)
    check_values(cfg, str(path or "compression recipe") + (f" with {' '.join(overrides)}" if overrides else ""),
                 defaults=DEFAULTS)  # the training keys; the stage sections are checked where they are used
    cfg["output"] = str(cfg["output"]).format(name=cfg["name"])
    return _fill_shared(cfg)


def stage_config(cfg: dict, stage: str, output: Path, teacher: str | None) -> dict:
    """The training config of one stage (``finetune`` or ``qat``): its epochs and lr (cosine to
    ``schedule.min_lr_ratio``, no warm-up), distilled from ``teacher`` (the stage's own float
    starting point) with the stage's distill weight."""
    section = cfg[stage]
    out = copy.deepcopy({k: v for k, v in cfg.items() if k not in SECTIONS})
    out["name"] = f"{cfg['name']}-{stage}"
    out["output"] = str(output)
    out["init"] = None  # the stage starts from the source checkpoint, not from the source run's own init
    if stage == "qat":  # an EMA cannot average observers whose shapes change on their first batch
        out["ema"] = 0.0
    out["epochs"] = int(section["epochs"])
    out["optimizer"]["lr"] = float(section["lr"])
    # trained weights: no warm-up (a source recipe's 2 warm-up epochs would be a whole 2-epoch stage,
    # ending at its peak lr) and cosine over the stage (a step schedule's milestones lie beyond it)
    out["schedule"] = {**out["schedule"], "name": "cosine", "warmup_epochs": 0}
    out["loss"]["distill"] = float(section["distill"]) if teacher else 0.0
    out["teacher"] = teacher if section["distill"] else None
    if out["loss"]["distill"] and not out["teacher"]:
        raise EdgefaError(f"{stage}.distill: needs a teacher checkpoint")
    return out
