"""THE table of export formats, shared by ``edgefa export``, ``edgefa bench`` and the tests.

Each row names the module that runs that format (``edgefa.runtime.*``: needs only the runtime) and
the one that writes it (``edgefa.converters.to_*``: the export layer, loaded by ``edgefa.converters.export``);
requests are checked against the table before any work (unknown format or precision -> one line
with the closest valid name). It also names the outputs a file has: the contract between an
exported file and whatever runs it.
"""
from __future__ import annotations

import importlib
import importlib.util
import platform
from dataclasses import dataclass

from edgefa.errors import EdgefaError, unknown_name_error


@dataclass(frozen=True)
class ExportFormat:
    name: str
    suffix: str
    precisions: tuple[str, ...]
    runtime: str  # what runs the file for the parity gate and benchmarks
    runtime_key: str  # that runtime's name in `edgefa bench --runtimes`
    extra: str  # pip extra that installs the converter + runtime
    requires: tuple[str, ...]  # import names the converter needs
    runs_on: tuple[str, ...]  # platforms (platform.system()) where the runtime executes the file
    runner: str  # module with load(path, threads) -> a runner: .metadata, .run(x) -> {output: array}
    writer: str  # module with export(...): the converters layer (torch and the converter)

    def file_name(self, stem: str, precision: str) -> str:
        return f"{stem}{'' if precision == 'fp32' else '-' + precision}{self.suffix}"

    def runs_here(self) -> bool:
        return platform.system() in self.runs_on

    def missing(self) -> list[str]:
        return [m for m in self.requires if importlib.util.find_spec(m) is None]

    def require(self) -> None:
        """Fail with an install hint when the optional extra is not installed."""
        missing = self.missing()
        if missing:
            raise EdgefaError(f"format '{self.name}' needs {', '.join(missing)}: pip install 'edgefa[{self.extra}]'")

    def runtime_missing(self) -> str | None:
        """Install hint when no runtime that runs this format is importable (running needs less than converting)."""
        options = RUNTIME_IMPORTS[self.runtime_key]
        if any(importlib.util.find_spec(m) is not None for m in options):
            return None
        extra = RUNTIME_EXTRAS.get(self.runtime_key, self.extra)
        return f"runtime '{self.runtime_key}' not installed ({' or '.join(options)}): pip install 'edgefa[{extra}]'"

    def runner_module(self):
        """The module with ``load(path, threads)``: needs only the runtime, not the converter."""
        hint = self.runtime_missing()
        if hint:
            raise EdgefaError(hint)
        return importlib.import_module(self.runner)


# import names that can run each runtime (any one is enough): tflite_runtime is the design card's
# interpreter, ai-edge-litert its maintained successor
RUNTIME_IMPORTS = {"onnxruntime": ("onnxruntime",), "litert": ("ai_edge_litert", "tflite_runtime"),
                   "coreml": ("coremltools",), "torch": ("torch",)}
# the pip extra that installs each runtime alone (no torch, no converter); others: the format's extra
RUNTIME_EXTRAS = {"onnxruntime": "runtime", "litert": "runtime", "torch": "train"}

# what an exported file outputs: the bare network, or the graph with pre/post-processing
RAW_OUTPUTS = {"params": "whitened 3DMM parameters (B, 62): raw = params * param_std + param_mean; "
                         "12 pose (3x4 [sR|t], row-major), 40 shape, 10 expression"}
POST_OUTPUTS = {
    "landmarks": "68 3D landmarks (B, 68, 3) in crop pixels: x right, y down, z depth (3DDFA convention)",
    "pose": "head pose (B, 3): yaw, pitch, roll in degrees (AFLW2000-3D Pose_Para convention)",
    "params": "raw 3DMM parameters (B, 62): 12 pose (3x4 [sR|t], row-major), 40 shape, 10 expression",
}
INPUT_NAME = "input"  # every edgefa file's input

FORMATS: dict[str, ExportFormat] = {f.name: f for f in [
    ExportFormat("onnx", ".onnx", ("fp32", "fp16", "int8"), "onnxruntime", "onnxruntime", "onnx",
                 ("onnx", "onnxruntime", "onnxslim"), ("Linux", "Darwin", "Windows"),
                 "edgefa.runtime.onnx", "edgefa.converters.to_onnx"),
    ExportFormat("tflite", ".tflite", ("fp32", "fp16", "int8"), "ai-edge-litert (XNNPACK)", "litert", "tflite",
                 ("litert_torch",), ("Linux", "Darwin"),
                 "edgefa.runtime.tflite", "edgefa.converters.to_tflite"),
    ExportFormat("coreml", ".mlpackage", ("fp32", "fp16", "int8", "palette6", "palette4", "sparse50"),
                 "coremltools (macOS only)",
                 "coreml", "coreml", ("coremltools",), ("Darwin",),
                 "edgefa.runtime.coreml", "edgefa.converters.to_coreml"),
]}


def get_format(name: str) -> ExportFormat:
    if name not in FORMATS:
        raise unknown_name_error("format", name, FORMATS)
    return FORMATS[name]


def format_of_path(path) -> ExportFormat | None:
    text = str(path).rstrip("/")
    for fmt in FORMATS.values():
        if text.endswith(fmt.suffix):
            return fmt
    return None


def parse_list(text: str | list[str], what: str) -> list[str]:
    items = text if isinstance(text, list) else [t.strip() for t in str(text).split(",")]
    items = [t.lower() for t in items if t]
    if not items:
        raise EdgefaError(f"--{what}: empty list")
    return list(dict.fromkeys(items))


def plan(formats: str | list[str], precisions: str | list[str]) -> list[tuple[ExportFormat, str]]:
    """(format, precision) pairs to export; every request is checked before any work."""
    fmts = [get_format(name) for name in parse_list(formats, "formats")]
    precs = parse_list(precisions, "precision")
    known = {p for f in FORMATS.values() for p in f.precisions}
    for prec in precs:
        if prec not in known:
            raise unknown_name_error("precision", prec, known)
    jobs = []
    for fmt in fmts:
        unsupported = [p for p in precs if p not in fmt.precisions]
        if unsupported and len(fmts) == 1:
            raise EdgefaError(f"--precision {','.join(unsupported)}: not supported by format '{fmt.name}' "
                              f"(supported: {', '.join(fmt.precisions)})")
        jobs += [(fmt, p) for p in precs if p in fmt.precisions]
    for prec in precs:  # with several formats, a precision only some support applies to those
        if not any(p == prec for _, p in jobs):
            raise EdgefaError(f"--precision {prec}: none of {', '.join(f.name for f in fmts)} supports it")
    return jobs
