"""The compression study behind ``reports/compression.md``: one trained checkpoint -> float, PTQ int8,
QAT int8, pruned 30 % / 50 % MACs (before and after fine-tuning) and pruned 50 % + QAT, each exported
as ONNX and TFLite files, then every file benched in its own runtime (1 thread) and evaluated by
running it on the dataset (AFLW2000-3D), never the PyTorch model.

    # heavy part (training); resumable: a stage whose output exists is not redone
    python benchmarks/compression.py run --source runs/mobilenetv3-large-cpu/best.pt -o runs/compression/mobilenetv3-large
    # bench every file of the studies on a quiet machine, then write the report
    python benchmarks/compression.py report runs/compression/mobilenetv3-large runs/compression/mobilenetv2 -o reports/compression

Everything it does goes through the library (``quantization.recipe``, ``converters.export``,
``benchmarks.bench``); this script only fixes the study's variants and lays out the table.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from benchmarks.machine import machine_line, script_command, versions_line
from edgefa.errors import EdgefaError
from edgefa.fileio import atomic_write_json, write_md_json

# variant -> (what it is, the precision its files are exported at)
VARIANTS = {
    "float": ("trained float model", "fp32"),
    "ptq": ("post-training int8 (calibrated, no training)", "int8"),
    "qat": ("quantization-aware training int8", "int8"),
    "p30": ("pruned -30 % MACs, no fine-tune", "fp32"),
    "p30-ft": ("pruned -30 % MACs + fine-tune", "fp32"),
    "p50": ("pruned -50 % MACs, no fine-tune", "fp32"),
    "p50-ft": ("pruned -50 % MACs + fine-tune", "fp32"),
    "p50-ft-qat": ("pruned -50 % + fine-tune + QAT int8", "int8"),
}
GOALS = {"int8": 0.10, "p50-ft": 0.15}  # the issue's NME budgets over float, in NME points
BINS = ("[0,30]", "(30,60]", "(60,90]")


def _cfg(source: str, args, overrides: list[str]) -> dict:
    from edgefa.models.checkpoint import load_checkpoint
    from quantization.config import load_compression_config

    state = load_checkpoint(source)
    return load_compression_config(args.config, overrides, source=source, source_config=state.get("config"))


def _stage_overrides(args) -> list[str]:
    freeze = args.qat_epochs - 1 if args.qat_epochs > 1 else "null"  # the last epoch runs frozen
    out = [f"finetune.epochs={args.finetune_epochs}", f"qat.epochs={args.qat_epochs}",
           f"qat.freeze_bn_after={freeze}", f"qat.freeze_observers_after={freeze}",
           f"data.workers={args.workers}", f"threads={args.threads}"]
    return out


def _qat_overrides(args) -> list[str]:
    return [*_stage_overrides(args), *([f"data.train={args.qat_data}"] if args.qat_data else [])]


def _export(checkpoint: Path, variant: str, label: str, run: Path, args) -> None:
    from converters.export import run_export

    out = run / "files" / variant  # done or not is study.json's record, not what a failed try left here
    precision = VARIANTS[variant][1]
    rows, _ = run_export(str(checkpoint), "onnx,tflite", precision, out, calib_data=args.calib_data,
                         calib_n=args.calib_n, parity_data=args.parity_data, parity_n=args.parity_n,
                         postprocess=True, name=f"{label}-{variant}")
    bad = [f"{r.format} {r.precision}: {r.reason}" for r in rows if r.status != "ok"]
    if bad:  # not recorded as done: a re-run tries again
        raise EdgefaError(f"{variant}: export failed ({'; '.join(bad)})")


def run_study(args) -> int:
    from quantization.recipe import prune_checkpoint, qat_checkpoint

    run, source = Path(args.output), Path(args.source)
    label = args.name or source.parent.name
    run.mkdir(parents=True, exist_ok=True)
    log = {"source": str(source), "label": label, "command": script_command(None), "stages": {}}
    log_path = run / "study.json"
    if log_path.exists():
        log["stages"] = json.loads(log_path.read_text()).get("stages", {})

    def timed(name, fn):
        if name in log["stages"]:
            return Path(log["stages"][name]["output"])
        t0 = time.perf_counter()
        result = fn()
        log["stages"][name] = {"output": str(result), "seconds": round(time.perf_counter() - t0, 1)}
        atomic_write_json(log_path, log)
        return result

    over = _stage_overrides(args)
    ckpt = {"float": source, "ptq": source}
    ckpt["qat"] = timed("qat", lambda: qat_checkpoint(source, _cfg(str(source), args, _qat_overrides(args)), run / "qat",
                                                        progress=not args.quiet))
    for ratio in (30, 50):
        def prune(r=ratio):
            cfg = _cfg(str(source), args, [*over, f"prune.ratio={r / 100}", f"prune.method={args.method}"])
            return prune_checkpoint(source, cfg, run / f"p{r}", progress=not args.quiet)
        ckpt[f"p{ratio}-ft"] = timed(f"p{ratio}", prune)
        ckpt[f"p{ratio}"] = run / f"p{ratio}" / "pruned.pt"
    p50 = ckpt["p50-ft"]
    ckpt["p50-ft-qat"] = timed("p50-ft-qat", lambda: qat_checkpoint(p50, _cfg(str(p50), args, _qat_overrides(args)), run / "p50-qat",
                                                                    progress=not args.quiet))
    for variant in VARIANTS:
        timed(f"export {variant}", lambda v=variant: (_export(ckpt[v], v, label, run, args), run / "files" / v)[1])
    return 0


# ---------------------------------------------------------------- report

def _bench(run: Path, args) -> dict:
    from benchmarks.bench import run_bench

    out = run / "bench"
    if (out / "bench.json").exists() and not args.rebench:
        return json.loads((out / "bench.json").read_text())
    record, _ = run_bench([str(run / "files")], out, runtimes="onnxruntime,litert", threads="1",
                          warmup=args.warmup, min_time=args.min_time, data=args.data, progress=not args.quiet,
                          command=script_command(None))
    return record


def study_rows(run: Path, record: dict) -> list[dict]:
    from benchmarks.tables import flat_rows

    by_file = {}
    for r in flat_rows(record):
        by_file[Path(r["name"]).name] = r
    study = json.loads((run / "study.json").read_text())
    rows = []
    for variant, (what, _) in VARIANTS.items():
        for path in sorted((run / "files" / variant).glob("*")):
            r = by_file.get(path.name)
            if r is None or path.suffix == ".json":
                continue
            rows.append({**r, "study": study["label"], "variant": variant, "what": what, "file": path.name})
    for r in rows:  # the delta against the float file of the same format
        ref = next((x for x in rows if x["variant"] == "float" and x["format"] == r["format"]), None)
        known = ref and r.get("nme_mean") is not None and ref.get("nme_mean") is not None
        r["delta"] = r["nme_mean"] - ref["nme_mean"] if known else None
    return rows


def _f(v, spec):
    return "–" if v is None else format(v, spec)


def _goal_lines(rows: list[dict]) -> list[str]:
    lines = []
    for r in rows:
        budget = GOALS["int8"] if r["precision"] == "int8" and r["variant"] in ("ptq", "qat") else GOALS.get(r["variant"])
        if budget is None or r["delta"] is None:
            continue
        ok = r["delta"] <= budget
        lines.append(f"- {r['study']} {r['variant']} {r['format']}: {r['delta']:+.3f} NME points vs float "
                     f"(goal <= +{budget:.2f}): " + ("met" if ok else f"**missed by {r['delta'] - budget:.3f}**"))
    return lines


def markdown(studies: list[tuple[Path, dict, list[dict]]], notes: str, command: str) -> str:
    record = studies[0][1]
    out = ["# Compression: float vs PTQ int8 vs QAT int8 vs structured pruning, measured on the files", "",
           f"Command: `{command}` (stages: `python benchmarks/compression.py run ...`, in each study's `study.json`).", "",
           f"Machine: {machine_line(record['machine'])}. Versions: {versions_line(record['machine'])}.", "",
           f"Latency: each file in its own runtime (ONNX: onnxruntime, TFLite: LiteRT + XNNPACK), 1 thread, batch 1, "
           f"p50 of >= {record['settings']['min_time']} s after {record['settings']['warmup']} warm-up calls. "
           f"Accuracy: the file itself run on `{record['settings']['data']}` (NME %, 68 points, balanced over the "
           f"yaw bins). Params / MACs: of the PyTorch model the file was exported from (`torch.utils.flop_counter`).", ""]
    if notes:
        out += [notes.strip(), ""]
    for run, _, rows in studies:
        study = json.loads((run / "study.json").read_text())
        out += [f"## {study['label']} (source `{study['source']}`)", "",
                "| variant | file | params (M) | MACs (M) | size (MB) | p50 1t (ms) | " + " | ".join(BINS)
                + " | balanced | Δ vs float | pose MAE |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            runtime = "ORT" if r["format"] == "onnx" else "LiteRT"
            out.append(f"| {r['what']} | `{r['file']}` | {_f(r['params_m'], '.2f')} | {_f(r['macs_m'], '.1f')} | "
                       f"{_f(r['size_mb'], '.2f')} | {_f(r.get('p50_1t'), '.2f')} {runtime} | "
                       + " | ".join(_f(r.get(b), ".3f") for b in BINS)
                       + f" | **{_f(r.get('nme_mean'), '.3f')}** | {_f(r['delta'], '+.3f')} | {_f(r.get('pose_mae'), '.2f')} |")
        stages = study["stages"]
        out += ["", "Stage times: " + ", ".join(f"{k} {v['seconds'] / 60:.1f} min" for k, v in stages.items()
                                               if not k.startswith("export")), ""]
        out += ["Goals:", *_goal_lines(rows), ""]
    return "\n".join(out) + "\n"


def write_report(args) -> int:
    runs = [Path(r) for r in args.runs]
    for run in runs:
        if not (run / "study.json").exists():
            raise EdgefaError(f"{run}: no study.json (run `python benchmarks/compression.py run` first)")
    studies = []
    for run in runs:
        record = _bench(run, args)
        studies.append((run, record, study_rows(run, record)))
    notes = Path(args.notes).read_text() if args.notes else ""
    command = script_command(None)
    record = {"command": command, "machine": studies[0][1]["machine"],
              "studies": [{"run": str(r), "rows": rows} for r, _, rows in studies]}
    print(f"wrote {write_md_json(args.output, record, markdown(studies, notes, command))} and .json")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="QAT, pruning + fine-tune, pruned QAT; export every variant")
    r.add_argument("--source", required=True, help="trained float checkpoint")
    r.add_argument("-o", "--output", required=True, help="study folder")
    r.add_argument("--name", help="label of the files (default: the checkpoint's folder)")
    r.add_argument("--config", help="compression recipe for the stages' training keys (default: the source's own)")
    r.add_argument("--method", default="magnitude", help="pruning importance: magnitude | taylor")
    r.add_argument("--finetune-epochs", type=int, default=2)
    r.add_argument("--qat-epochs", type=int, default=2, help="BN and observers freeze for the last one")
    r.add_argument("--qat-data", help="training data of the QAT stages (default: the source's)")
    r.add_argument("--calib-data", default="aflw-train,split=val", help="PTQ calibration crops")
    r.add_argument("--calib-n", type=int, default=200)
    r.add_argument("--parity-data", default="aflw2000-3d,n=64")
    r.add_argument("--parity-n", type=int, default=64)
    r.add_argument("--workers", type=int, default=2)
    r.add_argument("--threads", type=int, default=0)
    r.add_argument("--quiet", action="store_true")
    p = sub.add_parser("report", help="bench the studies' files (1 thread) and write the report")
    p.add_argument("runs", nargs="+", help="study folders")
    p.add_argument("-o", "--output", default="reports/compression")
    p.add_argument("--data", default="aflw2000-3d")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--min-time", type=float, default=3.0)
    p.add_argument("--notes", help="Markdown file placed under the header")
    p.add_argument("--rebench", action="store_true", help="bench again even if a study has bench.json")
    p.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    try:
        return run_study(args) if args.cmd == "run" else write_report(args)
    except EdgefaError as exc:
        print(f"compression: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
