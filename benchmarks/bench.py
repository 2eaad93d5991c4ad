"""``edgefa bench``: every artifact x its runtime x thread count -> size, compute, latency, memory, accuracy.

Each model runs in its own process (benchmarks/worker.py); this module plans the matrix, checks the
request before any work, streams the workers' events into rows and writes ``bench.json`` (+ a quick
``bench.md``) to the run folder that ``edgefa report`` reads.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm import tqdm

from edgefa.benchmarks.machine import machine_facts
from edgefa.converters.onnx_int8 import quantizer_of_note
from edgefa.errors import EdgefaError, unknown_name_error
from edgefa.fileio import check_writable, json_bytes, refuse_special_file, temp_sibling, write_file_set
from edgefa.paths import portable, shared_root
from edgefa.runtime.formats import FORMATS, format_of_path, parse_list

RUNTIMES = ("torch", "onnxruntime", "litert", "coreml")
MEDIAPIPE_NOTE = "468 points read as 68 by a mapping learned on aflw-train (reports/mediapipe-peer.md)"


@dataclass
class Target:
    name: str
    kind: str  # file | torch | foreign-tflite | missing
    ref: str  # path or model spec
    runtime: str
    peer: bool = False
    note: str = ""  # why a row did not run, or why accuracy is n/a
    rows: list = field(default_factory=list)  # one per thread count
    info: dict = field(default_factory=dict)
    accuracy: dict = field(default_factory=dict)
    status: str = "pending"


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:80] or "model"


def _file_target(path: Path, peer: bool = False) -> Target:
    fmt = format_of_path(path)
    name = f"{path.parent.name}/{path.name}" if path.stem in ("best", "last") else path.name
    if fmt is None:
        return Target(name, "torch", str(path), "torch", peer)
    if not path.exists():
        return Target(name, "missing", str(path), fmt.runtime_key, peer, note=f"{path}: file not found")
    if fmt.name == "tflite":
        from edgefa.runtime.tflite import read_metadata

        try:
            meta = read_metadata(path.read_bytes())
        except Exception:  # noqa: BLE001  (not a flatbuffer: the worker's load says so in one line)
            meta = {"edgefa.input": "?"}
        if "edgefa.input" not in meta:
            return Target(name, "foreign-tflite", str(path), "litert", peer,
                          note="n/a: not an edgefa file (no edgefa.input metadata)")
    return Target(name, "file", str(path), fmt.runtime_key, peer)


def _file_order(path: Path) -> tuple:
    """Group a model's files together: by folder, model stem, format, then fp32, fp16, int8, palettes."""
    fmt = format_of_path(path)
    stem = path.name[: -len(fmt.suffix)] if fmt else path.stem
    base, _, prec = stem.rpartition("-")
    ranks = {"fp16": 1, "int8": 2, "palette6": 3, "palette4": 4, "sparse50": 5}
    if prec not in ranks:
        base, prec = stem, "fp32"
    return (str(path.parent), base, fmt.name if fmt else "torch", ranks.get(prec, 0))


def collect_targets(inputs: list[str]) -> list[Target]:
    """Files, folders of exported files (and .pt checkpoints, not last.pt), or model specs."""
    targets: list[Target] = []
    for text in inputs:
        path = Path(text)
        if path.is_dir() and format_of_path(path) is None:
            found = sorted((p for p in path.rglob("*") if (format_of_path(p) and not p.name.startswith("."))
                            or (p.suffix == ".pt" and p.name != "last.pt")), key=_file_order)
            found = [p for p in found if not any(format_of_path(q) for q in p.parents)]  # not inside .mlpackage
            for p in found:
                refuse_special_file(p, "model file")
            if not found:
                targets.append(Target(text, "missing", text, "?", note=f"{text}: no exported files or checkpoints in folder"))
            targets += [_file_target(p) for p in found]
        elif format_of_path(path) is not None or path.suffix in (".pt", ".pth"):
            # a FIFO would hang the metadata peek in this process, out of --timeout's reach
            refuse_special_file(path, "model file")
            if not path.exists():
                targets.append(Target(path.name, "missing", text, "?", note=f"{text}: file not found"))
            else:
                targets.append(_file_target(path))
        else:  # a model spec: 3ddfa-v2-mb05:PATH or a registry name
            targets.append(Target(text.split(":", 1)[0], "torch", text, "torch"))
    return targets


