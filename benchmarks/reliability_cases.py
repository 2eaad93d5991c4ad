"""The hostile inputs and faults of issue #24, in one table shared by tests/test_reliability.py and
``python benchmarks/reliability.py`` (which runs each through the CLI and writes the report).

A case builds its input under an empty folder and returns the ``edgefa`` argv; the rule it checks:
exit code 2 (or the case's own), one error line naming the file and the problem, no traceback, no
final-named or temp file left behind (``leaves``), and done within its timeout (no hang).

Internal: ``python -m benchmarks.reliability_cases FAULT ARGV...`` runs the CLI with FAULT injected
(``-`` for none): how the report's subprocesses get a full disk without filling one.
"""
from __future__ import annotations

import errno
import functools
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgefa.fileio import TEMP_MARK

REPO = Path(__file__).resolve().parent.parent
MODEL = "mobilenetv3_small_100"  # untrained registry model: no files needed
CLASSES = {
    "1": "dataset sizes are checked, never a silent slice",
    "2": "export says ok only for a file in place",
    "3": "--name stays inside -o",
    "4": "a NaN label leaves one face out, not NME",
    "5": "report sets are all or nothing",
    "6": "training settings are validated",
    "7": "dataset options and integer flags are checked",
    "8": "bench workers die with their parent",
    "9": "regular files only where files are read",
    "10": "files that disagree with their metadata; checkpoints that do not fit --resume",
    "11": "image size caps",
    "12": "stale temp files of killed runs",
    "13": "malformed bench.json / pipeline.json",
    "14": "pickles: refused, never run",
    "earlier": "earlier classes (regression checks)",
}


@dataclass(frozen=True)
class Case:
    klass: str
    name: str
    build: Callable[[Path], list[str]]  # makes the input under the folder, returns the CLI argv
    expect: tuple[str, ...] = ()  # fragments of the one error line; "{root}" is the case folder
    code: int = 2
    fault: str = "-"  # a key of FAULTS
    leaves: tuple[str, ...] = ()  # globs (under the folder) that must match nothing afterwards
    one_line: bool = True  # stderr is exactly one line
    hangs_unfixed: bool = False  # blocks forever without the fix: run in a subprocess with a timeout
    kill_parent: bool = False  # special run: kill -9 the CLI once its worker runs (run_kill_case)
    timeout: float = 60.0
    extra: dict = field(default_factory=dict)


# --- faults: installed with pytest's monkeypatch, or for good in a subprocess ---

def enospc_on_file(n: int, monkeypatch=None) -> None:
    """The disk fills while the n-th temp file is written: that temp is half there, then ENOSPC."""
    import edgefa.fileio as fileio

    opened = []

    def full_open(path, mode="r", *args, **kwargs):
        fh = open(path, mode, *args, **kwargs)
        if "w" in mode and TEMP_MARK in str(path):
            opened.append(path)
            if len(opened) == n:
                fh.write(b"partial")
                fh.close()
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return fh
    if monkeypatch is not None:  # pytest: undone after the test
        monkeypatch.setattr(fileio, "open", full_open, raising=False)
    else:
        fileio.open = full_open  # a module global shadows the builtin for fileio's writes


def enospc_on_rename_to(suffix: str, monkeypatch=None) -> None:
    """The final rename of every ``suffix`` file fails with ENOSPC (other files are written)."""
    real = os.replace

    def full_replace(src, dst):
        if str(dst).endswith(suffix):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        real(src, dst)
    if monkeypatch is not None:
        monkeypatch.setattr(os, "replace", full_replace)
    else:
        os.replace = full_replace


FAULTS = {"-": None, "enospc-3rd-file": functools.partial(enospc_on_file, 3),
          "enospc-onnx-rename": functools.partial(enospc_on_rename_to, ".onnx")}


# --- inputs ---

