"""The hostile inputs and faults of issue #24, in one table shared by tests/test_reliability.py and
``python benchmarks/reliability.py`` (which runs each through the CLI and writes the report).

A case builds its input under an empty folder and returns the ``edgefa`` argv; the rule it checks:
exit code 2 (or the case's own), one error line naming the file and the problem, no traceback, no
final-named or temp file left behind (``leaves``), and done within its timeout (no hang).

Internal: ``python -m edgefa.benchmarks.reliability_cases FAULT ARGV...`` runs the CLI with FAULT injected
(``-`` for none): how the report's subprocesses get a full disk without filling one.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from edgefa.benchmarks.reliability_inputs import (
    FAULTS,
    MODEL,
    REPO,
    bench_after_killed_run,
    bench_fifo,
    bench_to_kill,
    bmp_with_size,
    eval_fifo_model,
    eval_folder,
    evil_checkpoint,
    export_never_written,
    fifo,
    jpeg_with_size,
    malformed_bench,
    malformed_pipeline,
    nan_label,
    nan_label_check,
    not_a_checkpoint,
    png_bytes,
    raw_pickle,
    report_full_disk,
    resume,
    stale_temps,
    tampered_onnx,
    text_model,
)
from edgefa.fileio import TEMP_MARK

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


CASES: list[Case] = [
    Case("1", "synthetic:n=-1 (was a silent slice)", lambda root: ["eval", "--model", MODEL, "--data", "synthetic:n=-1"],
         ("synthetic:n=-1", "option n must be a whole number >= 1 (got -1)")),
    Case("2", "disk full at the .onnx rename: the row fails, no file", export_never_written, code=1, one_line=False,
         fault="enospc-onnx-rename", leaves=("out/*.onnx", f"out/.*{TEMP_MARK}*"), timeout=120),
    Case("3", "--name ../escaped", lambda root: ["export", "--model", f"{MODEL}:input_size=64", "--name", "../escaped",
                                                 "-o", str(root / "out")],
         ("../escaped", "must be a file name stem"), leaves=("out", "escaped*")),
    Case("4", "one NaN landmark: that face left out, NME kept", nan_label, code=0, one_line=False,
         extra={"check": nan_label_check}),
    Case("6", "optimizer.lr=-0.1", lambda root: ["train", "--config", str(REPO / "training/configs/synthetic-quick.yaml"),
                                                 "optimizer.lr=-0.1", f"output={root / 'run'}"],
         ("'optimizer.lr' must be > 0",), leaves=("run",)),
    Case("7", "--batch 0 (argparse: usage, then the error)",
         lambda root: ["eval", "--model", MODEL, "--data", "synthetic:n=2", "--batch", "0"],
         ("argument --batch: must be >= 1, got 0",), one_line=False),
    Case("7", "synthetic:seed=abc", lambda root: ["eval", "--model", MODEL, "--data", "synthetic:seed=abc"],
         ("synthetic:seed=abc", "option seed must be a whole number >= 0")),
    Case("10", "ONNX: edgefa.input says NHWC uint8, the graph takes NCHW float32",
         tampered_onnx("eval", **{"edgefa.input": '{"size": [64, 64], "layout": "NHWC", "dtype": "uint8", '
                                   '"color": "RGB", "mean": [0, 0, 0], "std": [1, 1, 1]}'}),
         ("x.onnx", "metadata says input Bx64x64x3 uint8 NHWC, but the graph takes Bx3x64x64 float32"),
         leaves=("out.json",)),
    Case("10", "ONNX: edgefa.input says 120x120, the graph takes 64x64",
         tampered_onnx("predict", **{"edgefa.input": '{"size": [120, 120], "layout": "NCHW", "dtype": "float32", '
                                      '"color": "BGR", "mean": [0, 0, 0], "std": [1, 1, 1]}'}),
         ("x.onnx", "metadata says input Bx3x120x120 float32 NCHW, but the graph takes Bx3x64x64 float32"),
         leaves=("out.json",)),
    Case("10", "ONNX: the graph takes 1 channel", tampered_onnx("eval", channels=1),
         ("x.onnx", "but the graph takes Bx1x64x64 float32"), leaves=("out.json",)),
    Case("10", "ONNX: edgefa.outputs names landmarks, pose; the graph gives params",
         tampered_onnx("predict", **{"edgefa.outputs": '{"landmarks": "", "pose": ""}'}),
         ("x.onnx", "metadata says outputs landmarks, pose, but the graph has params"), leaves=("out.json",)),
    Case("10", "ONNX: output named out0, not params", tampered_onnx("eval", output="out0", **{"edgefa.outputs": "{}"}),
         ("x.onnx", "metadata lists no outputs, but the graph has out0"), leaves=("out.json",)),
    Case("10", "ONNX: params output is (B, 10)", tampered_onnx("eval", n_params=10),
         ("x.onnx", "output 'params' is 4x10 for 4 crop(s), but an edgefa file gives Bx62"), leaves=("out.json",)),
    Case("10", "--resume a checkpoint of another model", resume(model_name="mobilenetv2_100"),
         ("last.pt", "a checkpoint of model 'mobilenetv2_100', but the recipe trains 'mobilenetv3_small_100'"),
         leaves=("run/*.pt", "run/summary.json")),
    Case("10", "--resume: epoch is a string", resume(epoch="three"),
         ("last.pt", "field 'epoch' is 'three', not a whole number"), leaves=("run/*.pt", "run/summary.json")),
    Case("10", "--resume: best missing", resume(drop=("best",)),
         ("last.pt", "no 'best' to resume from"), leaves=("run/*.pt", "run/summary.json")),
    Case("10", "--resume: optimizer missing", resume(drop=("optimizer",)),
         ("last.pt", "no 'optimizer' to resume from"), leaves=("run/*.pt", "run/summary.json")),
    Case("10", "--resume: an Adam moment of the wrong shape", resume(moment_shape=(3,)),
         ("last.pt", "field 'optimizer' holds exp_avg of shape [3] for parameter 0"),
         leaves=("run/*.pt", "run/summary.json")),
    Case("10", "--resume: optimizer state of another model", resume(optimizer={"state": {}, "param_groups": [
        {"params": [0, 1], "lr": 1e-3}]}), ("last.pt", "field 'optimizer' does not fit"),
         leaves=("run/*.pt", "run/summary.json")),
    Case("12", "a killed run's temp file and folder are removed by the next run", stale_temps, code=0,
         one_line=False, leaves=(f"out/.*{TEMP_MARK}*",)),
    Case("13", "bench.json row without its thread count", malformed_bench,
         ("bench.json", "not an edgefa bench record", "threads"), leaves=("r.*",)),
    Case("13", "pipeline.json stage that is not a record", malformed_pipeline, ("pipeline.json", "not a pipeline state file")),
    Case("14", "checkpoint whose pickle calls exec", evil_checkpoint, ("evil.pt", "refused", "references exec")),
    Case("14", "raw pickle as a .pt", raw_pickle, ("raw.pt", "tensors-only loader")),
    Case("14", "a .txt as --model", text_model, ("model.txt", "neither torch.save's zip nor a pickle")),
    Case("5", "report set, disk full at the 3rd file", report_full_disk, ("{root}/out/rep", "No space left"),
         fault="enospc-3rd-file", leaves=("out/rep*", f"out/.*{TEMP_MARK}*")),
    Case("8", "kill -9 of edgefa bench: its worker exits too", bench_to_kill, kill_parent=True, one_line=False,
         code=-9, timeout=90),
    Case("8", "a killed bench's job file is removed by the next run", bench_after_killed_run, code=1,
         one_line=False, leaves=(f"out/.*{TEMP_MARK}*",)),
    Case("9", "FIFO x.jpg in a folder dataset", eval_folder("x.jpg", fifo), ("x.jpg", "not a regular file (a FIFO)"),
         leaves=("out.json",), hangs_unfixed=True, timeout=30),
    Case("9", "link to /dev/zero as d.jpg in a folder dataset",
         eval_folder("d.jpg", lambda p: p.symlink_to("/dev/zero")), ("d.jpg", "not a regular file (a character device)"),
         leaves=("out.json",), hangs_unfixed=True, timeout=30),
    Case("9", "FIFO m.onnx to edgefa bench", bench_fifo, ("m.onnx", "not a regular file (a FIFO)"),
         leaves=("out/bench.json", "out/bench.md"), hangs_unfixed=True, timeout=30),
    Case("9", "FIFO m.onnx as eval --model", eval_fifo_model(".onnx"), ("m.onnx", "not a regular file (a FIFO)"),
         hangs_unfixed=True, timeout=30),
    Case("9", "FIFO m.pt as eval --model", eval_fifo_model(".pt"), ("m.pt", "not a regular file (a FIFO)"),
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
    Case("earlier", "not a checkpoint", not_a_checkpoint, ("junk.pt", "not a PyTorch checkpoint")),
    Case("earlier", "missing dataset folder", lambda root: ["eval", "--model", MODEL, "--data", f"aflw2000-3d:{root}/nope"],
         ("nope", "not found")),
]


# --- running a case through the CLI in its own process ---

def cli_command(case: Case, argv: list[str]) -> list[str]:
    return [sys.executable, "-m", "edgefa.benchmarks.reliability_cases", case.fault, *argv]


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
