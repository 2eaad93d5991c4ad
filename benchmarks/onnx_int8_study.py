"""ONNX int8 study (issue #22): which int8 settings hold accuracy in onnxruntime, and where the
accuracy goes, per tensor. One float checkpoint -> its fp32 ONNX file -> one int8 file per variant
(``Int8Settings`` of the exporter, calibrated on aflw-train train crops) and the QAT checkpoint's
file; each file is scored on the aflw-train val split (AFLW-21 points: the only number that chooses)
and on AFLW2000-3D (reported, never chooses) and timed (1 thread, p50, files interleaved A/B/A/B).

    python benchmarks/onnx_int8_study.py --model runs/mobilenetv3-small-refined-ft2/best.pt \\
        --qat runs/qat-mnv3s-ft2/best.pt -w runs/onnx-int8/study -o reports/onnx-int8

Per-layer: SQNR (dB, higher is better) of every quantized activation against the float model on
val crops. ``local``: the tensor after its QuantizeLinear/DequantizeLinear pair against the same
tensor before it (the error that pair adds); ``off`` / ``on``: against the float model's tensor
with onnxruntime graph optimisations off (QDQ simulated in float) / on (fused integer kernels). The
``on`` values come from a copy of the graph cut at that tensor: adding outputs to the whole graph
(what ``qdq_loss_debug`` does) stops onnxruntime fusing the nodes around them.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from edgefa.benchmarks.machine import machine_facts, machine_line, script_command, versions_line
from edgefa.converters.onnx_int8 import Int8Settings, quantize
from edgefa.converters.to_onnx import _set_metadata
from edgefa.errors import EdgefaError
from edgefa.fileio import file_size_mb, write_md_json
from edgefa.metrics import BIN_NAMES

NNCF, ORT = Int8Settings(quantizer="nncf"), Int8Settings(quantizer="onnxruntime", method="minmax")
# name -> (settings, calibration crops); "nncf" and "ort-s8s8" are the two legs of the exporter before this study
VARIANTS = {
    "nncf": (NNCF, 200),
    "nncf-n1000": (NNCF, 1000),
    "nncf-minmax": (replace(NNCF, method="minmax"), 200),
    "nncf-overflow-fix-all": (replace(NNCF, reduce_range=True), 200),
    "nncf-full-bias-correction": (replace(NNCF, fast_bias_correction=False), 200),
    "nncf-per-tensor": (replace(NNCF, per_channel=False), 200),
    "nncf-float-stem": (replace(NNCF, float_parts=("stem",)), 200),
    "nncf-float-se": (replace(NNCF, float_parts=("se",)), 200),
    "nncf-float-head": (replace(NNCF, float_parts=("head",)), 200),
    "nncf-float-classifier": (replace(NNCF, float_parts=("classifier",)), 200),
    "nncf-float-classifier-n1000": (replace(NNCF, float_parts=("classifier",)), 1000),
    "nncf-minmax-float-classifier": (replace(NNCF, method="minmax", float_parts=("classifier",)), 200),
    "nncf-float-classifier-dw-per-tensor": (replace(NNCF, depthwise_per_channel=False, float_parts=("classifier",)), 200),
    "ort-s8s8": (ORT, 200),
    "ort-u8s8": (replace(ORT, activations="uint8"), 200),
    "ort-u8u8": (replace(ORT, activations="uint8", weights="uint8"), 200),
    "ort-s8s8-reduce-range": (replace(ORT, reduce_range=True), 200),
    "ort-s8s8-per-tensor": (replace(ORT, per_channel=False), 200),
    "ort-s8s8-entropy": (replace(ORT, method="entropy"), 200),
    "ort-s8s8-pct": (replace(ORT, method="percentile"), 200),
    "ort-s8s8-n1000": (ORT, 1000),
    "ort-float-stem": (replace(ORT, float_parts=("stem",)), 200),
    "ort-float-se": (replace(ORT, float_parts=("se",)), 200),
    "ort-float-classifier": (replace(ORT, float_parts=("classifier",)), 200),
    "ort-pct-float-classifier": (replace(ORT, method="percentile", float_parts=("classifier",)), 200),
    "ort-pct-float-head": (replace(ORT, method="percentile", float_parts=("head",)), 200),
    "ort-float-depthwise": (replace(ORT, float_parts=("depthwise",)), 200),
    "ort-pct-float-classifier-depthwise": (replace(ORT, method="percentile", float_parts=("classifier", "depthwise")), 200),
    "ort-u8s8-float-classifier": (replace(ORT, activations="uint8", float_parts=("classifier",)), 200),
    "ort-u8s8-pct-float-classifier": (replace(ORT, activations="uint8", method="percentile", float_parts=("classifier",)), 200),
}
TARGET = 0.10  # the issue's budget: int8 within +0.10 balanced NME of the float file
RULE = "lowest balanced AFLW-21 NME on the aflw-train val split (AFLW2000-3D never chooses)"


def _crops(spec: str, n: int, spec_of_input: dict) -> np.ndarray:
    from edgefa.converters.export import load_crops
    from edgefa.runtime.inputs import prepare_input

    return prepare_input(load_crops(spec, n, "data"), spec_of_input)


def _score(path: Path, dataset) -> dict:
    """Balanced / plain NME and the yaw bins of the file run in onnxruntime (1 thread); 68 points
    where the data has them, else the AFLW-21 points (the aflw-train val split)."""
    from edgefa.evaluate import evaluate
    from edgefa.runtime.artifact import ArtifactPredictor

    result = evaluate(ArtifactPredictor(path, threads=1), dataset, progress=False)
    block = result.get("nme") or result["nme21"]
    return {"balanced": block["balanced_mean"], "plain": block["plain_mean"], "bins": block["bins"]}


# ---------------------------------------------------------------- per-layer errors

def _sqnr(ref: np.ndarray, got: np.ndarray) -> float:
    from onnxruntime.quantization.qdq_loss_debug import compute_signal_to_quantization_noice_ratio

    return float(compute_signal_to_quantization_noice_ratio(np.asarray(ref, np.float32), np.asarray(got, np.float32)))


def activation_pairs(int8_model) -> dict[str, tuple[str, object]]:
    """Float tensor name -> (the tensor that replaces it, its QuantizeLinear node); a pair the
    exporter wrapped in constant Muls (per-channel NNCF pairs, ``_unfusable_channel_qdq``) counts
    from the first Mul's input to the last Mul's output."""
    nodes = int8_model.graph.node
    inits = {i.name for i in int8_model.graph.initializer}
    producer = {o: n for n in nodes for o in n.output}
    users: dict[str, list] = {}
    for n in nodes:
        for name in n.input:
            users.setdefault(name, []).append(n)

    def scaled(node) -> bool:
        return node is not None and node.op_type == "Mul" and node.input[1] in inits

    pairs = {}
    for q in (n for n in nodes if n.op_type == "QuantizeLinear" and n.input[0] not in inits):
        dq = next((u for u in users.get(q.output[0], []) if u.op_type == "DequantizeLinear"), None)
        if dq is None:
            continue
        src, out, after = q.input[0], dq.output[0], users.get(dq.output[0], [])
        if scaled(producer.get(src)) and len(after) == 1 and scaled(after[0]):
            src, out = producer[src].input[0], after[0].output[0]
        pairs[src] = (out, q)
    return pairs


def _run(model, outputs: list[str], x: np.ndarray, optimise: bool) -> dict[str, np.ndarray]:
    import onnx
    import onnxruntime as ort
    from onnx import helper

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    have = {o.name for o in copy.graph.output}
    copy.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in outputs if n not in have)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.log_severity_level = 1, 3
    opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimise
                                     else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    sess = ort.InferenceSession(copy.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return dict(zip(outputs, sess.run(outputs, {sess.get_inputs()[0].name: x})))


def _cut(model, output: str):
    """The graph up to ``output`` (its only output): the nodes around it fuse as in the whole graph."""
    from onnx import helper

    producer = {o: n for n in model.graph.node for o in n.output}
    keep, stack = set(), [output]
    while stack:
        node = producer.get(stack.pop())
        if node is not None and id(node) not in keep:
            keep.add(id(node))
            stack += list(node.input)
    graph = helper.make_graph([n for n in model.graph.node if id(n) in keep], "cut", model.graph.input,
                              [helper.make_empty_tensor_value_info(output)], list(model.graph.initializer))
    return helper.make_model(graph, opset_imports=model.opset_import, ir_version=model.ir_version)


def _quantized_inputs(int8_model, pairs: dict) -> dict[str, list[str]]:
    """Per quantized tensor: the quantized tensors it is computed from (walking back through float
    ops and weight DequantizeLinear nodes to the nearest activation DequantizeLinear outputs)."""
    producer = {o: n for n in int8_model.graph.node for o in n.output}
    name_of = {dq: name for name, (dq, _) in pairs.items()}
    out = {}
    for name in pairs:
        found, seen, stack = [], set(), [name]
        while stack:
            tensor = stack.pop()
            if tensor in seen:
                continue
            seen.add(tensor)
            if tensor in name_of and tensor != pairs[name][0]:
                found.append(name_of[tensor])
            elif tensor in producer:
                stack += list(producer[tensor].input)
        out[name] = found
    return out


def layer_errors(float_model, int8_model, x: np.ndarray) -> list[dict]:
    """Per quantized activation, in graph order: local / off / on SQNR (see the module doc) and
    ``added``: the SQNR of the noise this tensor has beyond what the quantized tensors it is computed
    from bring (noise-to-signal power of off minus that of the worst input; noise this pair adds, or
    that the ops in between amplify). Ranks where the error comes from."""
    from onnx import numpy_helper

    pairs = activation_pairs(int8_model)
    names = list(pairs)
    ref = _run(float_model, names, x, optimise=False)
    off = _run(int8_model, names + [dq for dq, _ in pairs.values()], x, optimise=False)
    inits = {i.name: numpy_helper.to_array(i) for i in int8_model.graph.initializer}
    order = {o: i for i, n in enumerate(float_model.graph.node) for o in n.output}
    sources = _quantized_inputs(int8_model, pairs)
    rows = {}
    for name in sorted(names, key=lambda t: order.get(t, -1)):
        dq, q = pairs[name]
        pre = off[name]
        zp = inits.get(q.input[2]) if len(q.input) > 2 else None
        if zp is not None and zp.size == 1 and int(zp) == np.iinfo(zp.dtype).min:
            pre = np.maximum(pre, 0)  # a zero point at the lowest level is also a ReLU (onnxruntime folds Relu in)
        row = {"tensor": name, "local": _sqnr(pre, off[dq]), "off": _sqnr(ref[name], off[dq])}
        inputs = [rows[s]["off"] for s in sources[name] if s in rows]
        extra = 10 ** (-row["off"] / 10) - (10 ** (-min(inputs) / 10) if inputs else 0.0)
        row["added"] = min(-10 * np.log10(max(extra, 1e-12)), 120.0)
        on = _run(_cut(int8_model, dq), [dq], x, optimise=True)[dq]
        row.update(on=_sqnr(ref[name], on), on_vs_off=_sqnr(off[dq], on))
        rows[name] = row
    return list(rows.values())


# ---------------------------------------------------------------- latency

def interleaved_p50(paths: dict[str, Path], rounds: int, runs: int, x: np.ndarray) -> dict[str, dict]:
    """p50 ms per file, 1 thread, batch 1: every round times each file in turn (A/B/A/B...), so a
    busy spell of the shared machine hits all of them; the figure is the median of the rounds' p50s."""
    from edgefa.benchmarks.interleaved import round_medians

    per_round = dict(zip(paths, round_medians(list(paths.values()), rounds, runs, warmup=5, x=x)))
    return {k: {"p50_ms": float(np.median(v)), "rounds_ms": [round(t, 3) for t in v],
                "spread": float((max(v) - min(v)) / np.median(v))} for k, v in per_round.items()}