def peer_targets(files: list[Target], out: Path, progress: bool) -> list[Target]:
    """The 3DDFA-V2 mb05 checkpoint in torch and exported like the benchmarked files, and MediaPipe's
    face_landmark.tflite. Exports are cached in ``OUT/peers`` (made once, reused by later runs)."""
    import platform

    from edgefa.converters.export import run_export

    shared = shared_root()
    mb05 = shared / "peers" / "3ddfa_v2_mb05" / "mb05_120x120.pth"
    mediapipe = shared / "peers" / "mediapipe_face" / "face_landmark.tflite"
    peers = []
    if mb05.is_file():
        spec = f"3ddfa-v2-mb05:{mb05}"
        peers.append(Target("3ddfa-v2-mb05 torch", "torch", spec, "torch", peer=True))
        # (format, precision, postprocess, ONNX int8 quantizer): the peer is quantized like each file
        combos = {(t.info.get("format"), t.info.get("precision"), bool(t.info.get("postprocess", True)),
                   t.info.get("onnx_quantizer")) for t in files}
        combos = sorted((c for c in combos if c[0] and c[1] and (c[0] != "coreml" or platform.system() == "Darwin")),
                        key=lambda c: (c[0], c[1], c[2], c[3] or ""))
        if not combos:
            combos = [("onnx", "fp32", True, None), ("tflite", "fp32", True, None)]
        real_calib = shared / "data" / "aflw-train"
        calib = f"aflw-train:{real_calib},split=val" if real_calib.is_dir() else None
        for postprocess, quantizer in sorted({(c[2], c[3]) for c in combos}, key=lambda v: (v[0], v[1] or "")):
            wanted = [(f, p) for f, p, pp, q in combos if (pp, q) == (postprocess, quantizer)]
            folder = out / "peers" / ("postprocess" if postprocess else "raw")
            name = "3ddfa-v2-mb05" + ("-ortq" if quantizer == "onnxruntime" else "")
            stem = name + ("" if postprocess else "-raw")
            missing = [(f, p) for f, p in wanted if not (folder / FORMATS[f].file_name(stem, p)).exists()]
            for fmt in sorted({f for f, _ in missing}):
                precs = [p for f, p in missing if f == fmt]
                print(f"bench: exporting the 3DDFA-V2 mb05 peer to {fmt} {','.join(precs)} (cached in {folder})",
                      file=sys.stderr, flush=True)
                run_export(spec, fmt, ",".join(precs), folder, calib_data=calib, postprocess=postprocess,
                           name=name, onnx_quantizer=quantizer or "nncf")
            for f, p in wanted:
                path = folder / FORMATS[f].file_name(stem, p)
                t = _file_target(path, peer=True) if path.exists() else Target(
                    path.name, "missing", str(path), FORMATS[f].runtime_key, True, note="peer export failed its gate")
                peers.append(t)
    else:
        peers.append(Target("3ddfa-v2-mb05", "missing", str(mb05), "torch", True,
                            note=f"{mb05}: peer checkpoint not found (set EDGEFA_SHARED)"))
    if mediapipe.is_file():
        peers.append(Target("mediapipe face_landmark.tflite", "foreign-tflite", str(mediapipe), "litert", True,
                            note=MEDIAPIPE_NOTE))
    else:
        peers.append(Target("mediapipe face_landmark", "missing", str(mediapipe), "litert", True,
                            note=f"{mediapipe}: not found (set EDGEFA_SHARED)"))
    return peers


