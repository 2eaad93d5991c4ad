"""The report half of the compression study (``python benchmarks/compression.py report``): bench
every file of the study folders in its own runtime, lay out one table per study with the deltas
against the float file and the issue's goals, carry an earlier report's studies whose folders are
gone. The run half (training, exports) is ``compression.py``; this module also holds what both
read: the variants and a study folder's ``study.json``.
"""
from __future__ import annotations

import json
from pathlib import Path

from edgefa.benchmarks.machine import machine_line, script_command, versions_line
from edgefa.errors import EdgefaError
from edgefa.fileio import write_md_json
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
GOALS = {"int8": 0.10, "p50-ft": 0.15}  # the issue's NME budgets over float, in NME points


def _read_json(path: Path, missing: str, broken: str):
    """``path`` parsed; ``missing`` / ``broken`` (plus the parser's reason) as one error line."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise EdgefaError(missing) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EdgefaError(f"{broken} ({exc})") from None


def read_study(path: Path) -> dict:
    """A study folder's ``study.json``; a missing or broken one is one line naming it."""
    log = _read_json(path, f"{path.parent}: no study.json (run `python benchmarks/compression.py run` first)",
                     f"{path}: not a study.json")
    if not isinstance(log, dict) or not isinstance(log.get("stages"), dict):
        raise EdgefaError(f"{path}: not a study.json (no 'stages' mapping)")
    return log


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
    record = _read_json(Path(path), f"--previous {path}: file not found",
                        f"--previous {path}: not a compression report JSON")
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
             for k, v in s["stages"].items() if not k.startswith("export") and not v.get("given")]
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


