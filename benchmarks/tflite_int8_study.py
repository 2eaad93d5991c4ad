"""TFLite int8 study (issue #22): where litert-torch's int8 scheme loses accuracy, and which network
parts the exporter keeps float (``--int8-float``). Per model:

1. **Simulated** (the exporter's own calibrated pt2e network, fake-quant in PyTorch, no file): the
   drift of the 68 landmarks from the float model's, mean % of the crop, on aflw-train val crops,
   for the full scheme and for variants that quantize less: weights only, activations only, a
   min-max activation observer instead of the histogram one, NNCF's range estimation and bias
   correction (``nncf.experimental.torch.fx.quantize_pt2e`` with the same quantizer), and each
   block of the network left float in turn (what its quantizers cost).
2. **Files**: fp32 and one int8 TFLite file per ``--int8-float`` choice, run in LiteRT: balanced
   NME on the aflw-train val split (AFLW-21 points: the number that chooses) and on AFLW2000-3D
   (reported, never chooses), size, and 1-thread p50 with the files timed interleaved.

    python benchmarks/tflite_int8_study.py --model mobilenetv3_small_100:pretrained -w runs/tflite-int8/mnv3s \\
        -o reports/tflite-int8
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from edgefa.benchmarks.machine import machine_facts, machine_line, script_command, versions_line
from edgefa.fileio import file_size_mb

TARGET = 0.10  # the budget: int8 within +0.10 balanced NME of the float file
RULE = ("the exporter's default is the float-part choice with the lowest val NME among the int8 files "
        "no slower than the all-int8 file (AFLW2000-3D never chooses)")
CHOICES = {"none": (), "stem": ("stem",)}  # --int8-float values made into files


# ---------------------------------------------------------------- simulated int8

def block_of(path: str) -> str:
    """A module path's block: the first component below the wrapper (``net.``) with the indices
    that follow it (``net.blocks.3.1.se.conv_reduce`` -> ``net.blocks.3.1``, ``dw2_1.conv_dw`` ->
    ``dw2_1``, ``net.bn1.act`` -> ``net.bn1``)."""
    parts = path.split(".")
    start = 1 if parts[0] == "net" and len(parts) > 1 else 0
    end = start + 1
    while end < len(parts) and parts[end].isdigit():
        end += 1
    return ".".join(parts[:end])


class Simulator:
    """The float network and its fake-quant twins, scored by landmark drift on fixed crops."""

    def __init__(self, graph, calib: np.ndarray, crops: np.ndarray):
        import torch

        self.graph = graph
        with torch.no_grad():
            self.calib = graph._preprocess(torch.from_numpy(np.ascontiguousarray(calib)))
            self.x = graph._preprocess(torch.from_numpy(np.ascontiguousarray(crops)))
            self.ref = self._landmarks(graph.net)

    def _landmarks(self, net):
        import torch

        with torch.no_grad():  # batch 1: the exported network has a static batch
            params = torch.cat([net(self.x[i:i + 1]) for i in range(len(self.x))])
            return self.graph.geometry(params * self.graph.param_std + self.graph.param_mean)[0][..., :2]

    def drift(self, net) -> float:
        """Mean distance of the 68 landmarks from the float model's, % of the crop side."""
        return float((self._landmarks(net) - self.ref).norm(dim=-1).mean() / self.graph.fm_size * 100)

    def exported(self):
        import torch

        from edgefa.quantization.xnnpack_int8 import split_hardswish

        net, _ = split_hardswish(self.graph.net)  # as the exporter does
        return torch.export.export(net, (self.calib[:1],), strict=False).module()

    def calibrated(self, quantizer):
        import torch
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        net = prepare_pt2e(self.exported(), quantizer)
        with torch.no_grad():
            for i in range(len(self.calib)):
                net(self.calib[i:i + 1])
        return convert_pt2e(net, fold_quantize=False)

    def block_paths(self) -> list[str]:
        return list(dict.fromkeys(block_of(p) for p in map(module_path, self.exported().graph.nodes) if p))