def bench_run(folder: Path) -> Path:
    """A bench run folder with one scored row: enough for a report with figures (no model run)."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    nme = {"bins": {"[0,30]": 3.0, "(30,60]": 4.0, "(60,90]": 5.0}, "balanced_mean": 4.0, "plain_mean": 3.5,
           "auc7": 0.5, "ced": {"nme": [0.0, 3.5, 7.0], "fraction": [0.0, 0.5, 1.0]}}
    target = {"name": "m.onnx", "kind": "file", "ref": "m.onnx", "runtime": "onnxruntime", "peer": False, "note": "",
              "rows": [{"threads": 1, "status": "ok", "latency": {"mean_ms": 1.0, "p50_ms": 1.0, "p90_ms": 1.2,
                                                                   "p99_ms": 1.5, "std_ms": 0.1, "fps": 1000.0}}],
              "info": {"format": "onnx", "precision": "fp32", "model": MODEL, "postprocess": True,
                       "training_data": "synthetic", "params": 1_000_000, "macs": 50_000_000, "size_mb": 4.0,
                       "size_of": "file", "memory": {"peak_rss_mb": 100.0, "model_mb": 10.0}},
              "accuracy": {"status": "ok", "data": "synthetic:n=3", "nme": nme}, "status": "ok"}
    record = {"command": "edgefa bench (crafted)", "started": "", "seconds": 1.0,
              "machine": {"cpu": "cpu", "cores": 2, "os": "os", "machine": "x86_64", "versions": {"python": "3"}},
              "settings": {"runtimes": ["onnxruntime"], "threads": [1], "warmup": 1, "runs": 3, "min_time": 1.0,
                           "batch": 1, "data": "synthetic:n=3", "data_error": None, "peers": False},
              "targets": [target]}
    (folder / "bench.json").write_text(json.dumps(record))
    return folder


def png_bytes(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height (valid CRCs) around a tiny IDAT: a decompression bomb."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def jpeg_with_size(width: int, height: int) -> bytes:
    """A real small JPEG whose SOF0 frame header is rewritten to claim width x height."""
    import cv2

    data = bytearray(cv2.imencode(".jpg", np.full((16, 16, 3), 90, np.uint8))[1].tobytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def bmp_with_size(width: int, height: int) -> bytes:
    import cv2

    data = bytearray(cv2.imencode(".bmp", np.full((4, 4, 3), 90, np.uint8))[1].tobytes())
    data[18:26] = struct.pack("<ii", width, height)
    return bytes(data)


def folder_with(root: Path, name: str, make: Callable[[Path], object]) -> Path:
    """A folder dataset: one good image and the hostile ``name``."""
    import cv2

    folder = root / "faces"
    folder.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(folder / "a_good.png"), np.full((120, 120, 3), 128, np.uint8))
    make(folder / name)
    return folder


def eval_folder(name: str, make: Callable[[Path], object]) -> Callable[[Path], list[str]]:
    def build(root: Path) -> list[str]:
        folder = folder_with(root, name, make)
        return ["eval", "--model", MODEL, "--data", f"folder:{folder}", "--json", str(root / "out.json"),
                "--quiet", "--batch", "1"]
    return build


def _report_full_disk(root: Path) -> list[str]:
    return ["report", str(bench_run(root / "run")), "-o", str(root / "out" / "rep")]


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _bench_fifo(root: Path) -> list[str]:
    _fifo(root / "m.onnx")
    return ["bench", str(root / "m.onnx"), "-o", str(root / "out"), "--runtimes", "onnxruntime", "--quiet",
            "--timeout", "5"]


def _eval_fifo_model(suffix: str) -> Callable[[Path], list[str]]:
    def build(root: Path) -> list[str]:
        _fifo(root / f"m{suffix}")
        return ["eval", "--model", str(root / f"m{suffix}"), "--data", "synthetic:n=1", "--quiet"]
    return build


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _bench_after_killed_run(root: Path) -> list[str]:
    """A killed bench's job file (its pid gone) in the run folder: the next run removes it."""
    out = root / "out"
    out.mkdir()
    (out / f".job-m.onnx{TEMP_MARK}{_dead_pid()}.json").write_text("{}")
    return ["bench", str(root / "missing.onnx"), "-o", str(out), "--runtimes", "onnxruntime", "--quiet"]


def _bench_to_kill(root: Path) -> list[str]:
    return ["bench", MODEL, "--data", "none", "--runtimes", "torch", "--min-time", "30", "--warmup", "0",
            "-o", str(root / "out"), "--quiet", "--timeout", "120"]


