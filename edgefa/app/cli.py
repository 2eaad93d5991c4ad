"""``edgefa`` command line: thin wrappers over the library; user errors are one line, no traceback."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edgefa import __version__
from edgefa.errors import EdgefaError
from edgefa.paths import shell_command

TRAINING_MODULES = {"torch", "torchvision", "timm", "onnx", "onnxscript", "onnxslim", "litert_torch", "torchao",
                    "torch_pruning", "safetensors", "threadpoolctl"}  # what `edgefa[train]` adds to the runtime


def _cmd_eval(args) -> int:
    from edgefa.data.registry import create_dataset
    from edgefa.evaluate import evaluate, format_table
    from edgefa.fileio import atomic_write_json, check_writable
    from edgefa.predictor import load_predictor
    from edgefa.runtime.formats import format_of_path

    if args.json:
        check_writable(args.json, "--json")
    if format_of_path(args.model) is None and not args.model.startswith("mediapipe-face"):  # a PyTorch model
        import torch

        from edgefa.quantization import qat  # noqa: F401  (registers the rebuild of QAT checkpoints, so eval loads them)

        if args.threads:
            torch.set_num_threads(args.threads)
    predictor = load_predictor(args.model, threads=args.threads or None)
    dataset = create_dataset(args.data)
    result = {"model": args.model, "data": args.data, "edgefa": __version__}
    result.update(evaluate(predictor, dataset, batch=args.batch, workers=args.workers, progress=not args.quiet))
    print(format_table(result))
    if args.json:
        atomic_write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0


def _cmd_predict(args) -> int:
    from edgefa.app.predict import run_predict

    record, skipped = run_predict(args.model, args.source, save=args.save, json_path=args.json,
                                  detector=args.detector, passes=args.passes, threads=args.threads or None,
                                  smooth=args.smooth, redetect_every=args.redetect_every, progress=not args.quiet)
    entries = record["images"]
    if len(entries) == 1 and not args.quiet:  # one photo: say what was found
        for k, face in enumerate(entries[0]["faces"]):
            pose = face["pose"]
            print(f"face {k}: box {[round(v) for v in face['box']]} score {face['score']:.2f}  "
                  f"yaw {pose['yaw']:.1f} pitch {pose['pitch']:.1f} roll {pose['roll']:.1f}")
    faces = sum(len(e["faces"]) for e in entries)
    frames = sum(1 for e in entries if "frame" in e)
    what = ", ".join(part for part in (f"{len(entries) - frames} image(s)" if len(entries) > frames else "",
                                       f"{frames} video frame(s)" if frames else "") if part) or "0 images"
    print(f"{what}: {faces} face(s)" + (f"; skipped {len(skipped)} file(s)" if skipped else ""))
    if args.json:
        print(f"wrote {args.json}")
    if args.save:
        print(f"overlays in {args.save}")
    return 1 if skipped else 0


def _cmd_models(args) -> int:
    from edgefa.models.pretrained import list_pretrained
    from edgefa.models.registry import list_models, model_entry

    names = list_models(args.pattern)
    if args.pretrained:
        shipped = set(list_pretrained())
        names = [n for n in names if n in shipped]
        if not names:
            print("no pretrained weights match" if shipped else "no pretrained weights are shipped with this install")
            return 0
    entries = [model_entry(n) for n in names]
    wide = max((len(n) for n in names), default=0)
    fam = max((len(e.family) for e in entries), default=0)
    for name, entry in zip(names, entries):
        line = f"{name:<{wide}}  {entry.family:<{fam}}  input {entry.defaults.get('input_size', 120)}"
        if args.pretrained:  # what the shipped file scored, from its own header
            from edgefa.models.pretrained import pretrained_path, read_weights

            ev = read_weights(pretrained_path(name))[2].get("eval", {})
            if ev:
                line += f"  {ev['data']}: balanced NME {ev['nme']['balanced_nme']:.3f} %"
        print(line)
    return 0


def _cmd_train(args) -> int:
    from edgefa.training.trainer import train_from_cli

    return train_from_cli(args.config, args.overrides, resume=args.resume, quiet=args.quiet)


def _cmd_export(args) -> int:
    from edgefa.converters.export import format_rows, run_export

    rows, summary = run_export(args.model, args.formats, args.precision, args.output, calib_data=args.calib_data,
                      calib_n=args.calib_n, parity_data=args.parity_data, parity_n=args.parity_n,
                      postprocess=args.postprocess, input_color=args.input_color, int8_io=args.int8_io,
                      threads=args.threads, name=args.name, eval_data=args.eval_data,
                      onnx_quantizer=args.onnx_quantizer, int8_float=args.int8_float)
    print(format_rows(rows))
    print(f"summary: {summary}")
    return 0 if all(r.status != "failed" for r in rows) else 1


def _typed_command(name: str) -> str:
    """The command line as typed, for a record a reader re-runs ('' when called from Python)."""
    return shell_command(["edgefa", *sys.argv[1:]]) if sys.argv[1:2] == [name] else ""


def _cmd_bench(args) -> int:
    from edgefa.benchmarks.bench import run_bench

    record, code = run_bench(args.inputs, args.output, runtimes=args.runtimes, threads=args.threads,
                             warmup=args.warmup, runs=args.runs, min_time=args.min_time, batch=args.batch,
                             data=None if args.data in ("", "none") else args.data, peers=args.peers,
                             timeout=args.timeout, progress=not args.quiet,
                             command=_typed_command("bench"))
    print((Path(args.output) / "bench.md").read_text())
    print(f"wrote {Path(args.output) / 'bench.json'} and bench.md ({record['seconds']} s)")
    return code


def _cmd_report(args) -> int:
    from edgefa.benchmarks.report import write_report

    for path in write_report(args.runs, args.output, title=args.title, notes=args.notes, cards=args.cards,
                             command=_typed_command("report")):
        print(f"wrote {path}")
    return 0


def _cmd_pipeline(args) -> int:
    from edgefa.app.pipeline import run_pipeline

    return run_pipeline(args.config, args.overrides, progress=not args.quiet)


def _cmd_qat(args) -> int:
    from edgefa.app.compress import qat_from_cli

    return qat_from_cli(args.checkpoint, args.config, args.overrides, output=args.output, resume=args.resume,
                        quiet=args.quiet)


def _cmd_prune(args) -> int:
    from edgefa.app.compress import prune_from_cli

    return prune_from_cli(args.checkpoint, args.ratio, args.method, args.finetune_epochs, args.output,
                          config=args.config, overrides=args.overrides, quiet=args.quiet, round_to=args.round_to,
                          resume=args.resume)


def _at_least(low: float, cast=int):
    """argparse type: a number of ``cast`` >= ``low`` (argparse turns the ValueError into one usage line)."""
    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'a whole number' if cast is int else 'a number'}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {text}")
        return value
    parse.__name__ = cast.__name__
    return parse


def _fraction(text: str) -> float:
    """argparse type: a number in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgefa", description="3D face alignment: train, evaluate, export.")
    parser.add_argument("--version", action="version", version=f"edgefa {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", required=True)

    ev = sub.add_parser("eval", help="NME by yaw bin and pose MAE of a model on a dataset")
    ev.add_argument("--model", required=True,
                    help="3ddfa-v2-mb05:PATH[,bfm=DIR] | runs/x/best.pt | FILE.onnx/.tflite/.mlpackage "
                         "(run in its runtime) | MODEL_NAME:pretrained (shipped weights) | MODEL_NAME (untrained) | "
                         "mediapipe-face[:face_landmark.tflite] (MediaPipe Face Mesh, 468 -> 68 points)")
    ev.add_argument("--data", required=True,
                    help="aflw2000-3d[:PATH] | aflw2000-3d-original[:PATH][,box=roi|mat|landmarks|F.npy] | "
                         "aflw-train[:PATH] | 300w-lp:PATH | folder:PATH | synthetic:seed=0,n=500")
    ev.add_argument("--json", help="write the full results (per-bin NME, CED, pose MAE) here")
    ev.add_argument("--batch", type=_at_least(1), default=64)
    ev.add_argument("--workers", type=_at_least(0), default=0, help="data loader processes")
    ev.add_argument("--threads", type=_at_least(0), default=0, help="CPU threads of torch or of the file's runtime (0: its default)")
    ev.add_argument("--quiet", action="store_true", help="no progress bar")
    ev.set_defaults(func=_cmd_eval)

    pd = sub.add_parser("predict", help="faces in photos / folders / globs / videos: box, 68 landmarks, pose")
    pd.add_argument("--model", required=True,
                    help="FILE.onnx/.tflite | MODEL_NAME:pretrained | runs/x/best.pt | 3ddfa-v2-mb05:PATH")
    pd.add_argument("--source", required=True, help="an image, a video, a folder of them or a glob ('photos/*.jpg')")
    pd.add_argument("--save", metavar="DIR", help="write drawn overlays (landmarks, pose axes, box) here")
    pd.add_argument("--json", metavar="FILE", help="write every face (box, score, landmarks, pose, params) here")
    pd.add_argument("--detector", default="blazeface",
                    help="blazeface | blazeface:PATH[,min_score=0.5] | none (each image is already a face crop)")
    pd.add_argument("--passes", type=_at_least(1), default=2,
                    help="model runs per face: 1 = crop from the detector box only; 2 (default) re-crops from "
                         "the first run's landmarks")
    pd.add_argument("--smooth", type=_fraction, default=0.0, help="video: landmark smoothing in [0, 1) (0: none)")
    pd.add_argument("--redetect-every", type=_at_least(1), default=10,
                    help="video: run the detector every N frames (and when a face is lost)")
    pd.add_argument("--threads", type=_at_least(0), default=0, help="runtime threads (0: its default)")
    pd.add_argument("--quiet", action="store_true", help="no progress bar or per-face lines")
    pd.set_defaults(func=_cmd_predict)

    mo = sub.add_parser("models", help="list the registered model architectures")
    mo.add_argument("pattern", nargs="?", default="*")
    mo.add_argument("--pretrained", action="store_true",
                    help="only models with weights shipped in the package (load with --model NAME:pretrained)")
    mo.set_defaults(func=_cmd_models)

    tr = sub.add_parser("train", help="train a model from a YAML recipe")
    tr.add_argument("--config", required=True, help="YAML recipe, e.g. training/configs/synthetic-quick.yaml")
    tr.add_argument("overrides", nargs="*", help="key=value overrides, e.g. epochs=3 data.n=2000")
    tr.add_argument("--resume", help="continue from a last.pt checkpoint")
    tr.add_argument("--quiet", action="store_true", help="no progress bar")
    tr.set_defaults(func=_cmd_train)
    ex = sub.add_parser("export", help="ONNX / TFLite / CoreML files, each parity-checked against PyTorch")
    ex.add_argument("--model", required=True, help="runs/x/best.pt | 3ddfa-v2-mb05:PATH | MODEL_NAME:pretrained | MODEL_NAME (untrained)")
    ex.add_argument("--formats", default="onnx", help="comma list of: onnx, tflite, coreml")
    ex.add_argument("--precision", default="fp32", help="comma list of: fp32, fp16, int8 (coreml also palette6, palette4, sparse50)")
    ex.add_argument("--calib-data", help="dataset spec of int8 calibration crops (default: synthetic:seed=7)")
    ex.add_argument("--calib-n", type=_at_least(1), default=200, help="number of calibration crops")
    ex.add_argument("--parity-data", help="dataset spec of the parity crops (default: synthetic:seed=8)")
    ex.add_argument("--parity-n", type=_at_least(1), default=32, help="number of parity crops")
    ex.add_argument("--postprocess", action="store_true",
                    help="uint8 NHWC crop in; landmarks (68x3 px), pose (deg), params out: no BFM files needed in the app")
    ex.add_argument("--input-color", default="RGB", choices=["RGB", "BGR", "rgb", "bgr"],
                    help="channel order of the uint8 input with --postprocess")
    ex.add_argument("--int8-io", action="store_true", help="TFLite int8: int8 input/output tensors (default float)")
    ex.add_argument("--int8-float", metavar="PARTS", help="TFLite int8 of a float model: network parts kept float, "
                    "'stem' (the default: the stem's output is never quantized; more accurate and faster, "
                    "reports/tflite-int8.md) or 'none'")
    ex.add_argument("--onnx-quantizer", default="nncf", help="ONNX int8 of a float model: nncf (default; accurate on "
                    "hard-swish / SE networks) | onnxruntime (fuses every conv into QLinearConv: faster than fp32; "
                    "as accurate on ReLU networks such as mb05). reports/onnx-int8.md has both measured")
    ex.add_argument("--eval-data", help="score every file that passed parity on this dataset (e.g. aflw2000-3d), "
                    "in its own runtime, and write the scores into the file (edgefa.eval)")
    ex.add_argument("--threads", type=_at_least(1), help="runtime threads for the parity run")
    ex.add_argument("--name", help="file stem (default: the run folder or model name)")
    ex.add_argument("-o", "--output", required=True, help="output folder")
    ex.set_defaults(func=_cmd_export)

    be = sub.add_parser("bench", help="latency, size, compute, memory and accuracy of models in their runtimes")
    be.add_argument("inputs", nargs="+", metavar="ARTIFACT_OR_DIR",
                    help="exported files, folders of them, .pt checkpoints or model specs (3ddfa-v2-mb05:PATH)")
    be.add_argument("--runtimes", default="torch,onnxruntime,litert,coreml", help="comma list: which runtimes' rows run")
    be.add_argument("--threads", default="1", help="comma list of thread counts, e.g. 1,2,4")
    be.add_argument("--warmup", type=_at_least(0), default=10, help="untimed calls before timing")
    be.add_argument("--runs", type=_at_least(1), help="timed calls per row (default: as many as fit in --min-time)")
    be.add_argument("--min-time", type=_at_least(0.0, float), default=2.0, help="seconds of timed calls per row")
    be.add_argument("--batch", type=_at_least(1), default=1)
    be.add_argument("--data", default="synthetic:seed=2,n=200",
                    help="dataset spec for accuracy (e.g. aflw2000-3d), or 'none' for latency only")
    be.add_argument("--peers", action="store_true", help="add the 3DDFA-V2 mb05 and MediaPipe face_landmark peers")
    be.add_argument("--timeout", type=_at_least(1.0, float), default=1800, help="seconds per model before its row fails")
    be.add_argument("--quiet", action="store_true", help="no progress bar")
    be.add_argument("-o", "--output", required=True, help="run folder (bench.json, bench.md, overlays/)")
    be.set_defaults(func=_cmd_bench)

    re_ = sub.add_parser("report", help="Markdown/CSV/JSON/HTML report (tables, CED, Pareto, overlays) of bench runs")
    re_.add_argument("runs", nargs="+", metavar="RUN_DIR", help="edgefa bench output folders; the first is the baseline")
    re_.add_argument("-o", "--output", required=True, help="report path without suffix, e.g. reports/benchmark")
    re_.add_argument("--title", help="report title")
    re_.add_argument("--notes", help="a Markdown file whose text goes under the title (where the files came from...)")
    re_.add_argument("--cards", metavar="DIR", help="also write a model card per trained edgefa model to DIR/NAME.md")
    re_.set_defaults(func=_cmd_report)

    pi = sub.add_parser("pipeline", help="train -> (prune) -> (QAT) -> export -> bench -> report, resumable per stage")
    pi.add_argument("--config", required=True, help="pipeline YAML, e.g. training/configs/pipeline-quick.yaml")
    pi.add_argument("overrides", nargs="*", help="key=value overrides, e.g. bench.peers=true 'train.overrides=[epochs=1]'")
    pi.add_argument("--quiet", action="store_true", help="no progress bars")
    pi.set_defaults(func=_cmd_pipeline)
    qa = sub.add_parser("qat", help="quantization-aware training (torchao pt2e) of a trained checkpoint")
    qa.add_argument("--checkpoint", required=True, help="float checkpoint to start from (runs/x/best.pt, pruned ok, or MODEL_NAME:pretrained)")
    qa.add_argument("--config", required=True, help="recipe, e.g. training/configs/qat.yaml")
    qa.add_argument("overrides", nargs="*", help="key=value overrides, e.g. qat.epochs=1 data.workers=0")
    qa.add_argument("-o", "--output", help="run folder (default: runs/<recipe name>)")
    qa.add_argument("--resume", help="continue from the QAT run's last.pt")
    qa.add_argument("--quiet", action="store_true", help="no progress bar")
    qa.set_defaults(func=_cmd_qat)
    pr = sub.add_parser("prune", help="structured pruning (torch-pruning DepGraph) to a MACs ratio, then fine-tune")
    pr.add_argument("--checkpoint", required=True, help="float checkpoint to prune (runs/x/best.pt or MODEL_NAME:pretrained)")
    pr.add_argument("--ratio", required=True, type=float, help="fraction of MACs to remove, in (0, 1)")
    pr.add_argument("--method", default="magnitude", help="channel importance: magnitude | taylor")
    pr.add_argument("--round-to", type=_at_least(1), help="keep channel counts in multiples of N (default 16: CPU kernels "
                    "block channels by 8/16; 1 = exact counts)")
    pr.add_argument("--finetune-epochs", type=_at_least(0), default=0, help="fine-tune epochs, distilled from the unpruned model")
    pr.add_argument("--config", help="recipe for the fine-tune (default: the checkpoint's own training config)")
    pr.add_argument("overrides", nargs="*", help="key=value overrides, e.g. finetune.lr=5e-4 data.workers=0")
    pr.add_argument("-o", "--output", required=True, help="run folder: pruned.pt, finetune/best.pt")
    pr.add_argument("--resume", help="continue a killed fine-tune from OUTPUT/finetune/last.pt (same ratio and method)")
    pr.add_argument("--quiet", action="store_true", help="no progress bar")
    pr.set_defaults(func=_cmd_prune)
    return parser


def _one_line(exc: BaseException) -> str:
    msg = str(exc).strip()
    # errors raised in DataLoader workers arrive wrapped with the worker's traceback
    if "Original Traceback" in msg:
        msg = msg.splitlines()[-1].split(": ", 1)[-1]
    return msg.splitlines()[0] if msg else type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except EdgefaError as exc:
        if args.debug:
            raise
        print(f"edgefa {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:  # disk full, read-only folder, permissions: the path and the reason, one line
        if args.debug:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"edgefa {args.command}: error: {where}{exc.strerror or _one_line(exc)}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:  # the runtime install (no torch) asked to train / export
        if args.debug or (exc.name or "").split(".")[0] not in TRAINING_MODULES:
            raise
        print(f"edgefa {args.command}: error: needs {exc.name.split('.')[0]}, which the runtime install leaves out: "
              "pip install 'edgefa[train]'", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"edgefa {args.command}: interrupted", file=sys.stderr)
        return 130
