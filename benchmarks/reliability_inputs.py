"""The hostile inputs of the reliability case table (``benchmarks/reliability_cases.py``): faults
injected into a run (a full disk at the n-th file or at a rename) and the builders that make each
case's input under an empty folder (forged image headers, tampered device files, damaged
checkpoints, FIFOs, a bench to kill)."""
from __future__ import annotations

import errno
import functools
import os
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgefa.fileio import TEMP_MARK

REPO = Path(__file__).resolve().parent.parent
MODEL = "mobilenetv3_small_100"  # untrained registry model: no files needed


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


def report_full_disk(root: Path) -> list[str]:
    return ["report", str(bench_run(root / "run")), "-o", str(root / "out" / "rep")]


def fifo(path: Path) -> None:
    os.mkfifo(path)


def bench_fifo(root: Path) -> list[str]:
    fifo(root / "m.onnx")
    return ["bench", str(root / "m.onnx"), "-o", str(root / "out"), "--runtimes", "onnxruntime", "--quiet",
            "--timeout", "5"]


def eval_fifo_model(suffix: str) -> Callable[[Path], list[str]]:
    def build(root: Path) -> list[str]:
        fifo(root / f"m{suffix}")
        return ["eval", "--model", str(root / f"m{suffix}"), "--data", "synthetic:n=1", "--quiet"]
    return build


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def bench_after_killed_run(root: Path) -> list[str]:
    """A killed bench's job file (its pid gone) in the run folder: the next run removes it."""
    out = root / "out"
    out.mkdir()
    (out / f".job-m.onnx{TEMP_MARK}{dead_pid()}.json").write_text("{}")
    return ["bench", str(root / "missing.onnx"), "-o", str(out), "--runtimes", "onnxruntime", "--quiet"]


def bench_to_kill(root: Path) -> list[str]:
    return ["bench", MODEL, "--data", "none", "--runtimes", "torch", "--min-time", "30", "--warmup", "0",
            "-o", str(root / "out"), "--quiet", "--timeout", "120"]


def not_a_checkpoint(root: Path) -> list[str]:
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


def tampered_onnx(command: str, **kwargs) -> Callable[[Path], list[str]]:
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


def resume(**damage) -> Callable[[Path], list[str]]:
    def build(root: Path) -> list[str]:
        ckpt = last_pt(root / "last.pt", **damage)
        return ["train", "--config", str(REPO / "training/configs/synthetic-quick.yaml"), *TRAIN,
                f"output={root / 'run'}", "--resume", str(ckpt), "--quiet"]
    return build


# --- classes 1-4, 6, 7, 12-14: one representative each (tests/test_bad_input.py has the variants) ---

def export_never_written(root: Path) -> list[str]:
    return ["export", "--model", f"{MODEL}:input_size=64", "--parity-n", "2", "-o", str(root / "out")]


def nan_label(root: Path) -> list[str]:
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


def nan_label_check(root: Path) -> str | None:
    import json

    block = json.loads((root / "out.json").read_text()).get("nme") or {}
    if block.get("faces") != 2 or (block.get("left_out") or {}).get("faces") != 1:
        return f"NME block has faces={block.get('faces')}, left_out={block.get('left_out')} (want 2 and 1)"
    return None


def stale_temps(root: Path) -> list[str]:
    out = root / "out"
    out.mkdir()
    dead = dead_pid()
    (out / f".face{TEMP_MARK}{dead}.onnx").write_bytes(b"half a file")
    (out / f".face{TEMP_MARK}{dead}.mlpackage").mkdir()
    return ["eval", "--model", MODEL, "--data", "synthetic:n=2", "--json", str(out / "r.json"), "--quiet"]


def malformed_bench(root: Path) -> list[str]:
    import json

    record = {"settings": {"threads": [1]}, "targets": [{"name": "m.onnx", "rows": [{"latency": {"p50": 1.0}}]}]}
    (root / "bench.json").write_text(json.dumps(record))  # a row without its thread count
    return ["report", str(root), "-o", str(root / "r")]


def malformed_pipeline(root: Path) -> list[str]:
    (root / "run").mkdir()
    (root / "run" / "pipeline.json").write_text('{"stages": {"train": "done"}}')  # a stage that is not a record
    return ["pipeline", "--config", str(REPO / "training/configs/pipeline-quick.yaml"), f"output={root / 'run'}"]


class EvilPickle:
    def __reduce__(self):
        return (exec, ("raise SystemExit('pwned')",))


def evil_checkpoint(root: Path) -> list[str]:
    import torch

    torch.save({"format": "edgefa-checkpoint", "x": EvilPickle()}, root / "evil.pt")
    return ["eval", "--model", str(root / "evil.pt"), "--data", "synthetic:n=2"]


def raw_pickle(root: Path) -> list[str]:
    import pickle

    (root / "raw.pt").write_bytes(pickle.dumps({"x": EvilPickle()}))
    return ["eval", "--model", str(root / "raw.pt"), "--data", "synthetic:n=2"]


def text_model(root: Path) -> list[str]:
    (root / "model.txt").write_text("not a model at all")
    return ["eval", "--model", str(root / "model.txt"), "--data", "synthetic:n=2"]