def integer_convs(path: Path) -> list[int]:
    """[convolutions onnxruntime runs as QLinearConv after its optimisations, Conv nodes in the file]."""
    import tempfile

    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.optimized_model_filepath, opts.log_severity_level = str(Path(tmp, "opt.onnx")), 3
        ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        fused = [n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node].count("QLinearConv")
    return [fused, [n.op_type for n in onnx.load(str(path)).graph.node].count("Conv")]


# ---------------------------------------------------------------- study

def _int8_file(fp32: Path, settings: Int8Settings, calib: np.ndarray, out: Path) -> Path:
    """The fp32 file quantized as the exporter does it, with the exporter's calibration note."""
    import onnx

    note = f"static PTQ, {len(calib)} calibration crops, {settings.describe()}"
    model = onnx.load(str(fp32))
    meta = {p.key: p.value for p in model.metadata_props}
    quantized = quantize(model, calib, settings, postprocess=json.loads(meta.get("edgefa.postprocess", "false")))
    onnx.save(_set_metadata(quantized, {**meta, "edgefa.precision": "int8", "edgefa.calibration": note}), str(out))
    return out


def _export(model: str, precision: str, out: Path, args) -> Path:
    from edgefa.converters.export import run_export

    rows, _ = run_export(model, "onnx", precision, out, parity_data=args.parity_data, parity_n=args.parity_n,
                         postprocess=True, threads=1, name="model", progress=lambda *_: None)
    if rows[0].status != "ok":
        raise EdgefaError(f"{model}: {precision} ONNX export failed: {rows[0].reason}")
    return Path(rows[0].file)


