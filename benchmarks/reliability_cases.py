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
    "5": "report sets are all or nothing",
    "8": "bench workers die with their parent",
    "9": "regular files only where files are read",
    "11": "image size caps",
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


FAULTS = {"-": None, "enospc-3rd-file": functools.partial(enospc_on_file, 3)}


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


CASES: list[Case] = [
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
    missing = [e for e in expect if not (lines and e in lines[0])]
    outcome["ok"] = (not hung and code == case.code and not outcome["traceback"] and not outcome["partial"]
                     and (outcome["one_line"] or not case.one_line) and not missing)
    if missing and not hung:
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