def _not_a_checkpoint(root: Path) -> list[str]:
    (root / "junk.pt").write_bytes(b"this is not a checkpoint" * 10)
    return ["eval", "--model", str(root / "junk.pt"), "--data", "synthetic:n=2"]


# --- class 10: exported files whose metadata disagrees with the graph; --resume checkpoints that do not fit ---

INPUT_SPEC = {"size": [64, 64], "layout": "NCHW", "dtype": "float32", "color": "BGR", "mean": [127.5] * 3,
              "std": [128.0] * 3}


def tiny_onnx(path: Path, channels: int = 3, n_params: int = 62, output: str = "params", **meta) -> Path:
    """A raw edgefa-style .onnx built directly (no torch, no export: milliseconds): the mean colour
    through a matrix to ``n_params`` outputs, with the metadata ``edgefa export`` writes, ``meta`` on top."""
    import json

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.full((channels, n_params), 0.01, np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["input"], ["m"], axes=[2, 3], keepdims=0),
         helper.make_node("MatMul", ["m", "w"], [output])], "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", channels, 64, 64])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["batch", n_params])], [weights])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    props = {"edgefa.input": json.dumps(INPUT_SPEC), "edgefa.outputs": json.dumps({"params": "whitened 3DMM parameters"}),
             "edgefa.postprocess": "false", "edgefa.face_model": "synthetic-0", "edgefa.crop_size": "64",
             "edgefa.param_mean": json.dumps([0.0] * 62), "edgefa.param_std": json.dumps([1.0] * 62), **meta}
    helper.set_model_props(model, props)
    onnx.save(model, path)
    return path


def _tampered_onnx(command: str, **kwargs) -> Callable[[Path], list[str]]:
    def build(root: Path) -> list[str]:
        model = str(tiny_onnx(root / "x.onnx", **kwargs))
        if command == "predict":
            import cv2

            cv2.imwrite(str(root / "face.jpg"), np.full((64, 64, 3), 120, np.uint8))
            return ["predict", "--model", model, "--source", str(root / "face.jpg"), "--detector", "none",
                    "--json", str(root / "out.json"), "--quiet"]
        return ["eval", "--model", model, "--data", "synthetic:n=4", "--json", str(root / "out.json"), "--quiet"]
    return build


TRAIN = ["epochs=1", "data.train=synthetic:seed=0,n=16", "data.val=synthetic:seed=1,n=8", "data.workers=0",
         "data.cache=false", "batch_size=8"]


def last_pt(path: Path, model_name: str = MODEL, drop: tuple[str, ...] = (), moment_shape=None, **fields) -> Path:
    """A last.pt as training writes it (model, optimizer, rng, epoch, best, history), then damaged:
    ``fields`` replaced, ``drop`` removed, ``moment_shape``: the first parameter's Adam moment."""
    import random

    import torch

    from edgefa.facemodel.synthetic import synthetic_face_model
    from edgefa.models.checkpoint import save_checkpoint
    from edgefa.models.registry import create_model

    model = create_model(model_name)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3).state_dict()
    if moment_shape is not None:
        optimizer["state"][0] = {"step": torch.tensor(1.0), "exp_avg": torch.zeros(moment_shape),
                                 "exp_avg_sq": torch.zeros(moment_shape)}
    rng = {"torch": torch.get_rng_state(), "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
           "python": torch.tensor(random.getstate()[1], dtype=torch.int64)}
    extra = {"optimizer": optimizer, "rng": rng, "epoch": 1, "best": 5.0, "history": [], **fields}
    for key in drop:
        del extra[key]
    save_checkpoint(path, model, synthetic_face_model(), **extra)
    return path


def _resume(**damage) -> Callable[[Path], list[str]]:
    def build(root: Path) -> list[str]:
        ckpt = last_pt(root / "last.pt", **damage)
        return ["train", "--config", str(REPO / "training/configs/synthetic-quick.yaml"), *TRAIN,
                f"output={root / 'run'}", "--resume", str(ckpt), "--quiet"]
    return build


