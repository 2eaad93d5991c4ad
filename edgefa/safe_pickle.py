"""Read pickles that hold only plain containers and numpy arrays, refusing anything else.

3DDFA ships its parameter statistics as a pickle; a plain ``pickle.load`` could run arbitrary
code from an untrusted file, so only the numpy reconstruction globals are allowed.
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path

from edgefa.errors import EdgefaError
from edgefa.fileio import read_regular_bytes

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("collections", "OrderedDict"),
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load '{module}.{name}' (only numpy arrays are allowed)")


def load_array_pickle(path: str | Path):
    path = Path(path)
    data = read_regular_bytes(path, "pickle")
    try:
        return _ArrayUnpickler(io.BytesIO(data), encoding="latin1").load()
    except Exception as exc:  # any decoding failure is a bad file, not a bug
        raise EdgefaError(f"{path}: not a pickle of numpy arrays ({exc})") from exc