def run_study(args) -> dict:
    import onnx

    from edgefa.data.registry import create_dataset
    from edgefa.paths import unfill_shared

    work = Path(args.work)
    names = [n.strip() for n in args.variants.split(",")] if args.variants else list(VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise EdgefaError(f"--variants: unknown {', '.join(unknown)} (known: {', '.join(VARIANTS)})")
    val, test = create_dataset(args.val_data), create_dataset(args.eval_data)
    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True))
    files = {"fp32": _export(args.model, "fp32", work / "fp32", args)}
    input_spec = json.loads(dict((p.key, p.value) for p in onnx.load(str(files["fp32"])).metadata_props)["edgefa.input"])
    counts = {v: min(VARIANTS[v][1], args.max_calib or VARIANTS[v][1]) for v in names}
    calib = {n: _crops(f"{args.calib_data},n={n}", n, input_spec) for n in sorted(set(counts.values()))}
    settings = {"fp32": None}
    for name in names:
        s, n = VARIANTS[name][0], counts[name]
        t0 = time.perf_counter()
        files[name] = _int8_file(files["fp32"], s, calib[n], work / f"{name}.onnx")
        settings[name] = {**asdict(s), "calib_n": n}
        say(f"{name}: quantized in {time.perf_counter() - t0:.0f} s")
    if args.qat:
        files["qat"] = _export(args.qat, "int8", work / "qat", args)
        settings["qat"] = {"quantizer": "QAT", "calib_n": 0}
    rows = []
    for name, path in files.items():
        meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        rows.append({"variant": name, "settings": settings[name], "file": str(path), "size_mb": round(file_size_mb(path), 3),
                     "calibration": meta.get("edgefa.calibration", "none (float)"), "int8_convs": integer_convs(path),
                     "val": _score(path, val), "eval": _score(path, test)})
        say(f"{name}: val {rows[-1]['val']['balanced']:.3f}  eval {rows[-1]['eval']['balanced']:.3f}")
    x1 = _crops(f"{args.val_data},n=1", 1, input_spec)
    latency = interleaved_p50(files, args.rounds, args.runs, x1)
    fp32 = rows[0]
    for r in rows:
        r.update(delta_val=r["val"]["balanced"] - fp32["val"]["balanced"],
                 delta_eval=r["eval"]["balanced"] - fp32["eval"]["balanced"], **latency[r["variant"]])
    chosen = min(rows[1:], key=lambda r: r["val"]["balanced"])
    xl = _crops(args.val_data + f",n={args.layer_n}", args.layer_n, input_spec)
    float_model = onnx.load(str(files["fp32"]))
    layers = {}
    for name in dict.fromkeys([*[v for v in args.layers.split(",") if v in files], chosen["variant"]]):
        if name in ("fp32", "qat"):
            continue  # the QAT graph's tensors have other names than the float graph's
        t0 = time.perf_counter()
        layers[name] = layer_errors(float_model, onnx.load(str(files[name])), xl)
        say(f"{name}: per-layer errors in {time.perf_counter() - t0:.0f} s")
    return {"command": script_command(args.argv), "machine": machine_facts(), "cpu_flags": cpu_flags(),
            "data": {"calib": unfill_shared(args.calib_data), "val": unfill_shared(args.val_data),
                     "eval": unfill_shared(args.eval_data), "layer_crops": len(xl)},
            "latency": {"rounds": args.rounds, "runs_per_round": args.runs, "threads": 1, "batch": 1},
            "rule": RULE, "target": TARGET, "rows": rows, "chosen": chosen["variant"], "layers": layers}