# --- classes 1-4, 6, 7, 12-14: one representative each (tests/test_bad_input.py has the variants) ---

def _export_never_written(root: Path) -> list[str]:
    return ["export", "--model", f"{MODEL}:input_size=64", "--parity-n", "2", "-o", str(root / "out")]


def _nan_label(root: Path) -> list[str]:
    """3 faces, one with a NaN landmark: eval succeeds, NME over the other 2 (it used to be switched off)."""
    import cv2

    folder = root / "faces"
    folder.mkdir()
    grid = np.stack(np.meshgrid(np.linspace(30, 90, 17), np.linspace(30, 90, 4)), -1).reshape(-1, 2)[:68]
    labels = np.stack([grid] * 3).astype(np.float32)
    labels[1, 5, 0] = np.nan
    for k in range(3):
        cv2.imwrite(str(folder / f"face{k}.png"), np.full((120, 120, 3), 60 + 40 * k, np.uint8))
    np.save(folder / "labels.npy", labels)
    return ["eval", "--model", MODEL, "--data", f"folder:{folder}", "--json", str(root / "out.json"), "--quiet"]


def _nan_label_check(root: Path) -> str | None:
    import json

    block = json.loads((root / "out.json").read_text()).get("nme") or {}
    if block.get("faces") != 2 or (block.get("left_out") or {}).get("faces") != 1:
        return f"NME block has faces={block.get('faces')}, left_out={block.get('left_out')} (want 2 and 1)"
    return None


def _stale_temps(root: Path) -> list[str]:
    out = root / "out"
    out.mkdir()
    dead = _dead_pid()
    (out / f".face{TEMP_MARK}{dead}.onnx").write_bytes(b"half a file")
    (out / f".face{TEMP_MARK}{dead}.mlpackage").mkdir()
    return ["eval", "--model", MODEL, "--data", "synthetic:n=2", "--json", str(out / "r.json"), "--quiet"]


def _malformed_bench(root: Path) -> list[str]:
    import json

    record = {"settings": {"threads": [1]}, "targets": [{"name": "m.onnx", "rows": [{"latency": {"p50": 1.0}}]}]}
    (root / "bench.json").write_text(json.dumps(record))  # a row without its thread count
    return ["report", str(root), "-o", str(root / "r")]


def _malformed_pipeline(root: Path) -> list[str]:
    (root / "run").mkdir()
    (root / "run" / "pipeline.json").write_text('{"stages": {"train": "done"}}')  # a stage that is not a record
    return ["pipeline", "--config", str(REPO / "training/configs/pipeline-quick.yaml"), f"output={root / 'run'}"]


class _Evil:
    def __reduce__(self):
        return (exec, ("raise SystemExit('pwned')",))


def _evil_checkpoint(root: Path) -> list[str]:
    import torch

    torch.save({"format": "edgefa-checkpoint", "x": _Evil()}, root / "evil.pt")
    return ["eval", "--model", str(root / "evil.pt"), "--data", "synthetic:n=2"]


def _raw_pickle(root: Path) -> list[str]:
    import pickle

    (root / "raw.pt").write_bytes(pickle.dumps({"x": _Evil()}))
    return ["eval", "--model", str(root / "raw.pt"), "--data", "synthetic:n=2"]


def _text_model(root: Path) -> list[str]:
    (root / "model.txt").write_text("not a model at all")
    return ["eval", "--model", str(root / "model.txt"), "--data", "synthetic:n=2"]