def module_path(node) -> str:
    """The innermost module a node of an exported graph came from (``net.blocks.0.0.conv_dw``);
    "" for nodes outside any module (the graph's inputs, constants)."""
    stack = node.meta.get("nn_module_stack")
    return list(stack.values())[-1][0] if stack else ""


def _keep_only(graph, keep: tuple[str, ...]) -> None:
    """Strip the annotations that quantize what ``keep`` leaves out: weights (the get_attr inputs)
    or activations (every other input and the outputs)."""
    for node in graph.nodes:
        a = node.meta.get("quantization_annotation")
        if a is not None:
            a.input_qspec_map = {k: v for k, v in a.input_qspec_map.items()
                                 if ("weights" if k.op == "get_attr" else "activations") in keep}
            if "activations" not in keep:
                a.output_qspec = None


def _quantizer(float_nodes=None, observer: str | None = None, keep=("weights", "activations")):
    """The exporter's quantizer (network output float), optionally leaving nodes float, with another
    activation observer, or quantizing only weights / only activations."""
    import dataclasses

    from litert_torch.quantize import pt2e_quantizer as lq

    from edgefa.quantization.qat import make_quantizer

    quantizer = make_quantizer(is_qat=False, float_output=True, float_nodes=float_nodes, int8_mean=True)
    if observer:
        config = lq.get_symmetric_quantization_config(is_per_channel=True)
        act = dataclasses.replace(config.input_activation,
                                  observer_or_fake_quant_ctr=getattr(lq, observer).with_args(eps=2 ** -12))
        quantizer.set_global(dataclasses.replace(config, input_activation=act, output_activation=act))
    if tuple(keep) != ("weights", "activations"):
        annotate = quantizer.annotate  # the exporter's annotation, then the study's stripping

        def annotate_partial(model):
            model = annotate(model)
            _keep_only(model.graph, tuple(keep))
            return model

        quantizer.annotate = annotate_partial
    return quantizer


def simulate(sim: Simulator, say) -> dict:
    from edgefa.quantization.float_parts import float_part_nodes

    rows = {}

    def row(name: str, make):
        t0 = time.perf_counter()
        rows[name] = round(sim.drift(make()), 4)
        say(f"  simulated {name}: drift {rows[name]:.3f} ({time.perf_counter() - t0:.0f} s)")

    row("all int8 (the scheme)", lambda: sim.calibrated(_quantizer()))
    row("weights only", lambda: sim.calibrated(_quantizer(keep=("weights",))))
    row("activations only", lambda: sim.calibrated(_quantizer(keep=("activations",))))
    row("activations: min-max observer", lambda: sim.calibrated(_quantizer(observer="MinMaxObserver")))
    row("NNCF ranges + fast bias correction", lambda: _nncf(sim))
    row("float stem (--int8-float stem)", lambda: sim.calibrated(_quantizer(lambda g: float_part_nodes(g, ("stem",)))))
    blocks = {}
    for block in sim.block_paths():
        net = sim.calibrated(_quantizer(lambda g, b=block: {n for n in g.nodes if block_of(module_path(n)) == b}))
        blocks[block] = round(sim.drift(net), 4)
    say(f"  simulated {len(blocks)} blocks left float one at a time")
    return {"variants": rows, "blocks": blocks}


def _nncf(sim: Simulator):
    import nncf
    from nncf.experimental.torch.fx import quantize_pt2e

    data = nncf.Dataset([sim.calib[i:i + 1] for i in range(len(sim.calib))])
    return quantize_pt2e(sim.exported(), _quantizer(), data, subset_size=len(sim.calib), fast_bias_correction=True,
                         fold_quantize=False)


# ---------------------------------------------------------------- files

def _score(path: Path, dataset) -> dict:
    from edgefa.evaluate import evaluate
    from edgefa.runtime.artifact import ArtifactPredictor

    result = evaluate(ArtifactPredictor(path, threads=1), dataset, progress=False)
    block = result.get("nme") or result["nme21"]
    return {"balanced": block["balanced_mean"], "plain": block["plain_mean"], "bins": block["bins"]}


