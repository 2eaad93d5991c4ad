"""Run a CoreML .mlpackage with coremltools (the Core ML framework: macOS only). On other systems
the file opens without its runtime (``skip_model_load``), so its spec and metadata can be read."""
from __future__ import annotations

import contextlib
import io
import logging
import platform
import warnings
from pathlib import Path

import numpy as np

from edgefa.errors import EdgefaError


@contextlib.contextmanager
def quiet():
    """coremltools logs 'torch version not tested' / 'libcoremlpython' at import and draws tqdm bars on
    stderr for every pass; silence both here only, restore afterwards."""
    loggers = [logging.getLogger(n) for n in ("coremltools", "torch.utils._pytree")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def coremltools_module():
    with quiet():
        import coremltools
        import coremltools.optimize.coreml  # the compression API, used as coremltools.optimize.coreml
    return coremltools


def open_model(path: Path, runtime: bool, compute_units: str = "CPU_ONLY"):
    if not (path.is_dir() and (path / "Manifest.json").is_file()):
        raise EdgefaError(f"{path}: not a CoreML .mlpackage (expected a folder with Manifest.json)")
    ct = coremltools_module()
    try:
        with quiet():
            return ct.models.MLModel(str(path), skip_model_load=not runtime, compute_units=ct.ComputeUnit[compute_units])
    except Exception as exc:  # noqa: BLE001  (any load failure is the file's fault: one line)
        raise EdgefaError(f"{path}: not a loadable CoreML model ({type(exc).__name__}: {str(exc)[:160]})") from None


class CoreMLRunner:
    """``threads`` is ignored (Core ML has no thread setting); ``compute_units`` picks CPU / GPU / ANE:
    CPU_ONLY (default) for parity, ALL for on-device latency."""

    def __init__(self, path: str | Path, threads: int | None = None, compute_units: str = "CPU_ONLY"):
        self.path = Path(path)
        self.runs_here = platform.system() == "Darwin"
        self.model = open_model(self.path, self.runs_here, compute_units)
        spec = self.model.get_spec()
        self.metadata = dict(spec.description.metadata.userDefined)
        self.input_name = spec.description.input[0].name
        self.output_names = [o.name for o in spec.description.output]

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        if not self.runs_here:
            raise EdgefaError(f"{self.path}: CoreML runs only on macOS (Core ML framework); "
                              "on this machine only the spec can be checked (edgefa.converters.to_coreml.validate)")
        x = np.asarray(x, dtype=np.float32)  # a uint8 crop for a post-processing file: same values
        outs = [self.model.predict({self.input_name: x[i:i + 1]}) for i in range(len(x))]
        return {n: np.concatenate([np.asarray(o[n], np.float32) for o in outs]) for n in self.output_names}


def load(path: str | Path, threads: int | None = None, compute_units: str = "CPU_ONLY") -> CoreMLRunner:
    return CoreMLRunner(path, threads, compute_units)


