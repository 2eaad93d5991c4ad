"""Training report: each run's best model evaluated on AFLW2000-3D beside the peer.

    python -m edgefa.training.report runs/NAME [runs/NAME2 ...] --peer 3ddfa-v2-mb05:PATH \\
        --data aflw2000-3d:PATH -o reports/training

Writes ``OUT.md`` and ``OUT.json``: params, MACs, NME per yaw bin, balanced and plain mean, pose
MAE, epochs, training wall time and the hardware/versions of this evaluation. ``--previous OUT.json``
keeps an earlier report's rows for runs not given (their checkpoints gone), marked with the command
and machine that measured them; a run given again is re-evaluated and replaces its old row.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch

from edgefa.data.registry import create_dataset
from edgefa.errors import EdgefaError
from edgefa.evaluate import evaluate
from edgefa.fileio import atomic_write_bytes, atomic_write_json, check_writable, with_ext
from edgefa.metrics import BIN_NAMES
from edgefa.paths import shell_command
from edgefa.predictor import load_predictor
from edgefa.profile import count_macs, count_params


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_facts() -> dict:
    import onnxruntime
    import timm

    return {"cpu": _cpu_model(), "cores": torch.get_num_threads(), "os": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__, "timm": timm.__version__,
            "onnxruntime": onnxruntime.__version__}


def row_for(spec: str, dataset, label: str, extra: dict) -> dict:
    predictor = load_predictor(spec)
    result = evaluate(predictor, dataset, progress=False)
    blk = result["nme"]
    return {"model": label, "spec": spec, "params": count_params(predictor.model),
            "macs": count_macs(predictor.model), "input_size": predictor.input_size,
            "nme_bins": blk["bins"], "nme_balanced": blk["balanced_mean"], "nme_plain": blk["plain_mean"],
            "nme_bin_std": blk["bin_std"], "pose_mae": result.get("pose_mae"), **extra}


def wall_seconds(history: list[dict]) -> float:
    """Training wall time of a run: its epoch clock restarts at every resume, so each segment's last
    reading counts (a resumed segment whose first epoch outlasts the previous segment's clock goes
    unseen: a lower bound then)."""
    total, last = 0.0, 0.0
    for record in history:
        if record["seconds"] < last:
            total += last
        last = record["seconds"]
    return total + last


def run_summary(run: Path) -> dict:
    """What a training run's last.pt records: model, recipe, epochs, wall time, data, command."""
    from edgefa.models.checkpoint import load_checkpoint

    if not (run / "best.pt").is_file() or not (run / "last.pt").is_file():
        raise EdgefaError(f"{run}: not a finished training run (needs best.pt and last.pt)")
    state = load_checkpoint(run / "last.pt")  # one-line error for a broken file; tensors only
    history = state["history"]
    cfg = state["config"]
    return {"model": cfg["model"]["name"], "epochs_done": state["epoch"], "epochs_planned": cfg["epochs"],
            "train_seconds": wall_seconds(history), "best_val": state["best"],
            "train_device": str(cfg["device"]), "recipe": cfg["name"], "git_commit": state.get("git_commit"),
            "train_command": state.get("command"), "train_data": cfg["data"]["train"]}


def run_row(run: Path, dataset) -> dict:
    extra = run_summary(run)
    return row_for(str(run / "best.pt"), dataset, extra.pop("model"), {k: v for k, v in extra.items() if k != "train_data"})


ROW_KEYS = ("model", "params", "macs", "nme_bins", "nme_balanced", "nme_plain", "pose_mae",
            "epochs_done", "epochs_planned")  # what a carried row needs to be shown again


def read_previous(previous: Path) -> dict:
    """An earlier report's JSON (``--previous``), read once for its rows and label-quality sections."""
    if not previous.is_file():
        raise EdgefaError(f"--previous {previous}: file not found")
    try:
        old = json.loads(previous.read_text())
    except (OSError, ValueError) as exc:
        raise EdgefaError(f"--previous {previous}: not a training report JSON ({exc})") from None
    if not isinstance(old, dict):
        raise EdgefaError(f"--previous {previous}: not a training report JSON (not an object)")
    return old