def cpu_flags() -> list[str]:
    """The int8 instruction sets onnxruntime's kernels pick from (VNNI decides u8s8 saturation)."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return []
    return [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags]


# ---------------------------------------------------------------- report

def markdown(record: dict, notes: str) -> str:
    rows, chosen = record["rows"], record["chosen"]
    best = next(r for r in rows if r["variant"] == chosen)
    spreads = [r["spread"] for r in rows]
    out = ["# ONNX int8 in onnxruntime: variants and per-layer error (issue #22)", "",
           f"Command: `{record['command']}`", "",
           f"Machine: {machine_line(record['machine'])}; int8 instruction sets: {', '.join(record['cpu_flags']) or '?'}. "
           f"Versions: {versions_line(record['machine'])}.", "",
           f"Data: calibration `{record['data']['calib']}`; choice `{record['data']['val']}` (balanced NME over the "
           f"AFLW-21 points); reported `{record['data']['eval']}` (68 points, balanced over the yaw bins). "
           f"Latency: 1 thread, batch 1, p50 per round of {record['latency']['runs_per_round']} calls, median of "
           f"{record['latency']['rounds']} rounds with the files interleaved; the rounds of one file spread by "
           f"{min(spreads):.0%}-{max(spreads):.0%} (median {np.median(spreads):.0%}) of its p50 on this shared machine.", "",
           f"**Rule:** {record['rule']}. **Chosen: `{chosen}`**, {best['delta_val']:+.3f} on val, "
           f"{best['delta_eval']:+.3f} on AFLW2000-3D (target <= +{record['target']:.2f}: "
           + ("met" if best["delta_eval"] <= record["target"] else f"missed by {best['delta_eval'] - record['target']:.3f}")
           + f"), {best['p50_ms']:.2f} ms vs fp32 {rows[0]['p50_ms']:.2f} ms.", ""]
    if notes:
        out += [notes.strip(), ""]
    out += ["## Variants", "",
            "| variant | quantizer settings | val NME | Δ val | AFLW2000-3D balanced | Δ vs fp32 | "
            + " | ".join(BIN_NAMES) + " | p50 1t (ms) | size (MB) | QLinearConv |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        mark = "**" if r["variant"] == chosen else ""
        out.append(f"| {mark}{r['variant']}{mark} | {r['calibration'].removeprefix('static PTQ, ')} | {r['val']['balanced']:.3f} | "
                   f"{r['delta_val']:+.3f} | {r['eval']['balanced']:.3f} | {r['delta_eval']:+.3f} | "
                   + " | ".join(f"{r['eval']['bins'][b]:.3f}" for b in BIN_NAMES)
                   + f" | {r['p50_ms']:.2f} | {r['size_mb']:.2f} | {r['int8_convs'][0]} of {r['int8_convs'][1]} |")
    for name, layer_rows in record["layers"].items():
        worst = sorted(layer_rows, key=lambda t: t["added"])[:10]
        gap = max((abs(t["on"] - t["off"]) for t in layer_rows), default=0.0)
        out += ["", f"## Per-layer SQNR: `{name}` ({len(layer_rows)} quantized activations, "
                f"{record['data']['layer_crops']} val crops; the 10 that add the most noise)", "",
                "| tensor | local (dB) | vs float, optimisations off | noise added here | vs float, on | on vs off |",
                "|---|---|---|---|---|---|"]
        out += [f"| `{t['tensor']}` | {t['local']:.1f} | {t['off']:.1f} | {t['added']:.1f} | {t['on']:.1f} | "
                f"{t['on_vs_off']:.1f} |" for t in worst]
        out += ["", f"Largest |on - off| over all {len(layer_rows)} tensors: {gap:.1f} dB; last tensor "
                f"`{layer_rows[-1]['tensor']}`: off {layer_rows[-1]['off']:.1f} dB, on {layer_rows[-1]['on']:.1f} dB."]
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    shared = "{shared}"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="float checkpoint (required unless --render)")
    parser.add_argument("--qat", help="its QAT checkpoint (exported as ONNX int8 with its learned scales)")
    parser.add_argument("-w", "--work", default="runs/onnx-int8/study", help="folder for the files")
    parser.add_argument("-o", "--output", help="report path without suffix (.md and .json)")
    parser.add_argument("--variants", help=f"comma list (default: all): {', '.join(VARIANTS)}")
    parser.add_argument("--calib-data", default=f"aflw-train:{shared}/data/aflw-train,split=train")
    parser.add_argument("--val-data", default=f"aflw-train:{shared}/data/aflw-train,split=val")
    parser.add_argument("--eval-data", default=f"aflw2000-3d:{shared}/data/aflw2000-3d")
    parser.add_argument("--parity-data", default=f"aflw-train:{shared}/data/aflw-train,split=val,n=64")
    parser.add_argument("--parity-n", type=int, default=32)
    parser.add_argument("--max-calib", type=int, help="cap every variant's calibration crops (quick runs, tests)")
    parser.add_argument("--layers", default="nncf,ort-s8s8", help="variants whose per-layer errors are measured "
                        "(the chosen one always)")
    parser.add_argument("--layer-n", type=int, default=256, help="val crops for the per-layer errors")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--runs", type=int, default=100, help="timed calls per file per round")
    parser.add_argument("--notes", help="Markdown file placed under the header (the conclusion)")
    parser.add_argument("--render", metavar="STUDY.json", help="write the report of an earlier run's record "
                        "(WORK/study.json: its command, numbers and machine) with --notes; measures nothing")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if not (args.render or args.model) or (args.render and not args.output):
        parser.error("--model is required (or --render STUDY.json with -o)")
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    from edgefa.paths import fill_shared

    for key in ("calib_data", "val_data", "eval_data", "parity_data"):
        setattr(args, key, fill_shared(getattr(args, key)))
    return study_main("onnx_int8_study", args, lambda: run_study(args), markdown)


def study_main(prog: str, args, measure, markdown) -> int:
    """The shared end of the study scripts: measure (or read ``--render``'s earlier record), keep
    the record as WORK/study.json, write the report with ``--notes``; an error is one line."""
    try:
        notes = Path(args.notes).read_text() if args.notes else ""
        if args.render:
            try:
                record = json.loads(Path(args.render).read_text())
            except json.JSONDecodeError as exc:
                raise EdgefaError(f"--render {args.render}: not a study record (JSON: {exc})") from None
        else:
            Path(args.work).mkdir(parents=True, exist_ok=True)
            record = measure()
            (Path(args.work) / "study.json").write_text(json.dumps(record, indent=1))
    except (EdgefaError, OSError, json.JSONDecodeError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    if args.output:
        print(f"wrote {write_md_json(args.output, record, markdown(record, notes))} and .json")
    return 0

if __name__ == "__main__":
    sys.exit(main())