CASES: list[Case] = [
    Case("1", "synthetic:n=-1 (was a silent slice)", lambda root: ["eval", "--model", MODEL, "--data", "synthetic:n=-1"],
         ("synthetic:n=-1", "option n must be a whole number >= 1 (got -1)")),
    Case("2", "disk full at the .onnx rename: the row fails, no file", _export_never_written, code=1, one_line=False,
         fault="enospc-onnx-rename", leaves=("out/*.onnx", f"out/.*{TEMP_MARK}*"), timeout=120),
    Case("3", "--name ../escaped", lambda root: ["export", "--model", f"{MODEL}:input_size=64", "--name", "../escaped",
                                                 "-o", str(root / "out")],
         ("../escaped", "must be a file name stem"), leaves=("out", "escaped*")),
    Case("4", "one NaN landmark: that face left out, NME kept", _nan_label, code=0, one_line=False,
         extra={"check": _nan_label_check}),
    Case("6", "optimizer.lr=-0.1", lambda root: ["train", "--config", str(REPO / "training/configs/synthetic-quick.yaml"),
                                                 "optimizer.lr=-0.1", f"output={root / 'run'}"],
         ("'optimizer.lr' must be > 0",), leaves=("run",)),
    Case("7", "--batch 0 (argparse: usage, then the error)",
         lambda root: ["eval", "--model", MODEL, "--data", "synthetic:n=2", "--batch", "0"],
         ("argument --batch: must be >= 1, got 0",), one_line=False),
    Case("7", "synthetic:seed=abc", lambda root: ["eval", "--model", MODEL, "--data", "synthetic:seed=abc"],
         ("synthetic:seed=abc", "option seed must be a whole number >= 0")),
    Case("10", "ONNX: edgefa.input says NHWC uint8, the graph takes NCHW float32",
         _tampered_onnx("eval", **{"edgefa.input": '{"size": [64, 64], "layout": "NHWC", "dtype": "uint8", '
                                   '"color": "RGB", "mean": [0, 0, 0], "std": [1, 1, 1]}'}),
         ("x.onnx", "metadata says input Bx64x64x3 uint8 NHWC, but the graph takes Bx3x64x64 float32"),
         leaves=("out.json",)),
    Case("10", "ONNX: edgefa.input says 120x120, the graph takes 64x64",
         _tampered_onnx("predict", **{"edgefa.input": '{"size": [120, 120], "layout": "NCHW", "dtype": "float32", '
                                      '"color": "BGR", "mean": [0, 0, 0], "std": [1, 1, 1]}'}),
         ("x.onnx", "metadata says input Bx3x120x120 float32 NCHW, but the graph takes Bx3x64x64 float32"),
         leaves=("out.json",)),
    Case("10", "ONNX: the graph takes 1 channel", _tampered_onnx("eval", channels=1),
         ("x.onnx", "but the graph takes Bx1x64x64 float32"), leaves=("out.json",)),
    Case("10", "ONNX: edgefa.outputs names landmarks, pose; the graph gives params",
         _tampered_onnx("predict", **{"edgefa.outputs": '{"landmarks": "", "pose": ""}'}),
         ("x.onnx", "metadata says outputs landmarks, pose, but the graph has params"), leaves=("out.json",)),
    Case("10", "ONNX: output named out0, not params", _tampered_onnx("eval", output="out0", **{"edgefa.outputs": "{}"}),
         ("x.onnx", "metadata lists no outputs, but the graph has out0"), leaves=("out.json",)),
    Case("10", "ONNX: params output is (B, 10)", _tampered_onnx("eval", n_params=10),
         ("x.onnx", "output 'params' is 4x10 for 4 crop(s), but an edgefa file gives Bx62"), leaves=("out.json",)),
    Case("10", "--resume a checkpoint of another model", _resume(model_name="mobilenetv2_100"),
         ("last.pt", "a checkpoint of model 'mobilenetv2_100', but the recipe trains 'mobilenetv3_small_100'"),
         leaves=("run/*.pt", "run/summary.json")),
    Case("10", "--resume: epoch is a string", _resume(epoch="three"),
         ("last.pt", "field 'epoch' is 'three', not a whole number"), leaves=("run/*.pt", "run/summary.json")),
    Case("10", "--resume: best missing", _resume(drop=("best",)),
         ("last.pt", "no 'best' to resume from"), leaves=("run/*.pt", "run/summary.json")),
    Case("10", "--resume: optimizer missing", _resume(drop=("optimizer",)),
         ("last.pt", "no 'optimizer' to resume from"), leaves=("run/*.pt", "run/summary.json")),
    Case("10", "--resume: an Adam moment of the wrong shape", _resume(moment_shape=(3,)),
         ("last.pt", "field 'optimizer' holds exp_avg of shape [3] for parameter 0"),
         leaves=("run/*.pt", "run/summary.json")),
    Case("10", "--resume: optimizer state of another model", _resume(optimizer={"state": {}, "param_groups": [
        {"params": [0, 1], "lr": 1e-3}]}), ("last.pt", "field 'optimizer' does not fit"),
         leaves=("run/*.pt", "run/summary.json")),
    Case("12", "a killed run's temp file and folder are removed by the next run", _stale_temps, code=0,
         one_line=False, leaves=(f"out/.*{TEMP_MARK}*",)),
    Case("13", "bench.json row without its thread count", _malformed_bench,
         ("bench.json", "not an edgefa bench record", "threads"), leaves=("r.*",)),
    Case("13", "pipeline.json stage that is not a record", _malformed_pipeline, ("pipeline.json", "not a pipeline state file")),
    Case("14", "checkpoint whose pickle calls exec", _evil_checkpoint, ("evil.pt", "refused", "references exec")),
    Case("14", "raw pickle as a .pt", _raw_pickle, ("raw.pt", "tensors-only loader")),
    Case("14", "a .txt as --model", _text_model, ("model.txt", "neither torch.save's zip nor a pickle")),
    Case("5", "report set, disk full at the 3rd file", _report_full_disk, ("{root}/out/rep", "No space left"),
         fault="enospc-3rd-file", leaves=("out/rep*", f"out/.*{TEMP_MARK}*")),
    Case("8", "kill -9 of edgefa bench: its worker exits too", _bench_to_kill, kill_parent=True, one_line=False,
         code=-9, timeout=90),
    Case("8", "a killed bench's job file is removed by the next run", _bench_after_killed_run, code=1,
         one_line=False, leaves=(f"out/.*{TEMP_MARK}*",)),
    Case("9", "FIFO x.jpg in a folder dataset", eval_folder("x.jpg", _fifo), ("x.jpg", "not a regular file (a FIFO)"),
         leaves=("out.json",), hangs_unfixed=True, timeout=30),
    Case("9", "link to /dev/zero as d.jpg in a folder dataset",
         eval_folder("d.jpg", lambda p: p.symlink_to("/dev/zero")), ("d.jpg", "not a regular file (a character device)"),
         leaves=("out.json",), hangs_unfixed=True, timeout=30),
    Case("9", "FIFO m.onnx to edgefa bench", _bench_fifo, ("m.onnx", "not a regular file (a FIFO)"),
         leaves=("out/bench.json", "out/bench.md"), hangs_unfixed=True, timeout=30),
    Case("9", "FIFO m.onnx as eval --model", _eval_fifo_model(".onnx"), ("m.onnx", "not a regular file (a FIFO)"),
         hangs_unfixed=True, timeout=30),
    Case("9", "FIFO m.pt as eval --model", _eval_fifo_model(".pt"), ("m.pt", "not a regular file (a FIFO)"),
         hangs_unfixed=True, timeout=30),
    Case("11", "PNG whose IHDR claims 60000x60000", eval_folder("big.png", lambda p: p.write_bytes(png_bytes(60000, 60000))),
         ("big.png", "60000x60000", "cap of 50 megapixels"), leaves=("out.json",)),
    Case("11", "JPEG whose SOF0 claims 60000x60000",
         eval_folder("big.jpg", lambda p: p.write_bytes(jpeg_with_size(60000, 60000))),
         ("big.jpg", "60000x60000", "cap of 50 megapixels"), leaves=("out.json",)),
    Case("11", "BMP whose header claims 20000x20000",
         eval_folder("big.bmp", lambda p: p.write_bytes(bmp_with_size(20000, 20000))),
         ("big.bmp", "20000x20000", "cap of 50 megapixels"), leaves=("out.json",)),
    Case("earlier", "truncated JPEG", eval_folder("t.jpg", lambda p: p.write_bytes(jpeg_with_size(16, 16)[:200])),
         ("t.jpg", "truncated JPEG"), leaves=("out.json",)),
    Case("earlier", "not a checkpoint", _not_a_checkpoint, ("junk.pt", "not a PyTorch checkpoint")),
    Case("earlier", "missing dataset folder", lambda root: ["eval", "--model", MODEL, "--data", f"aflw2000-3d:{root}/nope"],
         ("nope", "not found")),
]


