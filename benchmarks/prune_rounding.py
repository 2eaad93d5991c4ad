"""Why pruning rounds kept channels (``prune.round_to``): the same -50 % MACs cut with exact channel
counts and with multiples of 8 / 16, each exported (ONNX, TFLite fp32) and timed in its runtime.

    python benchmarks/prune_rounding.py -o reports/prune-rounding [--models mobilenetv2_100,mobilenetv3_large_100]

Latency does not depend on the weights, so untrained registry models are pruned (no data needed).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edgefa.benchmarks.machine import machine_line, script_command, versions_line  # noqa: E402
from edgefa.fileio import write_md_json  # noqa: E402

ROUNDINGS = (1, 8, 16)


def _files(name: str, ratio: float, work: Path) -> list[tuple[str, int, dict, Path]]:
    """(model, rounding, pruning record or {}, folder of its exported files) for unpruned + each rounding."""
    import torch

    from edgefa.converters.export import run_export
    from edgefa.facemodel.synthetic import synthetic_face_model
    from edgefa.models.checkpoint import save_checkpoint
    from edgefa.models.registry import create_model
    from edgefa.quantization.prune import prune_model

    torch.manual_seed(0)
    model = create_model(name).eval()
    variants = [("unpruned", 0, {}, model)]
    for rounding in ROUNDINGS:
        result = prune_model(model, ratio, round_to=rounding)
        variants.append((f"-{ratio:.0%} MACs", rounding, result.record, result.model))
    out = []
    for label, rounding, record, net in variants:
        ckpt = work / f"{name}-{rounding}.pt"
        save_checkpoint(ckpt, net, synthetic_face_model())
        folder = work / f"{name}-{rounding}"
        run_export(str(ckpt), "onnx,tflite", "fp32", folder, parity_n=4, name=f"{name}-r{rounding}",
                   progress=lambda _: None)
        out.append((label, rounding, record, folder))
    return out


def main(argv=None) -> int:
    from edgefa.benchmarks.bench import run_bench
    from edgefa.benchmarks.tables import flat_rows

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", required=True, help="report path without suffix (.md and .json)")
    ap.add_argument("--models", default="mobilenetv2_100,mobilenetv3_large_100")
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--min-time", type=float, default=3.0)
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in args.models.split(","):
            for label, rounding, record, folder in _files(name, args.ratio, work):
                bench, _ = run_bench([str(folder)], work / f"bench-{name}-{rounding}", runtimes="onnxruntime,litert",
                                     threads="1", warmup=20, min_time=args.min_time, data=None, progress=False)
                for r in flat_rows(bench):
                    rows.append({"model": name, "variant": label, "round_to": rounding or None,
                                 "round_to_used": record.get("round_to"), "macs_m": r["macs_m"],
                                 "params_m": r["params_m"], "runtime": r["runtime"], "p50_1t": r.get("p50_1t")})
    if not rows:
        print("prune_rounding: error: the bench returned no rows (see the export/bench messages above)", file=sys.stderr)
        return 1
    base = {(r["model"], r["runtime"]): r["p50_1t"] for r in rows if r["variant"] == "unpruned"}
    lines = ["# Pruning: channel rounding and CPU latency", "",
             f"Command: `{script_command(argv)}`  ", f"Machine: {machine_line()}  ", f"Versions: {versions_line()}", "",
             "Each model cut by torch-pruning (DepGraph, magnitude) with kept channel counts exact (`round_to` 1) or "
             "multiples of 8 / 16, exported with `edgefa export` (fp32) and timed by "
             f"`edgefa bench` (1 thread, batch 1, p50 of >= {args.min_time} s after 20 warm-up calls). Untrained weights: "
             "latency does not depend on them.", "",
             "| model | variant | round_to (used) | MACs (M) | params (M) | runtime | p50 1t (ms) | vs unpruned |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ref = base.get((r["model"], r["runtime"]))
        ratio = f"{r['p50_1t'] / ref:.2f}x" if ref and r["p50_1t"] else "–"
        used = "–" if r["round_to"] is None and r["variant"] == "unpruned" else f"{r['round_to']} ({r['round_to_used']})"
        lines.append(f"| {r['model']} | {r['variant']} | {used} | {r['macs_m']:.1f} | {r['params_m']:.2f} | "
                     f"{r['runtime']} | {r['p50_1t']:.2f} | {ratio} |")
    record = {"command": script_command(argv), "machine": machine_line(), "versions": versions_line(), "rows": rows}
    print(f"wrote {write_md_json(args.output, record, chr(10).join(lines) + chr(10))} and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