def load_previous(old: dict, previous: Path) -> list[dict]:
    """The trained-run rows of an earlier report, each marked with where it came from, to carry over
    the runs that are not here to re-evaluate (e.g. their checkpoints did not survive the machine)."""
    try:
        rows, command, machine = old["rows"], old["command"], old["machine"]
        carried = [{"evaluated_by": command, "evaluated_on": machine, **r, "carried_from": str(previous)}
                   for r in rows if "epochs_done" in r]  # the peer is always re-evaluated
    except (KeyError, TypeError) as exc:
        raise EdgefaError(f"--previous {previous}: not a training report JSON ({exc})") from None
    for i, row in enumerate(carried):
        missing = [k for k in ROW_KEYS if k not in row]
        if missing:
            raise EdgefaError(f"--previous {previous}: row {i} lacks {', '.join(missing)}")
    return carried


def merge_rows(carried: list[dict], fresh: list[dict]) -> list[dict]:
    """Carried rows first, as measured, except where a run of the same recipe was re-evaluated now."""
    key = lambda r: r.get("recipe", r["model"])  # noqa: E731
    fresh_keys = {key(r) for r in fresh}
    return [r for r in carried if key(r) not in fresh_keys] + fresh


def label_quality(path: Path) -> dict:
    """The check a labels file records: its procedure run on AFLW2000-3D's own 21 points."""
    from edgefa.data.labels import read_labels

    meta = read_labels(path, [])["meta"]
    if "check" not in meta:
        raise EdgefaError(f"--labels {path}: made without --check, so it records no label quality")
    return {"file": str(path), "chosen": meta["chosen"], "selection": meta["selection"], "check": meta["check"],
            "command": meta.get("command")}


def previous_label_quality(old: dict, previous: Path, fresh: list[dict]) -> list[dict]:
    """An earlier report's label-quality sections for labels files not given now (a labels file does
    not survive its machine either), each marked with where it came from."""
    given = {q["file"] for q in fresh}
    return [{**q, "carried_from": str(previous)} for q in old.get("label_quality", []) if q.get("file") not in given]


def label_quality_markdown(q: dict) -> str:
    rows = "\n".join(f"| {name} | " + " | ".join(f"{v:.3f}" for v in r["bins"].values())
                     + f" | **{r['balanced_mean']:.3f}** |" for name, r in q["check"]["nme"].items())
    sel = q["selection"]
    table = ", ".join(f"{r['correspondence']} λ={r['lambda']:g}: {r['loo_nme']:.3f}" for r in sel["table"])
    carried = (f" (carried unchanged from `{q['carried_from']}`: not re-checked by the command above)"
               if q.get("carried_from") else "")
    return (f"\n### Label quality: `{q['file']}`{carried}\n\nThe refined labels' procedure (`{q['command']}`; chosen: "
            f"{q['chosen']['correspondence']} correspondence, λ = {q['chosen']['lambda']:g}) run on AFLW2000-3D's "
            f"own 21 points and scored against its 68-point labels. A check only: the settings were chosen "
            f"by {sel['method']} ({sel['faces']} faces; hidden-point error in % of face size: {table}).\n\n"
            f"| labels | " + " | ".join(BIN_NAMES) + " | balanced |\n|---|---|---|---|---|\n" + rows + "\n")


