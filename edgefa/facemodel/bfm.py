"""The 68-landmark slice of the Basel Face Model used by 3DDFA / 3DDFA-V2 (``bfm68``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgefa.errors import EdgefaError
from edgefa.facemodel.base import N_EXPR, N_LANDMARKS, N_PARAMS, N_SHAPE, FaceModel
from edgefa.safe_pickle import load_array_pickle

PARAM_STATS_FILE = "param_mean_std_62d_120x120.pkl"


def _load_txt(path: Path, shape: tuple) -> np.ndarray:
    if not path.is_file():
        raise EdgefaError(f"{path}: missing (a bfm68 folder holds u_base.txt, w_shp_base.txt, "
                          f"w_exp_base.txt and {PARAM_STATS_FILE})")
    try:
        arr = np.loadtxt(path, dtype=np.float64)
    except ValueError as exc:
        raise EdgefaError(f"{path}: not a numeric text array ({exc})") from exc
    if arr.size != int(np.prod(shape)):
        raise EdgefaError(f"{path}: has {arr.size} numbers, expected {shape}")
    return arr.reshape(shape).astype(np.float32)


def load_param_stats(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of the 62 parameters from a 3DDFA ``param_mean_std`` pickle (arrays only)."""
    stats = load_array_pickle(path)
    try:
        mean = np.asarray(stats["mean"], dtype=np.float32).reshape(-1)
        std = np.asarray(stats["std"], dtype=np.float32).reshape(-1)
    except (KeyError, TypeError, ValueError) as exc:
        raise EdgefaError(f"{path}: expected a dict with 'mean' and 'std' arrays") from exc
    if mean.shape != (N_PARAMS,) or std.shape != (N_PARAMS,):
        raise EdgefaError(f"{path}: 'mean'/'std' have {mean.size}/{std.size} values, expected {N_PARAMS}")
    return mean, std


def load_bfm68(folder: str | Path, param_stats: str | Path | None = None) -> FaceModel:
    folder = Path(folder)
    if not folder.is_dir():
        raise EdgefaError(f"{folder}: bfm68 folder not found (set EDGEFA_BFM68 or pass its path)")
    mean = _load_txt(folder / "u_base.txt", (N_LANDMARKS, 3))
    shape_basis = _load_txt(folder / "w_shp_base.txt", (3 * N_LANDMARKS, N_SHAPE))
    expr_basis = _load_txt(folder / "w_exp_base.txt", (3 * N_LANDMARKS, N_EXPR))
    p_mean, p_std = load_param_stats(param_stats or folder / PARAM_STATS_FILE)
    return FaceModel("bfm68", mean, shape_basis, expr_basis, p_mean, p_std, size=120)
