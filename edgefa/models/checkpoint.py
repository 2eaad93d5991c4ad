"""Checkpoints: edgefa's own format and the 3DDFA-V2 peer's, both loaded as tensors only.

``torch.load(weights_only=True)`` refuses arbitrary pickled objects, so a malicious file
cannot run code; the 3DDFA parameter statistics pickle goes through ``safe_pickle``.
"""
from __future__ import annotations

import os
import pickle
import re
import subprocess
import warnings
from pathlib import Path

import numpy as np
import torch

from edgefa.errors import EdgefaError
from edgefa.facemodel.base import FaceModel
from edgefa.facemodel.bfm import PARAM_STATS_FILE, load_bfm68
from edgefa.fileio import require_regular_file, temp_sibling
from edgefa.models.architecture import rebuild_model
from edgefa.models.registry import FaceRegressor, create_model
from edgefa.paths import find_bfm68

CHECKPOINT_FORMAT = "edgefa-checkpoint"
CHECKPOINT_VERSION = 1


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent, timeout=5)
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def _to_tensors(tree):
    if isinstance(tree, dict):
        return {k: _to_tensors(v) for k, v in tree.items()}
    if isinstance(tree, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(tree))
    return tree


def save_checkpoint(path: str | Path, model: FaceRegressor, face_model: FaceModel, **extra) -> None:
    """Write atomically (temp file, then rename) so an interrupted save leaves no half file."""
    path = Path(path)
    state = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model": {"name": model.registry_name, "cfg": dict(model.registry_cfg)},
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "face_model": _to_tensors(face_model.state_dict()),
        "git_commit": git_commit(),
        **extra,
    }
    record = getattr(model, "compression_record", None)
    if record:  # pruned / QAT models: plain numbers that let model_from_checkpoint rebuild them
        state["compression"] = record
    save_state(path, state)


def save_state(path: str | Path, state: dict) -> None:
    """``torch.save`` a checkpoint dict atomically (temp file, then rename)."""
    path = Path(path)
    tmp = temp_sibling(path)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _torch_load(path: Path) -> object:
    require_regular_file(path, "checkpoint")  # a FIFO would block torch.load forever
    with open(path, "rb") as fh:
        head = fh.read(4)
    # torch.save writes a zip; older torch (3DDFA-V2's checkpoints) a pickle, which torch's
    # weights-only unpickler still reads safely; anything else is not a checkpoint
    if head != b"PK\x03\x04" and head[:1] != b"\x80":
        raise EdgefaError(f"{path}: not a PyTorch checkpoint (neither torch.save's zip nor a pickle)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols: our error says it all
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"unsupported (?:global: )?GLOBAL (\S+)", str(exc), re.IGNORECASE)
        if not found:  # garbage bytes also fail inside the weights-only unpickler
            raise EdgefaError(f"{path}: not a PyTorch checkpoint the tensors-only loader can read "
                              "(unreadable pickle data)") from exc
        raise EdgefaError(f"{path}: refused to load, holds more than tensors "
                          f"(it references {found.group(1)})") from exc
    except Exception as exc:  # truncated zip, random bytes, ...: not a checkpoint
        raise EdgefaError(f"{path}: not a PyTorch checkpoint ({type(exc).__name__}: {str(exc)[:160]})") from exc


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    state = _torch_load(path)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        hint = " (a 3DDFA-V2 checkpoint? use --model 3ddfa-v2-mb05:PATH)" if isinstance(state, dict) else ""
        raise EdgefaError(f"{path}: not an edgefa checkpoint{hint}")
    for key in ("model", "state_dict", "face_model"):
        if key not in state:
            raise EdgefaError(f"{path}: edgefa checkpoint without '{key}'")
    return state


def model_from_checkpoint(path: str | Path) -> tuple[FaceRegressor, FaceModel, dict]:
    state = load_checkpoint(path)
    return (*model_from_state(state, str(path)), state)


def model_from_state(state: dict, where: str) -> tuple[FaceRegressor, FaceModel]:
    """The model and face model of a checkpoint's tensors already in memory; `where` names their
    source in errors."""
    if state.get("compression"):  # pruned and/or QAT: rebuilt from recorded shapes, never unpickled
        model = rebuild_model(state, where)
    else:
        model = create_model(state["model"]["name"], **state["model"]["cfg"])
        try:
            model.load_state_dict(state["state_dict"])
        except RuntimeError as exc:
            raise EdgefaError(f"{where}: weights do not fit model '{state['model']['name']}' "
                              f"({str(exc).splitlines()[0]})") from exc
    fm_state = {k: (v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in state["face_model"].items()}
    return model.eval(), FaceModel.from_state_dict(fm_state)


def load_3ddfa_v2(path: str | Path, bfm: str | Path | None = None,
                  widen_factor: float = 0.5) -> tuple[FaceRegressor, FaceModel]:
    """3DDFA-V2 MobileNet-V1 checkpoint (legacy format, ``{'state_dict': ...}``) + bfm68 face model."""
    path = Path(path)
    state = _torch_load(path)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise EdgefaError(f"{path}: not a 3DDFA-V2 state dict")
    weights = {k.removeprefix("module."): v for k, v in state.items()}
    # fc_lm is 3DDFA-V2's auxiliary 2D-landmark head; the 62 parameters come from fc_param
    weights = {k: v for k, v in weights.items() if not k.startswith("fc_lm.")}
    model = create_model("mobilenet_v1_3ddfa", widen_factor=widen_factor)
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise EdgefaError(f"{path}: weights do not fit 3DDFA-V2 MobileNet-V1 x{widen_factor} "
                          f"({str(exc).splitlines()[0]})") from exc
    stats = path.parent / PARAM_STATS_FILE
    face_model = load_bfm68(find_bfm68(bfm, near=path), param_stats=stats if stats.is_file() else None)
    return model.eval(), face_model