def check_request(runtimes, threads, warmup, runs, min_time, batch) -> tuple[list[str], list[int]]:
    names = parse_list(runtimes, "runtimes") if isinstance(runtimes, str) else list(runtimes)
    for name in names:
        if name not in RUNTIMES:
            raise unknown_name_error("runtime", name, RUNTIMES)
    try:
        items = [threads] if isinstance(threads, int) else str(threads).split(",") if isinstance(threads, str) else threads
        counts = [int(t) for t in items]
    except ValueError:
        raise EdgefaError(f"--threads {threads}: expected a comma list of integers, e.g. 1,2,4") from None
    if not counts or min(counts) < 1:
        raise EdgefaError(f"--threads {threads}: thread counts must be >= 1")
    if warmup < 0 or batch < 1 or (runs is not None and runs < 1) or (runs is None and min_time <= 0):
        raise EdgefaError("--warmup >= 0, --batch >= 1, and --runs >= 1 or --min-time > 0 are required")
    return names, counts


def runtime_missing(runtime: str) -> str | None:
    """Install hint for a runtime: the format table's (torch, which edgefa needs anyway, has no format)."""
    fmt = next((f for f in FORMATS.values() if f.runtime_key == runtime), None)
    return fmt.runtime_missing() if fmt is not None else None


def check_data(data: str | None) -> str | None:
    """The dataset spec's error line, or None when it loads (a bad spec fails accuracy, not latency)."""
    if not data:
        return None
    from edgefa.data.registry import create_dataset

    try:
        create_dataset(data)
    except EdgefaError as exc:
        return str(exc).splitlines()[0]
    return None


def run_target(target: Target, job: dict, timeout: float, bar, job_dir: str | Path | None = None) -> None:
    import threading

    # the job file carries this process's id in the run folder: a killed bench's leftover is
    # removed by the next run writing there (edgefa.fileio.remove_stale_temps)
    job_path = temp_sibling(Path(job_dir or tempfile.gettempdir()) / f"job-{slug(target.name)}.json")
    job_path.write_text(json.dumps({**job, "kind": target.kind, "ref": target.ref, "parent_pid": os.getpid()}))
    # stderr to a file, not a pipe: runtimes can log more than a pipe buffer while we read stdout
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, "-m", "edgefa.benchmarks.worker", str(job_path)], stdout=subprocess.PIPE,
                                stderr=err, text=True, cwd=Path(__file__).resolve().parent.parent)
        watchdog = threading.Timer(timeout, proc.kill)  # a hung model prints nothing: kill it on time
        watchdog.start()
        try:
            for line in proc.stdout:
                if not line.startswith("@@edgefa "):
                    continue
                try:
                    ev = json.loads(line[len("@@edgefa "):])
                    kind = ev.pop("event")
                except (ValueError, KeyError, AttributeError):
                    continue  # a garbled event line: the exit code and stderr still tell what happened
                if kind == "row":
                    target.rows.append(ev)
                    bar.update(1)
                elif kind == "info":
                    target.info.update(ev)
                elif kind == "accuracy":
                    target.accuracy = ev
                elif kind == "crash":
                    target.note = ev["note"]
            code = proc.wait()
        finally:
            if proc.poll() is None:  # we stopped reading early (an error or Ctrl-C): no orphan worker
                proc.kill()
                proc.wait()
            timed_out = not watchdog.is_alive() and proc.returncode not in (0, 1)
            watchdog.cancel()
            job_path.unlink(missing_ok=True)
        err.seek(0)
        stderr = err.read()
    if timed_out:
        target.note = f"timed out after {timeout:.0f} s (--timeout)"
    bar.update(max(0, len(job["threads"]) - len(target.rows)))
    failed = code != 0 or any(r["status"] == "failed" for r in target.rows) or target.accuracy.get("status") == "failed"
    if failed and not target.note:
        notes = [r.get("note") for r in target.rows if r["status"] == "failed"] + [target.accuracy.get("note")]
        tail = [ln for ln in stderr.strip().splitlines() if ln.strip()][-1:] or [f"worker exited with code {code}"]
        target.note = next((n for n in notes if n), tail[0])
    statuses = {r["status"] for r in target.rows}
    target.status = "failed" if failed else ("needs macOS" if statuses == {"needs macOS"} else "ok")


