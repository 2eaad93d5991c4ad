"""Latency ratios of device files timed interleaved: each round times every file in turn (A/B/A/B...),
so a busy spell of a shared machine hits all of them alike. For a ratio near a goal (e.g. "<= 0.75x
the peer's p50"), where the bench's one-file-after-another p50s can differ run to run.

    python benchmarks/interleaved.py REFERENCE.onnx FILE.onnx [FILE.tflite ...] [--rounds 9 --runs 200]

Each file runs in its own runtime (onnxruntime / LiteRT), 1 thread, batch 1, on one fixed random crop
of the input it declares. Printed: each file's p50 (median over rounds of each round's median call)
and its ratio to the first file, with the spread of the per-round ratios.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from edgefa.benchmarks.machine import machine_line, script_command
from edgefa.errors import EdgefaError


def crop_for(runner, seed: int = 0) -> np.ndarray:
    """One random input of the shape and dtype the file declares (dynamic batch -> 1)."""
    shape = [1 if d is None else d for d in runner.input_shape]
    rng = np.random.default_rng(seed)
    if np.issubdtype(np.dtype(runner.input_dtype), np.integer):
        return rng.integers(0, 256, shape).astype(runner.input_dtype)
    return rng.random(shape, dtype=np.float32)


def round_medians(paths: list, rounds: int, runs: int, warmup: int = 20, x: np.ndarray | None = None) -> list[list[float]]:
    """Per file, the median call (ms) of each round; every round times the files in turn. ``x``: the
    input for every file (default: a random crop of the input each file declares)."""
    from edgefa.benchmarks.timing import time_calls
    from edgefa.runtime.artifact import load_runner

    runners = [load_runner(p, threads=1)[1] for p in paths]
    crops = [crop_for(r) if x is None else x for r in runners]
    per_round = [[] for _ in paths]
    for _ in range(rounds):
        for k, (runner, crop) in enumerate(zip(runners, crops)):
            calls = time_calls(lambda runner=runner, crop=crop: runner.run(crop), warmup=warmup, runs=runs)
            per_round[k].append(float(np.median(calls)))
    return per_round


def interleaved(paths: list[str], rounds: int = 9, runs: int = 200, warmup: int = 20) -> list[dict]:
    per_round = round_medians(paths, rounds, runs, warmup)
    ref = np.array(per_round[0])
    rows = []
    for path, times in zip(paths, per_round):
        ratios = np.array(times) / ref
        rows.append({"file": path, "p50_ms": float(np.median(times)), "ratio": float(np.median(ratios)),
                     "ratio_min": float(ratios.min()), "ratio_max": float(ratios.max())})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", help="device files; the first is the reference of the ratios")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--runs", type=int, default=200, help="timed calls per file per round")
    args = parser.parse_args(argv)
    if len(args.files) < 2 or args.rounds < 1 or args.runs < 1:
        parser.error("give a reference file and at least one other; --rounds and --runs >= 1")
    try:
        rows = interleaved(args.files, args.rounds, args.runs)
    except EdgefaError as exc:
        print(f"interleaved: error: {exc}", file=sys.stderr)
        return 2
    print(f"# {script_command(argv)}\n# {machine_line()}; 1 thread, "
          f"{args.rounds} rounds x {args.runs} calls per file")
    for r in rows:
        print(f"{r['file']}: p50 {r['p50_ms']:.3f} ms, {r['ratio']:.2f}x the first "
              f"(rounds {r['ratio_min']:.2f}-{r['ratio_max']:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