# --- running a case through the CLI in its own process ---

def cli_command(case: Case, argv: list[str]) -> list[str]:
    return [sys.executable, "-m", "benchmarks.reliability_cases", case.fault, *argv]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def leftovers(case: Case, root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for pattern in case.leaves for p in root.glob(pattern))


def judge(case: Case, root: Path, code: int | None, stderr: str, seconds: float, hung: bool) -> dict:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    expect = [e.replace("{root}", str(root)) for e in case.expect]
    outcome = {"class": case.klass, "case": case.name, "exit": code, "hung": hung, "seconds": round(seconds, 1),
               "lines": len(lines), "one_line": len(lines) == 1, "one_line_expected": case.one_line, "traceback": "Traceback" in stderr,
               "line": lines[0] if len(lines) == 1 else (lines[-1] if lines else ""),
               "partial": leftovers(case, root)}
    missing = [e for e in expect if e not in outcome["line"]]  # argparse's usage lines come before its error
    check = case.extra.get("check")  # a case that must succeed: what its output must say
    if check is not None and code == case.code and not missing:
        problem = check(root)
        if problem:
            missing, outcome["why"] = [problem], problem
    outcome["ok"] = (not hung and code == case.code and not outcome["traceback"] and not outcome["partial"]
                     and (outcome["one_line"] or not case.one_line) and not missing)
    if missing and not hung and "why" not in outcome:
        outcome["why"] = f"line lacks {missing[0]!r}"
    return outcome


