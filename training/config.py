"""Recipe configs: YAML per recipe plus ``key=value`` overrides, checked against the defaults."""
from __future__ import annotations

import copy
from pathlib import Path

import yaml

from edgefa.errors import EdgefaError, closest
from edgefa.paths import fill_shared, unfill_shared
from edgefa.specs import TYPE_NAMES, fits_type

# the shipped recipes (package data of ``training``)
CONFIG_DIR = Path(__file__).resolve().parent / "configs"

# Every valid key, with its default; a recipe or override naming another key is an error.
DEFAULTS = {
    "name": "run",
    "seed": 0,
    "device": "auto",  # auto: cuda when available, else cpu
    "threads": 0,  # torch CPU threads, 0: torch's default
    "channels_last": True,  # NHWC weights: 1.1-1.8x faster steps on CPU (measured, 2 cores), same numbers
    "model": {"name": "mobilenetv3_small_100", "cfg": {}},
    # weights to start from (fine-tuning, a second stage): a run's best.pt / last.pt or a published
    # .safetensors of the same model, or 3ddfa-v2-mb05:PATH for mobilenet_v1_3ddfa (fine-tunes the peer);
    # null: the model's own initialisation
    "init": None,
    "face_model": "synthetic",  # or bfm68[:DIR] (needed to distil from a 3DDFA teacher)
    "data": {"train": "synthetic:seed=0,n=2000", "val": "synthetic:seed=1,n=200", "workers": 2,
             "cache": True},
    "augment": {"flip": 0.5, "scale": 0.08, "shift": 0.06, "rotate": 15.0, "rotate_prob": 0.5,
                "color": 0.3, "blur": 0.2, "occlude": 0.2},
    "teacher": None,  # a --model spec, e.g. 3ddfa-v2-mb05:PATH, run on every augmented batch
    "epochs": 5,
    "batch_size": 64,
    "optimizer": {"name": "adamw", "lr": 2e-3, "weight_decay": 1e-4, "momentum": 0.9},
    "schedule": {"name": "cosine", "warmup_epochs": 1.0, "warmup_start": 0.1, "min_lr_ratio": 0.01,
                 "milestones": [40, 50], "gamma": 5.0},
    "pcgrad": False,  # gradient surgery across the loss terms (multi-task models)
    # decay of an exponential moving average of the weights (validated, saved as best.pt); 0: off.
    # Warmed up as in timm's ModelEmaV3: min(ema, 1 - (1 + step)^-2/3), so 0.999 needs ~32k steps
    "ema": 0.0,
    "loss": {"params": 1.0, "landmarks": 1.0, "pts21": 0.0, "yaw": 0.0, "distill": 0.0,
             "euler": 0.0, "branch_landmarks": 0.0, "dense": 0.0,  # see training/objectives.py
             "param_loss": "l2", "distill_loss": "vdc"},
    "output": "runs/{name}",
}


# (low, high) for numeric settings; None: unbounded on that side. Probabilities and ratios in [0, 1].
RANGES = {
    "seed": (0, None), "threads": (0, None), "epochs": (1, None), "batch_size": (1, None), "ema": (0.0, 0.999999),
    "data.workers": (0, None),
    "augment.flip": (0.0, 1.0), "augment.rotate_prob": (0.0, 1.0), "augment.blur": (0.0, 1.0),
    "augment.occlude": (0.0, 1.0), "augment.scale": (0.0, 0.9), "augment.shift": (0.0, 0.5),
    "augment.rotate": (0.0, 180.0), "augment.color": (0.0, 1.0),
    "optimizer.lr": (1e-12, None), "optimizer.weight_decay": (0.0, None), "optimizer.momentum": (0.0, 1.0),
    "schedule.warmup_epochs": (0.0, None), "schedule.warmup_start": (0.0, 1.0), "schedule.min_lr_ratio": (0.0, 1.0),
    "schedule.gamma": (1e-12, None),
}
# keys whose value may also be null, or text where the default is not
NULLABLE = {"teacher", "init", "augment"}
CHOICES = {"optimizer.name": ("adamw", "sgd"), "schedule.name": ("cosine", "step"),
           "loss.param_loss": ("l2", "wpdc", "vdc"), "loss.distill_loss": ("l2", "wpdc", "vdc")}