def run_bench(inputs: list[str], out: str | Path, runtimes="torch,onnxruntime,litert,coreml", threads="1",
              warmup: int = 10, runs: int | None = None, min_time: float = 2.0, batch: int = 1,
              data: str | None = None, peers: bool = False, timeout: float = 1800.0, progress: bool = True,
              command: str = "", stage: str = "") -> tuple[dict, int]:
    """Run the matrix; returns the run record (also written to OUT/bench.json) and the exit code.
    ``command`` is what a reader pastes to redo it; ``stage`` names the pipeline stage that ran it."""
    runtime_names, thread_counts = check_request(runtimes, threads, warmup, runs, min_time, batch)
    out = Path(out)
    check_writable(out / "bench.json", "-o")
    data_error = check_data(data)
    if data_error:
        print(f"edgefa bench: error: --data {data}: {data_error} (latency still runs; accuracy skipped)", file=sys.stderr)
    targets = collect_targets(inputs)
    for t in targets:  # peers are exported like the user's files: peek at the files' metadata
        if t.kind == "file":
            from edgefa.runtime.artifact import load_runner

            try:
                t.info.update(_peek(t.ref, load_runner))
            except EdgefaError:
                pass
    if peers:
        targets += peer_targets([t for t in targets if t.kind == "file" and not t.peer], out, progress)
    targets = [t for t in targets if t.runtime in runtime_names or t.kind == "missing"]
    (out / "overlays").mkdir(parents=True, exist_ok=True)
    job = {"threads": thread_counts, "warmup": warmup, "runs": runs, "min_time": min_time, "batch": batch,
           "data": None if data_error else data}
    start = time.perf_counter()
    with tqdm(total=len(targets) * len(thread_counts), desc="bench", unit="row", disable=None if progress else True) as bar:
        for t in targets:
            bar.set_postfix_str(t.name[:40])
            hint = runtime_missing(t.runtime) if t.kind != "missing" else None
            if t.kind == "missing" or hint:
                t.status, t.note = ("failed", t.note) if t.kind == "missing" else ("skipped", hint)
                bar.update(len(thread_counts))
                continue
            overlay = out / "overlays" / f"{slug(t.name)}.npz"
            # a foreign .tflite is scored only when it is the MediaPipe peer (its 68-point mapping)
            accuracy = t.kind != "foreign-tflite" or (t.peer and t.note == MEDIAPIPE_NOTE)
            run_target(t, {**job, "overlay": str(overlay), "accuracy": accuracy}, timeout, bar,
                       job_dir=out)
    record = {"command": command, **({"stage": stage} if stage else {}), "machine": machine_facts(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
              "seconds": round(time.perf_counter() - start, 1),
              "settings": {"runtimes": runtime_names, "threads": thread_counts, "warmup": warmup, "runs": runs,
                           "min_time": min_time, "batch": batch, "data": data, "data_error": data_error,
                           "peers": peers},
              # no machine paths in what a report shows (the shared folder as {shared}, the repo relative)
              "targets": [{**asdict(t), "ref": portable(t.ref), "note": portable(t.note)} for t in targets]}
    from edgefa.benchmarks.tables import bench_markdown

    # a pair, both or neither: the report reads bench.json, people read bench.md
    write_file_set({out / "bench.json": json_bytes(record), out / "bench.md": bench_markdown(record).encode()})
    failed = data_error is not None or any(t.status == "failed" for t in targets)
    return record, 1 if failed else 0


def _peek(path: str, load_runner) -> dict:
    _, runner = load_runner(path, 1)
    meta = runner.metadata
    fmt, precision = format_of_path(path).name, meta.get("edgefa.precision")
    info = {"format": fmt, "precision": precision, "postprocess": json.loads(meta.get("edgefa.postprocess", "false"))}
    if fmt == "onnx" and precision == "int8":  # which quantizer made it (the exporter's calibration note)
        info["onnx_quantizer"] = quantizer_of_note(meta.get("edgefa.calibration", "")) or "nncf"
    return info
