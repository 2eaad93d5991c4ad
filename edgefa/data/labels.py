"""Refined-labels files for aflw-train (made by ``python -m edgefa.training.labels``): one ``.npz``
(no pickles) holding, for each crop name, 62 raw params, their 68 points (crop pixels) and
yaw/pitch/roll, for the crop and for its horizontal mirror, plus how it was made (``meta``)."""
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


def read_labels(path: str | Path, names: list[str]) -> dict:
    """The labels of ``names`` from a labels file (arrays indexed like ``names``); one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise EdgefaError(f"{path}: labels file not found (make one with python -m edgefa.training.labels)")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in ("names", "params", "pts68", "pose", "meta")}
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
    for key, shape in (("params", (n, 2, 62)), ("pts68", (n, 2, 68, 3)), ("pose", (n, 2, 3))):
        if data[key].shape != shape:
            raise EdgefaError(f"{path}: '{key}' has shape {data[key].shape}, expected {shape}")
    where = {str(name): i for i, name in enumerate(data["names"])}
    missing = [name for name in names if name not in where]
    if missing:
        raise EdgefaError(f"{path}: no labels for {len(missing)} of the {len(names)} crops "
                          f"(e.g. {missing[0]}); it was made for another crop list")
    rows = np.array([where[name] for name in names], dtype=np.int64)
    return {"params": data["params"][rows], "pts68": data["pts68"][rows], "pose": data["pose"][rows], "meta": meta}
