"""The compression study behind ``reports/compression.md``: one trained checkpoint -> float, PTQ int8,
QAT int8, pruned 30 % / 50 % MACs (before and after fine-tuning) and pruned 50 % + QAT, each exported
as ONNX and TFLite files, then every file benched in its own runtime (1 thread) and evaluated by
running it on the dataset (AFLW2000-3D), never the PyTorch model.

    # heavy part (training); resumable: a stage whose output exists is not redone
    python benchmarks/compression.py run --source runs/mobilenetv3-large-cpu/best.pt -o runs/compression/mobilenetv3-large
    # bench every file of the studies on a quiet machine, then write the report
    python benchmarks/compression.py report runs/compression/mobilenetv3-large runs/compression/mobilenetv2 -o reports/compression
    # a variant of one stage (e.g. another pruning method) beside an earlier study of the same source,
    # whose float it is compared with; an earlier report's studies whose folders are gone are carried
    python benchmarks/compression.py run --source S --stages p50 --method taylor -o runs/compression/NAME-taylor
    python benchmarks/compression.py report runs/compression/NAME runs/compression/NAME-taylor --previous reports/compression.json

Everything it does goes through the library (``edgefa.app.compress``, ``edgefa.converters.export``,
``edgefa.benchmarks.bench``); this script only fixes the study's variants and lays out the table.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from edgefa.benchmarks.machine import machine_line, script_command, versions_line
from edgefa.errors import EdgefaError, unknown_name_error
from edgefa.fileio import atomic_write_json, write_md_json
from edgefa.metrics import BIN_NAMES

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
    "p50-ft-ptq": ("pruned -50 % + fine-tune, post-training int8", "int8"),
}
# stage -> the variants its output is exported as (float and ptq need only the source)
STAGES = {"float": ("float",), "ptq": ("ptq",), "qat": ("qat",), "p30": ("p30", "p30-ft"),
          "p50": ("p50", "p50-ft"), "p50-ft-qat": ("p50-ft-qat",), "p50-ft-ptq": ("p50-ft-ptq",)}
GOALS = {"int8": 0.10, "p50-ft": 0.15}  # the issue's NME budgets over float, in NME points


def _cfg(source: str, args, overrides: list[str]) -> dict:
    from edgefa.models.checkpoint import load_checkpoint
    from edgefa.quantization.config import load_compression_config

    state = load_checkpoint(source)
    return load_compression_config(args.config, overrides, source=source, source_config=state.get("config"))


def _stage_overrides(args) -> list[str]:
    freeze = args.qat_epochs - 1 if args.qat_epochs > 1 else "null"  # the last epoch runs frozen
    out = [f"finetune.epochs={args.finetune_epochs}", f"qat.epochs={args.qat_epochs}",
           f"qat.freeze_bn_after={freeze}", f"qat.freeze_observers_after={freeze}",
           f"data.workers={args.workers}", f"threads={args.threads}"]
    return [*out, *args.overrides]


def _stages(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    for n in names:
        if n not in STAGES:
            raise unknown_name_error("--stages stage", n, STAGES)
    for name in ("p50-ft-qat", "p50-ft-ptq"):
        if name in names and "p50" not in names:
            raise EdgefaError(f"--stages: {name} starts from the p50 stage's fine-tuned model; add p50")
    return names or list(STAGES)


def _settings(args) -> dict:
    """What makes two runs of the study the same study (a resumed folder must not mix them). The
    stage list is not in it: each stage is recorded by name, so a later run may add stages (or
    export what a ``--train-only`` run on a GPU machine trained)."""
    return {"method": args.method, "finetune_epochs": args.finetune_epochs, "qat_epochs": args.qat_epochs,
            "qat_data": args.qat_data, "formats": args.formats, "onnx_quantizer": args.onnx_quantizer,
            "overrides": list(args.overrides)}


def _qat_overrides(args) -> list[str]:
    return [*_stage_overrides(args), *([f"data.train={args.qat_data}"] if args.qat_data else [])]


def _export(checkpoint: Path, variant: str, label: str, run: Path, args) -> list[dict]:
    """Export one variant; the formats that failed (parity gate, converter) as ``{format, precision,
    reason}``: the others are kept, and a re-run tries the failed ones again."""
    from edgefa.converters.export import run_export

    out = run / "files" / variant
    precision = VARIANTS[variant][1]
    rows, _ = run_export(str(checkpoint), args.formats, precision, out, calib_data=args.calib_data,
                         calib_n=args.calib_n, parity_data=args.parity_data, parity_n=args.parity_n,
                         postprocess=True, name=f"{label}-{variant}", onnx_quantizer=args.onnx_quantizer)
    return [{"format": r.format, "precision": r.precision, "reason": r.reason} for r in rows if r.status != "ok"]


def read_study(path: Path) -> dict:
    """A study folder's ``study.json``; a missing or broken one is one line naming it."""
    try:
        log = json.loads(path.read_text())
    except FileNotFoundError:
        raise EdgefaError(f"{path.parent}: no study.json (run `python benchmarks/compression.py run` first)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EdgefaError(f"{path}: not a study.json ({exc})") from None
    if not isinstance(log, dict) or not isinstance(log.get("stages"), dict):
        raise EdgefaError(f"{path}: not a study.json (no 'stages' mapping)")
    return log


def _where() -> str:
    """The machine a stage ran on (stage times from a GPU and a 2-core CPU are not comparable)."""
    import torch

    from edgefa.benchmarks.machine import machine_line

    gpu = f"{torch.cuda.get_device_name(0)} + " if torch.cuda.is_available() else ""
    return gpu + machine_line()


def _record_finetune_time(stage: dict, last: Path, log_path: Path, log: dict) -> None:
    """A resumed stage's own clock covers its last segment only: the fine-tune's epochs record all."""
    from edgefa.models.checkpoint import load_checkpoint
    from edgefa.training.report import wall_seconds

    if last.is_file() and "finetune_seconds" not in stage:
        stage["finetune_seconds"] = round(wall_seconds(load_checkpoint(last).get("history", [])), 1)
        atomic_write_json(log_path, log)


def run_study(args) -> int:
    from edgefa.app.compress import prune_checkpoint, qat_checkpoint

    run, source = Path(args.output), Path(args.source)
    if not source.is_file():
        raise EdgefaError(f"--source {source}: file not found")
    label = args.name or source.parent.name
    settings = _settings(args)
    stages = _stages(args.stages)  # checked before anything is written
    from edgefa.converters.to_onnx import int8_settings

    int8_settings(args.onnx_quantizer)  # a typo fails before any training
    where = _where()
    log = {"source": str(source), "label": label, "commands": [f"{script_command(args.argv)}  # on {where}"],
           "settings": settings, "stages": {}}
    log_path = run / "study.json"
    if log_path.exists():
        before = read_study(log_path)
        if before.get("settings", settings) != settings or before.get("source") != str(source):
            raise EdgefaError(f"-o {run}: holds a study with other settings or source ({log_path}); use a new folder")
        log["stages"] = before.get("stages", {})
        log["commands"] = [*before.get("commands", [before["command"]] if "command" in before else []),
                           *log["commands"]]
    run.mkdir(parents=True, exist_ok=True)

    def timed(name, fn):
        """Run a stage once: a recorded one is skipped unless some of its files failed. ``fn`` returns
        the stage's output, or (output, failed files) for an export."""
        done = log["stages"].get(name)
        if done and not done.get("failed"):
            return Path(done["output"])
        t0 = time.perf_counter()
        result = fn()
        output, failed = result if isinstance(result, tuple) else (result, [])
        log["stages"][name] = {"output": str(output), "seconds": round(time.perf_counter() - t0, 1), "on": where,
                               **({"failed": failed} if failed else {})}
        atomic_write_json(log_path, log)
        return output

    over = _stage_overrides(args)
    ckpt = {"float": source, "ptq": source}
    if "qat" in stages:
        ckpt["qat"] = timed("qat", lambda: qat_checkpoint(source, _cfg(str(source), args, _qat_overrides(args)),
                                                            run / "qat", progress=not args.quiet))
    for ratio in (30, 50):
        if f"p{ratio}" not in stages:
            continue

        def prune(r=ratio):
            cfg = _cfg(str(source), args, [*over, f"prune.ratio={r / 100}", f"prune.method={args.method}"])
            last = run / f"p{r}" / "finetune" / "last.pt"  # a killed fine-tune continues
            return prune_checkpoint(source, cfg, run / f"p{r}", progress=not args.quiet,
                                    resume=str(last) if last.is_file() else None)
        ckpt[f"p{ratio}-ft"] = timed(f"p{ratio}", prune)
        ckpt[f"p{ratio}"] = run / f"p{ratio}" / "pruned.pt"
        _record_finetune_time(log["stages"][f"p{ratio}"], run / f"p{ratio}" / "finetune" / "last.pt", log_path, log)
    if "p50-ft-ptq" in stages:
        ckpt["p50-ft-ptq"] = ckpt["p50-ft"]
    if "p50-ft-qat" in stages:
        p50 = ckpt["p50-ft"]
        ckpt["p50-ft-qat"] = timed("p50-ft-qat", lambda: qat_checkpoint(p50, _cfg(str(p50), args, _qat_overrides(args)),
                                                                        run / "p50-qat", progress=not args.quiet))
    if args.train_only:
        print(f"trained stages of {run}: {', '.join(k for k in log['stages'] if not k.startswith('export'))}; "
              "export them with the same command without --train-only")
        return 0
    for variant in (v for stage in stages for v in STAGES[stage]):  # a failed format is tried again
        timed(f"export {variant}", lambda v=variant: (run / "files" / v, _export(ckpt[v], v, label, run, args)))
    failed = [f"{k[len('export '):]} {f['format']} {f['precision']}: {f['reason']}"
              for k, v in log["stages"].items() for f in v.get("failed", [])]
    if failed:  # the report shows them as failed rows; the rest of the study is usable
        raise EdgefaError(f"{len(failed)} file(s) failed, kept out of {run / 'files'}: {'; '.join(failed)}")
    return 0


# ---------------------------------------------------------------- report

def _bench(run: Path, args) -> dict:
    from edgefa.benchmarks.bench import run_bench

    out = run / "bench"
    if (out / "bench.json").exists() and not args.rebench:
        return json.loads((out / "bench.json").read_text())
    record, _ = run_bench([str(run / "files")], out, runtimes="onnxruntime,litert", threads="1",
                          warmup=args.warmup, min_time=args.min_time, data=args.data, progress=not args.quiet,
                          command=script_command(args.argv))
    return record


def study_rows(run: Path, record: dict) -> list[dict]:
    from edgefa.benchmarks.tables import flat_rows

    by_file = {}
    for r in flat_rows(record):
        by_file[Path(r["name"]).name] = r
    study = read_study(run / "study.json")
    rows = []
    for variant, (what, _) in VARIANTS.items():
        for path in sorted((run / "files" / variant).glob("*")):
            r = by_file.get(path.name)
            if r is None or path.suffix == ".json":
                continue
            rows.append({**r, "study": study["label"], "variant": variant, "what": what, "file": path.name})
        for f in study["stages"].get(f"export {variant}", {}).get("failed", []):  # kept out by the gate
            rows.append({"study": study["label"], "variant": variant, "what": what, "file": None,
                         "format": f["format"], "precision": f["precision"], "failed": f["reason"],
                         **{k: None for k in ("params_m", "macs_m", "size_mb", "nme_mean")}})
    return rows


def add_deltas(studies: list[dict]) -> None:
    """Each row's NME minus the float file's of the same format: its own study's float, else the
    float of another study (measured now, not carried) of the same source checkpoint."""
    for s in studies:
        if s.get("carried"):
            continue
        peers = [s, *(o for o in studies if o is not s and not o.get("carried") and o["source"] == s["source"])]
        for r in s["rows"]:
            ref, of = next(((x, o["label"]) for o in peers for x in o["rows"]
                            if x["variant"] == "float" and x["format"] == r["format"]), (None, None))
            known = ref is not None and r.get("nme_mean") is not None and ref.get("nme_mean") is not None
            r["delta"] = r["nme_mean"] - ref["nme_mean"] if known else None
            r["delta_vs"] = of if known else None


ROW_KEYS = ("variant", "what", "file", "format", "precision", "params_m", "macs_m", "size_mb", "nme_mean", "delta")


def carried_studies(path: str) -> list[dict]:
    """The studies of an earlier report JSON as measured then (their folders may be gone): rows, and
    the command and machine that measured them."""
    try:
        record = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise EdgefaError(f"--previous {path}: file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EdgefaError(f"--previous {path}: not a compression report JSON ({exc})") from None
    if not isinstance(record, dict) or not isinstance(record.get("studies"), list):
        raise EdgefaError(f"--previous {path}: not a compression report JSON (no 'studies' list)")
    out = []
    for i, s in enumerate(record["studies"]):
        rows = s.get("rows") if isinstance(s, dict) else None
        bad = next((k for r in rows or [{}] for k in ROW_KEYS if not isinstance(r, dict) or k not in r), None)
        if not rows or bad:
            raise EdgefaError(f"--previous {path}: study {i} lacks rows with '{bad or 'rows'}'")
        label = s.get("label", rows[0].get("study", f"study {i}"))
        out.append({"label": label, "source": s.get("source", "?"), "stages": s.get("stages", {}),
                    "command": s.get("command") or record.get("command", "?"),
                    "machine": s.get("machine") or record.get("machine"), "rows": rows, "carried": str(path)})
    return out


def _short(where: str) -> str:
    return where.split(" + ")[0] if " + " in where else f"CPU, {where.split(', ')[1]}" if ", " in where else where


def _f(v, spec):
    return "–" if v is None else format(v, spec)


def _goal_lines(rows: list[dict]) -> list[str]:
    lines = []
    for r in rows:
        budget = GOALS["int8"] if r["precision"] == "int8" and r["variant"] in ("ptq", "qat") else GOALS.get(r["variant"])
        if budget is not None and r.get("failed"):
            lines.append(f"- {r['study']} {r['variant']} {r['format']}: **no file** (it failed: {r['failed']})")
        if budget is None or r.get("delta") is None:
            continue
        ok = r["delta"] <= budget
        lines.append(f"- {r['study']} {r['variant']} {r['format']}: {r['delta']:+.3f} NME points vs float "
                     f"(goal <= +{budget:.2f}): " + ("met" if ok else f"**missed by {r['delta'] - budget:.3f}**"))
    return lines


def _section(s: dict) -> list[str]:
    mark = " †" if s.get("carried") else ""
    out = [f"## {s['label']}{mark} (source `{s['source']}`)", ""]
    if s.get("carried"):
        out += [f"† Carried from `{s['carried']}`: its study folder is gone. Measured by `{s['command']}` on "
                f"{machine_line(s['machine']) if s.get('machine') else 'an unrecorded machine'}.", ""]
    else:
        out += ["Stages:", *(f"- `{c}`" for c in s["run_commands"]), ""]
    others = sorted({r["delta_vs"] for r in s["rows"] if r.get("delta_vs") not in (None, s["label"])})
    if others:
        out += [f"Δ vs float: the float files of `{'`, `'.join(others)}` (same source checkpoint).", ""]
    out += ["| variant | file | params (M) | MACs (M) | size (MB) | p50 1t (ms) | " + " | ".join(BIN_NAMES)
            + " | balanced | Δ vs float | pose MAE |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in s["rows"]:
        runtime = "ORT" if r["format"] == "onnx" else "LiteRT"
        file = f"✗ not written: {r['failed']}" if r.get("failed") else f"`{r['file']}`"
        out.append(f"| {r['what']} | {file} | {_f(r['params_m'], '.2f')} | {_f(r['macs_m'], '.1f')} | "
                   f"{_f(r['size_mb'], '.2f')} | {_f(r.get('p50_1t'), '.2f')} {runtime} | "
                   + " | ".join(_f(r.get(b), ".3f") for b in BIN_NAMES)
                   + f" | **{_f(r.get('nme_mean'), '.3f')}** | {_f(r['delta'], '+.3f')} | {_f(r.get('pose_mae'), '.2f')} |")
    times = [f"{k} {v['seconds'] / 60:.1f} min" + (f" ({_short(v['on'])})" if v.get("on") else "")
             + (f", fine-tune epochs {v['finetune_seconds'] / 60:.1f} min over all its segments"
                if "finetune_seconds" in v else "")
             for k, v in s["stages"].items() if not k.startswith("export")]
    out += [""] + (["Stage times: " + ", ".join(times), ""] if times else [])
    goals = _goal_lines(s["rows"])
    return out + (["Goals:", *goals, ""] if goals else [])


def markdown(studies: list[dict], notes: str, command: str, record: dict) -> str:
    out = ["# Compression: float vs PTQ int8 vs QAT int8 vs structured pruning, measured on the files", "",
           f"Command: `{command}` (stages: `python benchmarks/compression.py run ...`, in each study's `study.json`).", "",
           f"Machine: {machine_line(record['machine'])}. Versions: {versions_line(record['machine'])}.", "",
           f"Latency: each file in its own runtime (ONNX: onnxruntime, TFLite: LiteRT + XNNPACK), 1 thread, batch 1, "
           f"p50 of >= {record['settings']['min_time']} s after {record['settings']['warmup']} warm-up calls. "
           f"Accuracy: the file itself run on `{record['settings']['data']}` (NME %, 68 points, balanced over the "
           f"yaw bins). Params / MACs: of the PyTorch model the file was exported from (`torch.utils.flop_counter`).", ""]
    if notes:
        out += [notes.strip(), ""]
    for s in studies:
        out += _section(s)
    return "\n".join(out) + "\n"


def write_report(args) -> int:
    runs = [Path(r) for r in args.runs]
    logs = [read_study(run / "study.json") for run in runs]  # all checked before any bench
    try:
        notes = Path(args.notes).read_text() if args.notes else ""
    except (OSError, UnicodeDecodeError) as exc:
        raise EdgefaError(f"--notes {args.notes}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None
    carried = carried_studies(args.previous) if args.previous else []
    fresh, record = [], None
    for run, log in zip(runs, logs):
        record = _bench(run, args)
        fresh.append({"run": str(run), "label": log["label"], "source": log["source"], "stages": log["stages"],
                      "settings": log.get("settings"), "run_commands": log.get("commands", [log.get("command", "?")]),
                      "command": script_command(args.argv), "machine": record["machine"], "rows": study_rows(run, record)})
    add_deltas(fresh)
    by_label = {s["label"]: s for s in fresh}  # a fresh study takes its carried namesake's place
    studies = [by_label.pop(c["label"], c) for c in carried] + list(by_label.values())
    command = script_command(args.argv)
    text = markdown(studies, notes, command, record)  # rendered before anything is written
    out = {"command": command, "machine": record["machine"], "studies": studies}
    print(f"wrote {write_md_json(args.output, out, text)} and .json")
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
    r.add_argument("--stages", default=",".join(STAGES), help=f"comma list of {', '.join(STAGES)} (default: all)")
    r.add_argument("--formats", default="onnx,tflite", help="formats every variant is exported as")
    r.add_argument("--onnx-quantizer", default="nncf", help="ONNX int8 of the float variants: nncf | onnxruntime "
                   "(as edgefa export)")
    r.add_argument("--train-only", action="store_true", help="run the training stages, export nothing (e.g. on a "
                   "GPU machine without the converters); the same command without it exports them")
    r.add_argument("--calib-data", default="aflw-train,split=val", help="PTQ calibration crops")
    r.add_argument("--calib-n", type=int, default=200)
    r.add_argument("--parity-data", default="aflw2000-3d,n=64")
    r.add_argument("--parity-n", type=int, default=64)
    r.add_argument("--workers", type=int, default=2)
    r.add_argument("--threads", type=int, default=0)
    r.add_argument("--quiet", action="store_true")
    r.add_argument("overrides", nargs="*", metavar="key=value", help="recipe overrides for every training stage")
    p = sub.add_parser("report", help="bench the studies' files (1 thread) and write the report")
    p.add_argument("runs", nargs="+", help="study folders")
    p.add_argument("-o", "--output", default="reports/compression")
    p.add_argument("--data", default="aflw2000-3d")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--min-time", type=float, default=3.0)
    p.add_argument("--notes", help="Markdown file placed under the header")
    p.add_argument("--previous", metavar="OUT.json", help="an earlier report: its studies not given here are "
                   "carried as measured then, marked with the command and machine that measured them")
    p.add_argument("--rebench", action="store_true", help="bench again even if a study has bench.json")
    p.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]  # recorded as run, also when called as a function
    try:
        return run_study(args) if args.cmd == "run" else write_report(args)
    except EdgefaError as exc:
        print(f"compression: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
