"""Pretrained weights shipped inside the package (``edgefa/weights/NAME.safetensors``).

A weights file holds tensors only (safetensors, no pickle): the network's state dict in fp16
under ``model.*``, its face model (the 68-landmark 3DMM bases and parameter statistics, fp32)
under ``face_model.*``, and a JSON header (``edgefa``) saying which registry model and options
it fits, how it was trained and what it scored. ``NAME.md`` beside it is the model card.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from edgefa.errors import EdgefaError, unknown_name_error
from edgefa.facemodel.base import FaceModel

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
WEIGHTS_FORMAT = "edgefa-weights/1"
_FM_ARRAYS = ("mean", "shape_basis", "expr_basis", "param_mean", "param_std")


def weights_dir() -> Path:
    """Where shipped weights live (a module attribute, so tests can point it elsewhere)."""
    return Path(WEIGHTS_DIR)


def list_pretrained() -> list[str]:
    """Registry names that have shipped weights."""
    return sorted(p.stem for p in weights_dir().glob("*.safetensors"))


def pretrained_name(source: str | Path) -> str | None:
    """``NAME`` of a ``NAME:pretrained`` spelling (a source for export, prune, qat), else None."""
    name, colon, rest = str(source).partition(":")
    return name if colon and rest == "pretrained" else None


def pretrained_path(name: str) -> Path:
    path = weights_dir() / f"{name}.safetensors"
    if not path.is_file():
        available = list_pretrained()
        if not available:
            raise EdgefaError(f"model '{name}': no pretrained weights are shipped with this install")
        raise unknown_name_error("pretrained model", name, available)
    return path


def save_weights(path: str | Path, state_dict: dict, face_model: FaceModel, header: dict) -> None:
    """Write a weights file atomically: fp16 floating weights, integer buffers as they are."""
    from safetensors.torch import save

    from edgefa.fileio import atomic_write_bytes

    tensors = {}
    for key, value in state_dict.items():
        value = value.detach().cpu()
        tensors[f"model.{key}"] = (value.half() if value.is_floating_point() else value).contiguous()
    for key in _FM_ARRAYS:
        tensors[f"face_model.{key}"] = torch.as_tensor(np.asarray(getattr(face_model, key), dtype=np.float32))
    header = {**header, "format": WEIGHTS_FORMAT, "face_model": {"name": face_model.name, "size": face_model.size}}
    atomic_write_bytes(Path(path), save(tensors, metadata={"edgefa": json.dumps(header)}))


def read_weights(path: str | Path) -> tuple[dict, FaceModel, dict]:
    """(float32 state dict, face model, header) of a weights file; one-line errors."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        tensors = load_file(str(path))
        header = json.loads(meta["edgefa"])
    except (SafetensorError, OSError, KeyError, ValueError) as exc:
        raise EdgefaError(f"{path}: not an edgefa weights file ({str(exc).splitlines()[0][:120]})") from None
    if header.get("format") != WEIGHTS_FORMAT:
        raise EdgefaError(f"{path}: weights format {header.get('format')!r}, expected {WEIGHTS_FORMAT!r}")
    state = {k.removeprefix("model."): (v.float() if v.is_floating_point() else v)
             for k, v in tensors.items() if k.startswith("model.")}
    try:
        fm = FaceModel(name=header["face_model"]["name"], size=int(header["face_model"]["size"]),
                       **{k: tensors[f"face_model.{k}"].numpy() for k in _FM_ARRAYS})
    except (KeyError, ValueError) as exc:
        raise EdgefaError(f"{path}: face model incomplete ({exc})") from None
    return state, fm, header
