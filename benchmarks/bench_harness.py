"""A benchmark of ``edgefa bench`` itself: how its wall time grows with artifacts x runtimes x threads,
and how stable one artifact's latency is from run to run.

    python benchmarks/bench_harness.py FILES_DIR -o reports/bench-harness [--repeats 5]

FILES_DIR holds exported files (e.g. an ``edgefa export`` output with .onnx and .tflite files).
Latency only (no dataset), so the figures are the harness's own cost per row.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edgefa.benchmarks.bench import run_bench  # noqa: E402
from edgefa.benchmarks.machine import machine_line, script_command, versions_line  # noqa: E402
from edgefa.fileio import write_md_json  # noqa: E402


def timed_bench(files: list[str], runtimes: str, threads: str, min_time: float) -> tuple[float, dict]:
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        record, _ = run_bench(files, out, runtimes=runtimes, threads=threads, warmup=5, min_time=min_time,
                              data=None, progress=False)
        return time.perf_counter() - start, record


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", help="folder of exported files (.onnx and .tflite)")
    ap.add_argument("-o", "--output", required=True, help="report path without suffix (.md and .json)")
    ap.add_argument("--repeats", type=int, default=5, help="bench runs of one artifact for the stability figure")
    ap.add_argument("--min-time", type=float, default=1.0)
    args = ap.parse_args(argv)
    folder = Path(args.files)
    onnx = sorted(str(p) for p in folder.glob("*.onnx"))
    tflite = sorted(str(p) for p in folder.glob("*.tflite"))
    if not onnx or not tflite:
        raise SystemExit(f"{folder}: needs .onnx and .tflite files")

    scaling = []
    for n_files in (1, 2, 4):
        for runtimes, pool in (("onnxruntime", onnx), ("onnxruntime,litert", onnx + tflite)):
            for threads in ("1", "1,2"):
                files = pool[:n_files] if runtimes == "onnxruntime" else (onnx[:n_files] + tflite[:n_files])
                seconds, record = timed_bench(files, runtimes, threads, args.min_time)
                rows = sum(len(t["rows"]) for t in record["targets"])
                scaling.append({"files": len(files), "runtimes": runtimes, "threads": threads, "rows": rows,
                                "seconds": round(seconds, 1), "seconds_per_row": round(seconds / rows, 2)})
                print(scaling[-1], flush=True)

    one = onnx[0]
    p50s = []
    for _ in range(args.repeats):
        _, record = timed_bench([one], "onnxruntime", "1", args.min_time)
        p50s.append(record["targets"][0]["rows"][0]["latency"]["p50_ms"])
    p50s = np.asarray(p50s)
    stability = {"file": Path(one).name, "repeats": args.repeats, "p50_ms": p50s.round(4).tolist(),
                 "mean": float(p50s.mean()), "min": float(p50s.min()), "max": float(p50s.max()),
                 "cv_percent": float(100 * p50s.std() / p50s.mean())}
    report = {"command": script_command(argv),
              "machine": machine_line(), "versions": versions_line(), "min_time": args.min_time,
              "scaling": scaling, "stability": stability}
    print(f"wrote {write_md_json(args.output, report, to_markdown(report))} and .json")
    return 0


def to_markdown(r: dict) -> str:
    s = r["stability"]
    lines = ["# Benchmark harness: cost and stability", "", f"Command: `{r['command']}`  ",
             f"Machine: {r['machine']}  ", f"Versions: {r['versions']}", "",
             f"Each row of `edgefa bench` runs its model in a fresh process (import, load, {r['min_time']} s of "
             "timed calls after 5 warm-up calls). Latency only: no dataset.", "",
             "## Wall time against artifacts x runtimes x threads", "",
             "| files | runtimes | threads | rows | wall s | s per row |", "|---:|---|---|---:|---:|---:|"]
    for x in r["scaling"]:
        lines.append(f"| {x['files']} | {x['runtimes']} | {x['threads']} | {x['rows']} | {x['seconds']} | {x['seconds_per_row']} |")
    lines += ["", f"## Run-to-run stability of one artifact ({s['file']}, onnxruntime, 1 thread)", "",
              f"p50 over {s['repeats']} separate bench runs (ms): " + ", ".join(f"{v:.3f}" for v in s["p50_ms"]),
              "", f"mean {s['mean']:.3f} ms, min {s['min']:.3f}, max {s['max']:.3f}, "
              f"spread {100 * (s['max'] - s['min']) / s['mean']:.1f} % of the mean, CV {s['cv_percent']:.1f} %.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