def check_values(config: dict, where: str, defaults: dict | None = None, prefix: str = "") -> None:
    """Every setting of the default's type and in its range; one line naming the key otherwise."""
    defaults = DEFAULTS if defaults is None else defaults
    for key, default in defaults.items():
        full, value = prefix + key, config.get(key)
        if key == "cfg" or (value is None and (full in NULLABLE or default is None)):
            continue
        if full == "augment" and value is False:
            continue
        if isinstance(default, dict):
            if not isinstance(value, dict):
                raise EdgefaError(f"{where}: '{full}' must be a mapping of {', '.join(default)} (got {value!r})")
            check_values(value, where, default, f"{full}.")
            continue
        if full == "data.train" and isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            continue  # several training sets
        want = type(default) if default is not None else str
        if not fits_type(value, want):
            raise EdgefaError(f"{where}: '{full}' must be {TYPE_NAMES.get(want, want.__name__)} (got {value!r})")
        if full in RANGES:
            low, high = RANGES[full]
            if (low is not None and value < low) or (high is not None and value > high):
                span = ("> 0" if low == 1e-12 else f">= {low}") if high is None else f"{low} to {high}"
                raise EdgefaError(f"{where}: '{full}' must be {span} (got {value!r})")
        if CHOICES.get(full) and value not in CHOICES[full]:
            raise EdgefaError(f"{where}: '{full}' must be one of {', '.join(CHOICES[full])} (got {value!r})")


def _flat_keys(tree: dict, prefix: str = "") -> list[str]:
    keys = []
    for k, v in tree.items():
        keys.append(prefix + k)
        if isinstance(v, dict) and k != "cfg":  # model.cfg is free-form: the model's own arguments
            keys += _flat_keys(v, f"{prefix}{k}.")
    return keys


def _merge(base: dict, update: dict, where: str, prefix: str = "", defaults: dict | None = None) -> None:
    """Merge ``update`` into ``base``; a key not in ``defaults`` is an error naming the closest valid key."""
    valid = _flat_keys(DEFAULTS if defaults is None else defaults)
    for key, value in update.items():
        full = prefix + key
        if full not in valid and not prefix.startswith("model.cfg."):
            same_leaf = [k for k in valid if k.split(".")[-1] == key]
            hint = same_leaf[0] if len(same_leaf) == 1 else closest(full, valid)
            raise EdgefaError(f"{where}: unknown config key '{full}'" + (f", did you mean '{hint}'?" if hint else ""))
        if key == "augment" and not value:
            base[key] = None  # augment: false switches it off
        elif isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value, where, f"{full}.", defaults)
        else:
            base[key] = value


merge_checked = _merge


def parse_overrides(overrides: list[str]) -> list[tuple[str, dict]]:
    """``a.b=value`` -> ("override 'a.b=value'", {"a": {"b": value}}), values parsed as YAML."""
    out = []
    for item in overrides:
        key, eq, raw = item.partition("=")
        if not eq or not key:
            raise EdgefaError(f"override '{item}': expected key=value")
        tree: dict = {}
        node = tree
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        try:
            node[parts[-1]] = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise EdgefaError(f"override '{item}': value is not valid YAML ({str(exc).splitlines()[0]})") from None
        out.append((f"override '{item}'", tree))
    return out


def read_yaml_mapping(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise EdgefaError(f"{path}: config not found")
    try:
        recipe = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise EdgefaError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(recipe, dict):
        raise EdgefaError(f"{path}: expected a mapping of config keys")
    return recipe


def load_config(path: str | Path, overrides: list[str] = ()) -> dict:
    recipe = read_yaml_mapping(path)
    config = copy.deepcopy(DEFAULTS)
    _merge(config, recipe, str(path))
    for where, tree in parse_overrides(overrides):
        _merge(config, tree, where)
    check_values(config, f"{path} with {' '.join(overrides)}" if overrides else str(path))
    config["output"] = str(config["output"]).format(name=config["name"])
    # "{shared}" in data / teacher specs: the shared data folder ($EDGEFA_SHARED, default ../shared)
    for key in ("train", "val"):
        config["data"][key] = fill_shared(config["data"][key])
    config["teacher"] = fill_shared(config["teacher"])
    config["init"] = fill_shared(config["init"])
    return config


def portable_config(config: dict) -> dict:
    """The config as a checkpoint records it: the shared data folder written ``{shared}`` again, so
    ``edgefa prune`` / ``qat`` inherit specs that resolve where they run (``$EDGEFA_SHARED``)."""
    out = copy.deepcopy(config)
    for key in ("train", "val"):
        out["data"][key] = unfill_shared(out["data"][key])
    out["teacher"] = unfill_shared(out["teacher"])
    out["init"] = unfill_shared(out["init"])
    return out