def to_markdown(rows: list[dict], facts: dict, command: str, data: str) -> str:
    head = ("| model | recipe | params (M) | MACs (M) | " + " | ".join(BIN_NAMES) +
            " | balanced | plain | yaw | pitch | roll | pose mean | epochs | train time |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        p = r["pose_mae"] or {}
        epochs = f"{r['epochs_done']}/{r['epochs_planned']}" if "epochs_done" in r else "peer"
        t = f"{r['train_seconds'] / 60:.0f} min" if "train_seconds" in r else ""
        mark = " †" if r.get("carried_from") else ""
        lines.append(f"| {r['model']}{mark} | {r.get('recipe', '')} | {r['params'] / 1e6:.2f} | {r['macs'] / 1e6:.1f} | "
                     + " | ".join(f"{r['nme_bins'][b]:.3f}" for b in BIN_NAMES)
                     + f" | **{r['nme_balanced']:.3f}** | {r['nme_plain']:.3f} | {p.get('yaw', float('nan')):.2f}"
                       f" | {p.get('pitch', float('nan')):.2f} | {p.get('roll', float('nan')):.2f} | "
                       f"{p.get('mean', float('nan')):.2f} | {epochs} | {t} |")
    facts_md = ", ".join(f"{k} {v}" for k, v in facts.items())
    trained = [f"- {r['model']}: `{r['train_command']}`" for r in rows if r.get("train_command")]
    carried = {r["evaluated_by"]: r["evaluated_on"] for r in rows if r.get("carried_from")}
    carried_md = "".join(
        f"\n† carried unchanged from an earlier evaluation (not re-run by the command above): "
        f"`{cmd}` on {', '.join(f'{k} {v}' for k, v in on.items())}.\n" for cmd, on in carried.items())
    return (f"Evaluated on `{data}` with edgefa's AFLW2000-3D evaluator (NME %, 68 points, 2D, "
            f"sqrt(w*h) of the ground-truth box; pose MAE in degrees over faces with |yaw| <= 99).\n\n"
            f"Command: `{command}`\n\nEvaluation machine: {facts_md}.\n\n" + "\n".join(lines) + "\n" + carried_md
            + ("\nTrained with:\n" + "\n".join(trained) + "\n" if trained else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Evaluate training runs on AFLW2000-3D beside the peer.")
    parser.add_argument("runs", nargs="*", type=Path)
    parser.add_argument("--data", required=True)
    parser.add_argument("--peer", help="a peer model spec evaluated the same way, e.g. 3ddfa-v2-mb05:PATH")
    parser.add_argument("-o", "--out", required=True, help="output path without suffix")
    parser.add_argument("--notes", type=Path, help="Markdown put above the table (status, how the runs were made)")
    parser.add_argument("--labels", type=Path, nargs="+", default=[],
                        help="refined-labels files made with --check: their label-quality rows")
    parser.add_argument("--previous", type=Path,
                        help="an earlier report's JSON: its rows for runs not given here are carried over, marked")
    args = parser.parse_args(argv)
    if not args.runs and not args.previous and not args.peer:
        parser.error("give training run directories, --previous REPORT.json or --peer")
    if args.notes and not args.notes.is_file():
        parser.error(f"--notes {args.notes}: file not found")
    try:
        return _write(args, argv)
    except EdgefaError as exc:
        print(f"edgefa.training.report: error: {exc}", file=sys.stderr)
        return 2


def _write(args, argv) -> int:
    out = Path(args.out)
    check_writable(with_ext(out, ".md"), "report")
    old = read_previous(args.previous) if args.previous else None
    carried = load_previous(old, args.previous) if old is not None else []
    dataset = create_dataset(args.data)
    rows = [row_for(args.peer, dataset, "3DDFA-V2 mb05 (peer)", {})] if args.peer else []
    fresh = [run_row(run, dataset) for run in args.runs]
    rows += merge_rows(carried, fresh)
    facts = machine_facts()
    command = shell_command(["python", "-m", "edgefa.training.report", *(sys.argv[1:] if argv is None else argv)])
    notes = args.notes.read_text().strip() + "\n\n" if args.notes else ""
    quality = [label_quality(path) for path in args.labels]
    quality += previous_label_quality(old, args.previous, quality) if old is not None else []
    markdown = notes + to_markdown(rows, facts, command, args.data)  # before writing: no half report
    markdown += "".join(label_quality_markdown(q) for q in quality)
    atomic_write_json(with_ext(out, ".json"), {"command": command, "machine": facts, "data": args.data,
                                                 "rows": rows, **({"label_quality": quality} if quality else {})})
    atomic_write_bytes(with_ext(out, ".md"), markdown.encode())
    print(json.dumps([{k: r[k] for k in ("model", "nme_balanced")} for r in rows]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
