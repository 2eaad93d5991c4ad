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
``edgefa.benchmarks.bench``); this script runs the stages, ``compression_report.py`` lays out the table.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from edgefa.benchmarks.compression_report import VARIANTS, read_study, write_report
from edgefa.benchmarks.machine import machine_line, script_command
from edgefa.errors import EdgefaError, unknown_name_error
from edgefa.fileio import atomic_write_json

# stage -> the variants its output is exported as (float and ptq need only the source)
STAGES = {"float": ("float",), "ptq": ("ptq",), "qat": ("qat",), "p30": ("p30", "p30-ft"),
          "p50": ("p50", "p50-ft"), "p50-ft-qat": ("p50-ft-qat",), "p50-ft-ptq": ("p50-ft-ptq",)}


def _cfg(source: str, args, overrides: list[str]) -> dict:
    from edgefa.app.compress import source_state
    from edgefa.quantization.config import load_compression_config

    state = source_state(source)
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
            "overrides": list(args.overrides),
            **({"p50_finetuned": args.p50_finetuned} if args.p50_finetuned else {})}  # old folders still match


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


def _where() -> str:
    """The machine a stage ran on (stage times from a GPU and a 2-core CPU are not comparable)."""
    import torch

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
    from edgefa.app.compress import prune_checkpoint, qat_checkpoint, source_state
    from edgefa.models.pretrained import pretrained_name

    run, source = Path(args.output), args.source
    try:
        source_state(source, flag="--source")  # a missing file, not a checkpoint, an unknown shipped name
    except EdgefaError as exc:  # a shipped-name error names --source already; a file error names the path
        raise EdgefaError(str(exc) if pretrained_name(source) else f"--source {exc}") from None
    label = args.name or pretrained_name(source) or Path(source).parent.name
    settings = _settings(args)
    stages = _stages(args.stages)  # checked before anything is written
    from edgefa.converters.onnx_int8 import int8_settings

    int8_settings(args.onnx_quantizer)  # a typo fails before any training
    given = args.p50_finetuned
    if given:
        if "p50" not in stages:
            raise EdgefaError("--p50-finetuned stands in for the p50 stage's fine-tune; add p50 to --stages")
        try:
            source_state(given, flag="--p50-finetuned")
        except EdgefaError as exc:
            raise EdgefaError(f"--p50-finetuned {exc}") from None
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
        if ratio == 50 and given:  # fine-tuned elsewhere (e.g. an average of fine-tunes): export it as is
            ckpt["p50-ft"] = timed("p50", lambda: Path(given))
            log["stages"]["p50"]["given"] = True  # no stage time to report
            atomic_write_json(log_path, log)
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
    variants = [v for stage in stages for v in STAGES[stage] if v in ckpt]  # a given p50 fine-tune has no cut
    for variant in variants:  # a failed format is tried again
        timed(f"export {variant}", lambda v=variant: (run / "files" / v, _export(ckpt[v], v, label, run, args)))
    failed = [f"{k[len('export '):]} {f['format']} {f['precision']}: {f['reason']}"
              for k, v in log["stages"].items() for f in v.get("failed", [])]
    if failed:  # the report shows them as failed rows; the rest of the study is usable
        raise EdgefaError(f"{len(failed)} file(s) failed, kept out of {run / 'files'}: {'; '.join(failed)}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="QAT, pruning + fine-tune, pruned QAT; export every variant")
    r.add_argument("--source", required=True, help="trained float checkpoint, or NAME:pretrained")
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
    r.add_argument("--p50-finetuned", metavar="CKPT", help="a -50 %% model fine-tuned elsewhere (e.g. "
                   "benchmarks/average_weights.py's average of fine-tunes): exported as p50-ft, no pruning here")
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