def conv_types(path: Path) -> dict[str, int]:
    """How many convolutions of a TFLite file run on int8 and on float32 weights."""
    from edgefa.runtime import tflite as tflite_runtime

    interp = tflite_runtime.load(path, threads=1).interpreter
    counts: dict[str, int] = {}
    for op in interp._get_ops_details():
        if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            kind = np.dtype(interp._get_tensor_details(op["inputs"][1], 0)["dtype"]).name
            counts[kind] = counts.get(kind, 0) + 1
    return counts


def make_files(src, graph, calib: np.ndarray, work: Path, say) -> dict[str, Path]:
    from edgefa.converters import to_tflite
    from edgefa.converters.export import metadata_for
    from edgefa.runtime.formats import FORMATS

    files = {"fp32": work / f"{src.label}-fp32.tflite"}
    to_tflite.export(graph, files["fp32"], "fp32", None, metadata_for(src, graph, FORMATS["tflite"], "fp32"))
    for choice, parts in CHOICES.items():
        t0 = time.perf_counter()
        files[choice] = work / f"{src.label}-int8-float-{choice}.tflite"
        to_tflite.export(graph, files[choice], "int8", calib, metadata_for(src, graph, FORMATS["tflite"], "int8"),
                         float_parts=parts)
        say(f"  int8, --int8-float {choice}: converted in {time.perf_counter() - t0:.0f} s")
    return files


def study_model(spec: str, args, say) -> dict:
    from edgefa.benchmarks.onnx_int8_study import interleaved_p50
    from edgefa.converters.export import load_crops, load_source
    from edgefa.converters.graph import ExportGraph
    from edgefa.data.registry import create_dataset

    src = load_source(spec)
    graph = ExportGraph(src.model, src.face_model, postprocess=True).eval()
    calib = graph.prepare(load_crops(args.calib_data, args.calib_n, "calib-data"))
    say(f"{spec}:")
    sim = simulate(Simulator(graph, calib, graph.prepare(load_crops(args.val_data, args.drift_n, "val-data"))), say)
    work = Path(args.work)
    files = make_files(src, graph, calib, work, say)
    val, test = create_dataset(args.val_data), create_dataset(args.eval_data)
    latency = interleaved_p50(files, args.rounds, args.runs, graph.prepare(load_crops(args.val_data, 1, "val-data")))
    rows = []
    for name, path in files.items():
        rows.append({"variant": name, "file": str(path), "size_mb": round(file_size_mb(path), 3),
                     "convs": conv_types(path), "val": _score(path, val), "eval": _score(path, test), **latency[name]})
        say(f"  {name}: val {rows[-1]['val']['balanced']:.3f}, AFLW2000-3D {rows[-1]['eval']['balanced']:.3f}, "
            f"p50 {rows[-1]['p50_ms']:.2f} ms")
    for r in rows:
        r.update(delta_val=r["val"]["balanced"] - rows[0]["val"]["balanced"],
                 delta_eval=r["eval"]["balanced"] - rows[0]["eval"]["balanced"])
    all_int8 = next(r for r in rows if r["variant"] == "none")
    eligible = [r for r in rows[1:] if r["p50_ms"] <= all_int8["p50_ms"] * 1.02]  # 2 %: timing noise
    chosen = min(eligible, key=lambda r: r["val"]["balanced"])["variant"]
    return {"model": spec, "label": src.label, "simulated": sim, "rows": rows, "chosen": chosen}


# ---------------------------------------------------------------- report

