"""Export every backbone and the 3DDFA-V2 peer to every format x precision; write the matrix report.

    python benchmarks/export_matrix.py -o reports/export-matrix [--postprocess] [--models a,b]
        [--checkpoint NAME=runs/x/best.pt ...] [--formats onnx,tflite,coreml] [--precision fp32,fp16,int8]

Real crops when ../shared is there (calibration: aflw-train val split; parity: AFLW2000-3D), else
synthetic ones. Backbones without a trained checkpoint are exported with random weights and the
row says so (their int8 parity then says little: a random network's outputs barely vary).
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edgefa.benchmarks.machine import machine_line, script_command, versions  # noqa: E402
from edgefa.converters.export import run_export  # noqa: E402
from edgefa.fileio import write_md_json  # noqa: E402
from edgefa.paths import shared_root  # noqa: E402

MODELS = ["mobilenetv2_100", "mobilenetv3_small_100", "mobilenetv3_large_100", "mobilevit_xs", "mobilevitv2_100"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", required=True, help="report path without suffix (writes .md and .json)")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--checkpoint", action="append", default=[], help="NAME=PATH: trained weights for a model")
    ap.add_argument("--formats", default="onnx,tflite,coreml")
    ap.add_argument("--precision", default="fp32,fp16,int8")
    ap.add_argument("--postprocess", action="store_true")
    ap.add_argument("--calib-n", type=int, default=100)
    ap.add_argument("--files", default="/tmp/edgefa-export-matrix", help="where the exported files go")
    args = ap.parse_args(argv)

    shared = shared_root()
    real = (shared / "data" / "aflw2000-3d").is_dir()
    calib = f"aflw-train:{shared / 'data' / 'aflw-train'},split=val" if real else None
    parity = f"aflw2000-3d:{shared / 'data' / 'aflw2000-3d'}" if real else None
    trained = dict(item.split("=", 1) for item in args.checkpoint)
    specs = [(name, trained.get(name, name), name in trained) for name in args.models.split(",")]
    peer = shared / "peers" / "3ddfa_v2_mb05" / "mb05_120x120.pth"
    if peer.is_file():
        specs.append(("3ddfa-v2-mb05 (peer)", f"3ddfa-v2-mb05:{peer}", True))

    results, start = [], time.perf_counter()
    for label, spec, is_trained in specs:
        print(f"== {label}", flush=True)
        rows, _ = run_export(spec, args.formats, args.precision, Path(args.files) / label.split()[0],
                             calib_data=calib, parity_data=parity, parity_n=64, calib_n=args.calib_n,
                             postprocess=args.postprocess, name=label.split()[0])
        results.append({"model": label, "spec": spec, "trained": is_trained, "rows": [asdict(r) for r in rows]})
    report = {"command": script_command(argv),
              "machine": machine_line(), "versions": versions(), "postprocess": args.postprocess, "calib_n": args.calib_n,
              "calib_data": calib or "synthetic:seed=7", "parity_data": parity or "synthetic:seed=8",
              "minutes": round((time.perf_counter() - start) / 60, 1), "models": results}
    print(f"wrote {write_md_json(args.output, report, to_markdown(report))} and .json")
    return 0


def to_markdown(report: dict) -> str:
    lines = ["# Export matrix", "",
             f"Command: `{report['command']}`  ", f"Machine: {report['machine']}  ",
             "Versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()) + "  ",
             f"Calibration crops: `{report['calib_data']}` ({report['calib_n']}); parity crops: `{report['parity_data']}` (64); "
             f"post-processing in the graph: {report['postprocess']}; took {report['minutes']} min.", "",
             "Parity columns compare the file, run in its own runtime, with PyTorch on the same crops: "
             "whitened-parameter max-abs-diff, landmark shift (max, pixels of the 120 px crop) and mean "
             "shift in NME points. Gates (converters/parity.py): fp32 1e-3 NME points and 0.01 px max, "
             "fp16 0.05, int8 2.0. unverified = converted and spec-validated, execution needs macOS (CoreML on Linux).",
             "", "| model | weights | format | precision | size MB | params Δmax | lm px Δmax | NME pts Δ | status |",
             "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | --- |"]
    for entry in report["models"]:
        for r in entry["rows"]:
            p = r["parity"] if "landmark_px_max" in r["parity"] else {}
            cell = (lambda k, f, p=p: format(p[k], f) if k in p else "–")
            reason = r["reason"].replace("|", "/")
            lines.append(f"| {entry['model']} | {'trained' if entry['trained'] else 'untrained'} | {r['format']} | "
                         f"{r['precision']} | {r['size_mb']:.2f} | {cell('params_max_abs', '.1e')} | "
                         f"{cell('landmark_px_max', '.4f')} | {cell('nme_points_mean', '.4f')} | "
                         f"{r['status']}{': ' + reason if reason else ''} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
