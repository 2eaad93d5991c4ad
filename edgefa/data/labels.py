"""Refined-labels files for aflw-train (made by ``python -m edgefa.training.labels``): one ``.npz``
(no pickles) holding, for each crop name, 62 raw params, their 68 points (crop pixels) and
yaw/pitch/roll, for the crop and for its horizontal mirror, plus how it was made (``meta``).
A compact copy (``compact_labels``, for a data pack: the params only, whitened in fp16, 0.11 of the
size; on the aflw-train labels 0.008 px of landmark error on average, 0.065 px at most; angles 0.005
degrees on average, a few degrees of pitch/roll at |yaw| ~ 90 where they are ill-defined) gets its params,
points and angles back on reading."""
from __future__ import annotations

import io
import json
import zipfile
import zlib
from pathlib import Path

import numpy as np

from edgefa.errors import EdgefaError
from edgefa.facemodel.base import FaceModel
from edgefa.facemodel.geometry import euler_angles, landmarks
from edgefa.fileio import atomic_write_bytes

LABELS_FORMAT = "edgefa-aflw-labels/1"


def save_labels(path: Path, names: list[str], params: np.ndarray, fm: FaceModel, meta: dict) -> None:
    """params (N, 2, 62): [crop, mirror]; also stores their 68 points (crop pixels) and yaw/pitch/roll."""
    flat = params.reshape(-1, 62)
    arrays = {
        "names": np.asarray(names), "params": params.astype(np.float32),
        "pts68": landmarks(flat, fm).reshape(len(names), 2, 68, 3).astype(np.float32),
        "pose": euler_angles(flat).reshape(len(names), 2, 3).astype(np.float32),
        "meta": np.asarray(json.dumps(meta)),
    }
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def compact_labels(src: str | Path, dst: Path) -> None:
    """``src`` as whitened fp16 params (their mean and std beside them) without the derived arrays
    (68 points, angles): those follow from the params."""
    with np.load(src, allow_pickle=False) as z:
        names, params, meta = z["names"], z["params"].astype(np.float64), z["meta"]
    mean, std = params.reshape(-1, 62).mean(0), params.reshape(-1, 62).std(0) + 1e-12
    buf = io.BytesIO()
    np.savez_compressed(buf, names=names, meta=meta, params_w16=((params - mean) / std).astype(np.float16),
                        params_mean=mean, params_std=std)
    atomic_write_bytes(dst, buf.getvalue())


def _derived(params: np.ndarray, meta: dict, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The 68 points and angles of (N, 2, 62) params in the face model the file names."""
    from edgefa.facemodel.bfm import load_bfm68
    from edgefa.paths import find_bfm68

    if meta.get("face_model") != "bfm68":
        raise EdgefaError(f"{path}: compact labels of face model {meta.get('face_model')!r}; only bfm68's "
                          f"points can be derived")
    flat = params.reshape(-1, 62)
    n = len(params)
    fm = load_bfm68(find_bfm68(near=path))  # a pack keeps the file in data/aflw-train/, beside data/bfm68
    return (landmarks(flat, fm).reshape(n, 2, 68, 3).astype(np.float32),
            euler_angles(flat).reshape(n, 2, 3).astype(np.float32))


def read_labels(path: str | Path, names: list[str]) -> dict:
    """The labels of ``names`` from a labels file (arrays indexed like ``names``); one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise EdgefaError(f"{path}: labels file not found (make one with python -m edgefa.training.labels)")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in ("names", "meta")}
            if "params" in z.files or "params_w16" not in z.files:
                data["params"] = z["params"]
            else:  # compact: whitened fp16
                data["params"] = (z["params_w16"] * z["params_std"] + z["params_mean"]).astype(np.float32)
            derived = {k: z[k] for k in ("pts68", "pose") if k in z.files}
    except KeyError as exc:
        raise EdgefaError(f"{path}: not an edgefa labels file (no {exc})") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise EdgefaError(f"{path}: not a readable labels file ({str(exc).splitlines()[0] if str(exc) else 'corrupt'})") from None
    try:
        meta = json.loads(str(data["meta"]))
    except ValueError:
        meta = None
    if not isinstance(meta, dict):
        raise EdgefaError(f"{path}: labels file without readable 'meta' (how it was made)")
    if meta.get("format") != LABELS_FORMAT:
        raise EdgefaError(f"{path}: labels format {meta.get('format')!r}, expected {LABELS_FORMAT!r}")
    n = len(data["names"])
    if data["params"].shape != (n, 2, 62):
        raise EdgefaError(f"{path}: 'params' has shape {data['params'].shape}, expected {(n, 2, 62)}")
    if len(derived) < 2:
        data["pts68"], data["pose"] = _derived(data["params"], meta, path)
    else:
        data.update(derived)
    for key, shape in (("pts68", (n, 2, 68, 3)), ("pose", (n, 2, 3))):
        if data[key].shape != shape:
            raise EdgefaError(f"{path}: '{key}' has shape {data[key].shape}, expected {shape}")
    where = {str(name): i for i, name in enumerate(data["names"])}
    missing = [name for name in names if name not in where]
    if missing:
        raise EdgefaError(f"{path}: no labels for {len(missing)} of the {len(names)} crops "
                          f"(e.g. {missing[0]}); it was made for another crop list")
    rows = np.array([where[name] for name in names], dtype=np.int64)
    return {"params": data["params"][rows], "pts68": data["pts68"][rows], "pose": data["pose"][rows], "meta": meta}