def markdown(record: dict, notes: str) -> str:
    from edgefa.metrics import BIN_NAMES

    out = ["# TFLite int8: where the accuracy goes, and what the exporter keeps float (issue #22)", "",
           f"Command: `{record['command']}`", "",
           f"Machine: {machine_line(record['machine'])}. Versions: {versions_line(record['machine'])}.", "",
           f"Data: calibration `{record['data']['calib']}` ({record['data']['calib_n']} crops); drift and choice "
           f"`{record['data']['val']}` ({record['data']['drift_n']} crops for the drift; all faces, AFLW-21 points, "
           f"for the val NME); reported `{record['data']['eval']}` (68 points). Latency: LiteRT, 1 thread, batch 1, "
           f"median of {record['latency']['rounds']} interleaved rounds of {record['latency']['runs']} calls.", "",
           f"**Rule:** {record['rule']}.", ""]
    if notes:
        out += [notes.strip(), ""]
    for m in record["models"]:
        sim, rows = m["simulated"], m["rows"]
        base = sim["variants"]["all int8 (the scheme)"]
        out += [f"## `{m['model']}`", "", "**Simulated int8** (landmark drift from the float model, % of the crop; "
                "lower is better):", "", "| variant | drift | vs the scheme |", "|---|---|---|"]
        out += [f"| {k} | {v:.3f} | {v / base:.0%} |" for k, v in sim["variants"].items()]
        worst = sorted(sim["blocks"].items(), key=lambda kv: kv[1])[:5]
        out += ["", f"Each of the {len(sim['blocks'])} blocks left float alone (simulated; the five that remove the most "
                "drift): " + ", ".join(f"`{b}` {d:.3f}" for b, d in worst) + ".", "",
                "**Files in LiteRT:**", "",
                "| file | --int8-float | val NME | Δ val | AFLW2000-3D balanced | Δ vs fp32 | " + " | ".join(BIN_NAMES)
                + " | p50 1t (ms) | size (MB) | int8 / float convs |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            mark = "**" if r["variant"] == m["chosen"] else ""
            out.append(f"| `{Path(r['file']).name}` | {mark}{r['variant'] if r['variant'] != 'fp32' else '(fp32)'}{mark} | "
                       f"{r['val']['balanced']:.3f} | {r['delta_val']:+.3f} | {r['eval']['balanced']:.3f} | "
                       f"{r['delta_eval']:+.3f} | " + " | ".join(f"{r['eval']['bins'][b]:.3f}" for b in BIN_NAMES)
                       + f" | {r['p50_ms']:.2f} | {r['size_mb']:.2f} | {r['convs'].get('int8', 0)} / "
                       f"{r['convs'].get('float32', 0)} |")
        out += ["", f"Chosen by the rule: `--int8-float {m['chosen']}`.", ""]
    return "\n".join(out)


def main(argv=None) -> int:
    shared = "{shared}"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="model spec (repeatable), e.g. mobilenetv3_small_100:pretrained")
    parser.add_argument("-w", "--work", default="runs/tflite-int8", help="folder for the files")
    parser.add_argument("-o", "--output", help="report path without suffix (.md and .json)")
    parser.add_argument("--calib-data", default=f"aflw-train:{shared}/data/aflw-train,split=train")
    parser.add_argument("--calib-n", type=int, default=200)
    parser.add_argument("--val-data", default=f"aflw-train:{shared}/data/aflw-train,split=val")
    parser.add_argument("--drift-n", type=int, default=100, help="val crops for the simulated drift")
    parser.add_argument("--eval-data", default=f"aflw2000-3d:{shared}/data/aflw2000-3d")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--runs", type=int, default=100, help="timed calls per file per round")
    parser.add_argument("--notes", help="Markdown file placed under the header (the conclusion)")
    parser.add_argument("--render", metavar="STUDY.json", help="write the report of an earlier run's record with "
                        "--notes; measures nothing")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if not (args.render or args.model) or (args.render and not args.output):
        parser.error("--model is required (or --render STUDY.json with -o)")
    from edgefa.benchmarks.onnx_int8_study import study_main
    from edgefa.paths import fill_shared, unfill_shared

    for key in ("calib_data", "val_data", "eval_data"):
        setattr(args, key, fill_shared(getattr(args, key)))
    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True))

    def measure() -> dict:
        return {"command": script_command(argv), "machine": machine_facts(), "rule": RULE, "target": TARGET,
                "data": {"calib": unfill_shared(args.calib_data), "calib_n": args.calib_n,
                         "val": unfill_shared(args.val_data), "drift_n": args.drift_n,
                         "eval": unfill_shared(args.eval_data)},
                "latency": {"rounds": args.rounds, "runs": args.runs},
                "models": [study_model(spec, args, say) for spec in args.model]}

    return study_main("tflite_int8_study", args, measure, markdown)

if __name__ == "__main__":
    sys.exit(main())
