"""The papers' architectures trained on real data, beside the numbers their papers give:
``reports/seed-models.md``. For each training run: its best checkpoint exported (ONNX + TFLite fp32,
``--postprocess``, parity-gated on real crops), then every run's files in one ``edgefa bench`` (ONNX
Runtime and LiteRT, each file run on AFLW2000-3D, the peers beside them). The report takes accuracy
from the ONNX file and 1-thread latency from both; the bench record (--work/bench) is also a run for
``edgefa report`` (reports/benchmark).

    python benchmarks/seed_models.py runs/mobile-frnet-cpu runs/query-decoder-cpu ... \\
        --data aflw2000-3d:../shared/data/aflw2000-3d -o reports/seed-models --notes benchmarks/notes/seed-models.md

Files go under --work (default runs/seed-models/<run name>); a run whose exported
files exist is not exported again (``--reexport`` to redo).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edgefa.benchmarks.machine import machine_line, script_command, versions_line  # noqa: E402
from edgefa.errors import EdgefaError  # noqa: E402
from edgefa.fileio import write_md_json  # noqa: E402
from edgefa.metrics import BIN_NAMES  # noqa: E402

# What each paper reports on AFLW2000-3D (NME % per yaw bin, balanced mean; pose MAE mean in degrees),
# and its setting, so the report can say why ours differs. None: the paper gives no such number.
# Compute in G multiply-accumulates: Mobile-FRNet's "GFLOPs" are MACs (edgefa/models/mobile_frnet.py).
PAPERS = {
    "mobile_frnet": {"paper": "Mobile-FRNet, Table 2", "bins": (2.930, 3.799, 4.768), "mean": 3.832, "pose": None,
                     "params_m": 2.60, "gmacs": 0.12, "setting": "300W-LP (3DMM labels), 3DDFA protocol"},
    "mobile_frnet_noattn": {"paper": "Mobile-FRNet, Table 2 (no attention)", "bins": (2.962, 3.856, 4.991),
                            "mean": 3.936, "pose": None, "params_m": 2.40, "gmacs": 0.11,
                            "setting": "300W-LP (3DMM labels), 3DDFA protocol"},
    "multitask_mobilenetv3_small_100": {"paper": "Multi-task MobileViT, Table I (MobileNetV3-Small)",
                                        "bins": (3.085, 3.964, 4.850), "mean": 3.967, "pose": 3.786,
                                        "params_m": 36.04, "gmacs": None,
                                        "setting": "3DDFA data (300W-LP), 80 epochs, RTX A5000"},
    "multitask_mobilevit_s": {"paper": "Multi-task MobileViT, Table I (MobileViT v1-S)",
                              "bins": (2.937, 3.564, 4.760), "mean": 3.754, "pose": 3.624, "params_m": 47.53,
                              "gmacs": None, "setting": "3DDFA data (300W-LP), 80 epochs, RTX A5000"},
    "multitask_mobilevitv2_100": {"paper": "Multi-task MobileViT, Table I (MobileViT v2-1.0)",
                                  "bins": (2.877, 3.770, 5.088), "mean": 3.911, "pose": 3.848, "params_m": 31.68,
                                  "gmacs": None, "setting": "3DDFA data (300W-LP), 80 epochs, RTX A5000"},
    "query_decoder_mobilenetv3_small": {"paper": "Trans3DHead, Table 2 (pose only; NME on DAD-3DHeads)",
                                        "bins": None, "mean": None, "pose": 3.38, "params_m": None, "gmacs": None,
                                        "setting": "ResNet-50, DAD-3DHeads + FLAME, 360 epochs, V100"},
    "query_decoder_mobilenetv2": {"paper": "Trans3DHead, Table 2 (pose only; NME on DAD-3DHeads)",
                                  "bins": None, "mean": None, "pose": 3.38, "params_m": None, "gmacs": None,
                                  "setting": "ResNet-50, DAD-3DHeads + FLAME, 360 epochs, V100"},
    "dense_mobilenetv2": {"paper": "Dense 520 landmarks, Table 1/3 (MobileNetV2)", "bins": (2.86, 3.68, 4.76),
                          "mean": 3.77, "pose": None, "params_m": 4.18, "gmacs": 0.39,  # input size not stated
                          "setting": "520 points from PRNet position maps of 300W-LP"},
}


def _run_info(run: Path) -> dict:
    from edgefa.training.report import run_summary

    return {"run": run.name, **run_summary(run)}


def _export(run: Path, folder: Path, args) -> list[dict]:
    from edgefa.converters.export import run_export

    folder.mkdir(parents=True, exist_ok=True)
    done = folder / "export.json"
    if done.exists() and not args.reexport:
        return json.loads(done.read_text())
    rows, _ = run_export(str(run / "best.pt"), "onnx,tflite", "fp32", folder / "files", parity_data=args.parity_data,
                         parity_n=args.parity_n, postprocess=True, name=run.name)
    out = [{"format": r.format, "precision": r.precision, "status": r.status, "reason": r.reason,
            "size_mb": r.size_mb, "lm_px_max": r.parity.get("landmark_px_max"),
            "nme_points_mean": r.parity.get("nme_points_mean")} for r in rows]
    done.write_text(json.dumps(out, indent=1))
    return out


def bench_all(folders: list[Path], args, command: str) -> dict[tuple[str, str], dict]:
    """One ``edgefa bench`` over every run's files (ONNX Runtime and LiteRT, accuracy on --data, the
    peers beside them) into --work/bench: the record ``edgefa report`` adds to reports/benchmark as a
    run. Returns the rows by (run name, runtime)."""
    from edgefa.benchmarks.bench import run_bench
    from edgefa.benchmarks.tables import flat_rows

    record, _ = run_bench([str(f / "files") for f in folders], Path(args.work) / "bench",
                          runtimes="onnxruntime,litert", threads=args.threads, warmup=20, min_time=args.min_time,
                          data=args.data, peers=True, progress=False, command=command)
    return {(Path(r["name"]).stem, r["runtime"]): r for r in flat_rows(record) if not r["peer"]}


def seed_row(run: Path, info: dict, export: list[dict], bench: dict) -> dict:
    ort, lite = bench.get((run.name, "onnxruntime"), {}), bench.get((run.name, "litert"), {})
    return {**info, "export": export, "params_m": ort.get("params_m"), "gmacs": (ort.get("macs_m") or 0) / 1e3 or None,
            "bins": [ort.get(b) for b in BIN_NAMES], "nme_mean": ort.get("nme_mean"), "nme_plain": ort.get("nme_plain"),
            "pose_mae": ort.get("pose_mae"), "litert_nme": lite.get("nme_mean"), "ort_p50_1t": ort.get("p50_1t"),
            "litert_p50_1t": lite.get("p50_1t"), "paper": PAPERS.get(info["model"])}


def _f(v, spec=".3f"):
    return "–" if v is None else format(v, spec)


def markdown(rows: list[dict], notes: str, command: str, data: str) -> str:
    lines = ["# The papers' architectures trained on real data (seed models)", "", notes.strip(), "",
             f"Command: `{command}`  ", f"Machine: {machine_line()}  ", f"Versions: {versions_line()}", "",
             f"Accuracy: the exported ONNX fp32 file (with in-graph post-processing) run by `edgefa bench` on "
             f"`{data}` (NME %, 68 points, sqrt(w*h) of the ground-truth box; pose MAE mean of yaw/pitch/roll in "
             "degrees). Latency: p50 at batch 1, 1 thread, after 20 warm-up calls. Parity: the export gate on "
             f"real crops (fp32: max landmark difference in crop pixels vs PyTorch). The same bench ran the TFLite "
             f"files on the same faces: their NME, 2-thread latency and the peers beside them are in "
             f"`reports/benchmark.md` (its last run).", "",
             "| model | source | params (M) | GMACs | " + " | ".join(BIN_NAMES) + " | balanced | pose MAE | "
             "ORT p50 1t (ms) | LiteRT p50 1t (ms) | parity ONNX / TFLite (px) | epochs | train time |",
             "|" + "---|" * 14]
    for r in rows:
        parity = " / ".join(f"{e['status']} {_f(e['lm_px_max'], '.1e')}" for e in r["export"])
        lines.append(f"| {r['model']} | ours ({r['run']}) | {_f(r['params_m'], '.2f')} | {_f(r['gmacs'], '.3f')} | "
                     + " | ".join(_f(b) for b in r["bins"]) + f" | **{_f(r['nme_mean'])}** | {_f(r['pose_mae'], '.2f')} | "
                     f"{_f(r['ort_p50_1t'], '.2f')} | {_f(r['litert_p50_1t'], '.2f')} | {parity} | "
                     f"{r['epochs_done']}/{r['epochs_planned']} | {r['train_seconds'] / 60:.1f} min |")
        p = r["paper"]
        if p:
            bins = p["bins"] or (None, None, None)
            lines.append(f"| {r['model']} | paper: {p['paper']} | {_f(p['params_m'], '.2f')} | {_f(p['gmacs'], '.2f')} | "
                         + " | ".join(_f(b) for b in bins) + f" | {_f(p['mean'])} | {_f(p['pose'], '.2f')} | – | – | – | "
                         f"{p['setting']} | |")
    lines += ["", "Trained with:"]
    shared = str(Path("../shared").resolve())  # as the recipes write it, not this machine's path
    for r in rows:
        data = r["train_data"] if isinstance(r["train_data"], list) else [r["train_data"]]
        lines.append(f"- {r['model']}: `{r['train_command']}` (data: {', '.join(data).replace(shared, '../shared')})")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="training run folders (best.pt + last.pt)")
    ap.add_argument("--data", required=True, help="evaluation dataset spec (AFLW2000-3D)")
    ap.add_argument("--parity-data", default=None, help="crops for the export parity gate (default: --data,n=32)")
    ap.add_argument("--parity-n", type=int, default=32)
    ap.add_argument("--min-time", type=float, default=3.0)
    ap.add_argument("--threads", default="1,2", help="thread counts of the bench (the report shows 1 thread)")
    ap.add_argument("--work", default="runs/seed-models")
    ap.add_argument("--reexport", action="store_true")
    ap.add_argument("--export-only", action="store_true", help="export (and gate) only; bench on a quiet machine later")
    ap.add_argument("--notes", default=None, help="Markdown file with the report's status paragraph")
    ap.add_argument("-o", "--output", required=True, help="report path without suffix (.md and .json)")
    args = ap.parse_args(argv)
    args.parity_data = args.parity_data or args.data
    from edgefa.benchmarks.bench import check_data

    data_error = check_data(args.data)  # before any export: the report is about accuracy
    if data_error:
        print(f"seed_models: error: --data {args.data}: {data_error}", file=sys.stderr)
        return 2
    try:
        notes = Path(args.notes).read_text() if args.notes else ""
    except OSError as exc:
        print(f"seed_models: error: --notes {args.notes}: {exc.strerror}", file=sys.stderr)
        return 2
    try:
        if args.export_only:
            for run in args.runs:
                _run_info(Path(run))
                print(Path(run).name, _export(Path(run), Path(args.work) / Path(run).name, args))
            return 0
        command = script_command(argv)
        runs = [Path(run) for run in args.runs]
        infos = {run: _run_info(run) for run in runs}  # a broken run fails before any export
        exports = {run: _export(run, Path(args.work) / run.name, args) for run in runs}
        passed = [Path(args.work) / run.name for run in runs if all(e["status"] == "ok" for e in exports[run])]
        bench = bench_all(passed, args, command) if passed else {}
        rows = [seed_row(run, infos[run], exports[run], bench) for run in runs]
    except EdgefaError as exc:
        print(f"seed_models: error: {exc}", file=sys.stderr)
        return 2
    record = {"command": command, "machine": machine_line(), "versions": versions_line(), "data": args.data,
              "rows": rows}
    print(f"wrote {write_md_json(args.output, record, markdown(rows, notes, command, args.data))} and .json")
    return 0 if all(e["status"] == "ok" for r in rows for e in r["export"]) else 1


if __name__ == "__main__":
    sys.exit(main())