def run_case(case: Case, root: Path) -> dict:
    """Build the case under the empty folder ``root``, run it through the CLI, judge what happened."""
    if case.kill_parent:
        return run_kill_case(case, root)
    argv = case.build(root)
    start = time.perf_counter()
    try:
        proc = subprocess.run(cli_command(case, argv), capture_output=True, text=True, timeout=case.timeout,
                              cwd=REPO, env=_env())
        code, stderr, hung = proc.returncode, proc.stderr, False
    except subprocess.TimeoutExpired as exc:
        code, stderr, hung = None, (exc.stderr or b"").decode(errors="replace"), True
    return judge(case, root, code, stderr, time.perf_counter() - start, hung)


def children(pid: int) -> list[int]:
    """Child process ids (Linux /proc; empty elsewhere)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def running(pid: int) -> bool:
    """Alive and not a zombie (a re-parented child waits for its new parent to reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _loaded_torch(pid: int) -> bool:
    try:
        return "libtorch" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def run_kill_case(case: Case, root: Path) -> dict:
    """Start the bench in its own session, wait for its worker, kill -9 the bench: the worker must go."""
    argv = case.build(root)
    start = time.perf_counter()
    proc = subprocess.Popen(cli_command(case, argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            cwd=REPO, env=_env(), start_new_session=True)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + case.timeout
        while not workers and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
            workers = children(proc.pid)
        while workers and not _loaded_torch(workers[0]) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        time.sleep(2.0)  # torch loaded, then some: the worker is past its start-up checks, into the model's work
        os.kill(proc.pid, signal.SIGKILL)
        code = proc.wait()
        gone_by = time.monotonic() + 5
        while any(running(w) for w in workers) and time.monotonic() < gone_by:
            time.sleep(0.1)
        orphans = [w for w in workers if running(w)]
    finally:
        for w in children(proc.pid) + [w for w in workers if running(w)]:
            try:
                os.kill(w, signal.SIGKILL)  # ours: started by this case
            except ProcessLookupError:
                pass
    outcome = judge(case, root, code, proc.stderr.read(), time.perf_counter() - start, hung=False)
    outcome.update(workers=len(workers), orphans=len(orphans))
    outcome["ok"] = bool(workers) and not orphans and code == case.code
    if not workers:
        outcome["why"] = "no worker appeared before the timeout"
    elif orphans:
        outcome["why"] = f"worker still running 5 s after its parent was killed (pid {orphans[0]})"
    return outcome


if __name__ == "__main__":
    fault = FAULTS[sys.argv[1]]
    if fault:
        fault()
    from edgefa.app.cli import main

    raise SystemExit(main(sys.argv[2:]))
