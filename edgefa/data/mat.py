"""Reading the AFLW / 300W-LP ``.mat`` label files (MATLAB v5, via scipy; no pickles)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgefa.errors import EdgefaError
from edgefa.fileio import require_regular_file


def read_mat(path: str | Path, keys: tuple[str, ...], what: str) -> dict:
    from scipy.io import loadmat  # scipy is only needed for the original-image layouts

    path = Path(path)
    require_regular_file(path, "label file")  # a FIFO would block loadmat forever
    try:
        mat = loadmat(str(path), variable_names=list(keys))
    except Exception as exc:  # scipy raises several types for damaged files
        raise EdgefaError(f"{path}: not a readable .mat file ({str(exc)[:120]})") from None
    missing = [k for k in keys if k not in mat]
    if missing:
        raise EdgefaError(f"{path}: missing key '{missing[0]}' (a {what} .mat holds {', '.join(keys)})")
    return {k: np.asarray(mat[k], dtype=np.float64) for k in keys}


def pose_from_pose_para(pose_para: np.ndarray) -> np.ndarray:
    """AFLW2000-3D / 300W-LP ``Pose_Para`` (pitch, yaw, roll in radians, ...) -> yaw, pitch, roll degrees."""
    p = np.asarray(pose_para, dtype=np.float64).reshape(-1)
    if p.size < 3:
        raise ValueError("Pose_Para has fewer than 3 values")
    return np.degrees(np.array([p[1], p[0], p[2]]))
