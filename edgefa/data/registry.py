"""``--data`` specs -> datasets: ``KIND[:PATH][,key=value...]``, e.g. ``synthetic:seed=0,n=500``."""
from __future__ import annotations

import importlib
import inspect

from edgefa.errors import EdgefaError, closest, unknown_name_error
from edgefa.paths import shared_root
from edgefa.specs import TYPE_NAMES, fits_type, parse_spec

# kind -> (module, class, default folder under shared/ or None if a path is required);
# imported on use so one reader's dependencies (scipy for .mat) load only when needed
DATASETS = {
    "aflw2000-3d": ("edgefa.data.aflw2000", "AFLW2000Crops", "data/aflw2000-3d"),
    "aflw2000-3d-original": ("edgefa.data.aflw2000", "AFLW2000Original", "data/aflw2000-3d"),
    "aflw-train": ("edgefa.data.aflw_train", "AFLWTrain", "data/aflw-train"),
    "300w-lp": ("edgefa.data.w300lp", "W300LP", None),
    "folder": ("edgefa.data.folder", "ImageFolder", None),
    "synthetic": ("edgefa.data.synthetic", "SyntheticFaces", None),
}


# the smallest value each numeric option takes
OPTION_MINIMUM = {"n": 1, "size": 16, "seed": 0, "occlusion": 0.0}
_TYPES = {"int": int, "float": float, "bool": bool, "str": str}


def _check_option(text: str, key: str, value, param: inspect.Parameter) -> None:
    """Type (from the constructor's default or annotation) and range of one spec option; one-line errors."""
    want = type(param.default) if param.default not in (None, inspect.Parameter.empty) else None
    if want is None:
        want = _TYPES.get(str(param.annotation).split("|")[0].strip())
    if want is None:
        return
    ok, expected = fits_type(value, want), TYPE_NAMES.get(want, want.__name__)
    low = OPTION_MINIMUM.get(key)
    if ok and low is not None and value < low:
        ok, expected = False, f"{expected} >= {low}"
    elif low is not None:
        expected = f"{expected} >= {low}"
    if not ok:
        raise EdgefaError(f"--data {text}: option {key} must be {expected} (got {value!r})")


def create_dataset(text: str):
    spec = parse_spec(text, set(DATASETS))
    if spec is None:
        raise unknown_name_error("dataset", text.partition(":")[0].partition(",")[0], DATASETS)
    module, class_name, default_dir = DATASETS[spec.kind]
    cls = getattr(importlib.import_module(module), class_name)
    params = inspect.signature(cls.__init__).parameters
    allowed = [p for p in params if p not in ("self", "root")]
    for key in spec.options:
        if key not in allowed:
            hint = closest(key, allowed)
            raise EdgefaError(f"--data {text}: unknown option '{key}' for {spec.kind}"
                              f"{f' (did you mean {hint!r}?)' if hint else ''}; valid: {', '.join(allowed)}")
        _check_option(text, key, spec.options[key], params[key])
    if "root" not in params:
        if spec.path:
            raise EdgefaError(f"--data {text}: {spec.kind} takes no path, only key=value options")
        return cls(**spec.options)
    path = spec.path
    if path is None:
        if default_dir is None:
            raise EdgefaError(f"--data {text}: give the folder, e.g. {spec.kind}:PATH")
        path = shared_root() / default_dir
        if not path.exists():
            raise EdgefaError(f"--data {text}: no path given and {path} does not exist; use {spec.kind}:PATH")
    return cls(path, **spec.options)
