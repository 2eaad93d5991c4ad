"""ONNX int8: static QDQ quantization of an exported float graph, calibrated on real crops, by NNCF
or onnxruntime's quantize_static (``Int8Settings``; ``--onnx-quantizer`` picks a named recipe,
chosen by ``benchmarks/onnx_int8_study.py``), with the post-processing and chosen network parts
kept float. ``to_onnx`` writes the file."""
from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from edgefa.errors import EdgefaError, unknown_name_error
from edgefa.runtime.formats import INPUT_NAME


def float_only_nodes(model) -> list[str]:
    """Nodes to keep in float when quantizing a post-processing graph: the pre-processing before
    the first convolution and everything from de-whitening on (the 3DMM landmark math would lose
    whole pixels in int8)."""
    nodes = list(model.graph.node)
    consumers: dict[str, list[int]] = {}
    for i, node in enumerate(nodes):
        for name in node.input:
            consumers.setdefault(name, []).append(i)

    def downstream(starts: list[int]) -> set[int]:
        seen, stack = set(), list(starts)
        while stack:
            i = stack.pop()
            if i in seen:
                continue
            seen.add(i)
            for out in nodes[i].output:
                stack += consumers.get(out, [])
        return seen

    inits = {init.name for init in model.graph.initializer} | {n.output[0] for n in nodes if n.op_type == "Constant"}
    std = [name for name in inits if name.endswith("param_std")]
    if not std:
        raise EdgefaError("ONNX int8: cannot find the de-whitening constant in the post-processing graph")
    tail = downstream([i for name in std for i in consumers.get(name, [])])
    body = downstream([i for i, n in enumerate(nodes) if n.op_type == "Conv"])
    return [nodes[i].name for i in range(len(nodes)) if i in tail or i not in body]


@contextlib.contextmanager
def _quiet():
    """NNCF and onnxruntime's quantizer log every node at INFO and print; keep the CLI readable."""
    loggers = [logging.getLogger(n) for n in ("nncf", "root")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


@dataclass(frozen=True)
class Int8Settings:
    """How an int8 ONNX file is quantized. ``benchmarks/onnx_int8_study.py`` measures the choices
    (``reports/onnx-int8.md``); ``DEFAULT_INT8`` is the one it chose on the aflw-train val split."""

    quantizer: str = "nncf"  # nncf | onnxruntime
    activations: str = "int8"  # onnxruntime: int8 | uint8 (NNCF picks the signedness per tensor)
    weights: str = "int8"  # onnxruntime: int8 | uint8
    per_channel: bool = True  # weights
    depthwise_per_channel: bool = True  # NNCF: depthwise conv inputs per channel (onnxruntime: always per tensor)
    reduce_range: bool = False  # 7-bit weights (onnxruntime reduce_range; NNCF: overflow fix on every layer)
    method: str = "mean_minmax"  # nncf: mean_minmax | minmax; onnxruntime: minmax | entropy | percentile
    percentile: float = 99.99
    fast_bias_correction: bool = True  # NNCF; False: full bias correction
    float_parts: tuple[str, ...] = ()  # network parts kept float: see FLOAT_PARTS

    def check(self) -> Int8Settings:
        methods = {"nncf": ("mean_minmax", "minmax"), "onnxruntime": ("minmax", "entropy", "percentile")}
        if self.quantizer not in methods or self.method not in methods[self.quantizer]:
            raise EdgefaError(f"ONNX int8: quantizer {self.quantizer!r} with method {self.method!r} is not one of "
                              + "; ".join(f"{q}: {', '.join(m)}" for q, m in methods.items()))
        if self.quantizer == "nncf" and (self.activations, self.weights) != ("int8", "int8"):
            raise EdgefaError("ONNX int8: NNCF sets activation / weight types itself; use the onnxruntime quantizer")
        unknown = set(self.float_parts) - set(FLOAT_PARTS)
        if unknown:
            raise EdgefaError(f"ONNX int8: unknown float part(s) {', '.join(sorted(unknown))} "
                              f"(known: {', '.join(FLOAT_PARTS)})")
        return self

    def describe(self) -> str:
        if self.quantizer == "nncf":
            ranges = {"mean_minmax": "activations: mean of per-crop min/max",
                      "minmax": "activations: min/max over all crops"}[self.method]
            how = (f"NNCF MinMax ({ranges}; {'fast' if self.fast_bias_correction else 'full'} bias correction; "
                   f"overflow fix on {'every layer' if self.reduce_range else 'the first layer'}; depthwise inputs "
                   f"{'per channel' if self.depthwise_per_channel else 'per tensor'})")
        else:
            ranges = {"minmax": "MinMax", "entropy": "Entropy", "percentile": f"Percentile {self.percentile}"}
            how = (f"onnxruntime quantize_static {ranges[self.method]} ({self.activations} activations, "
                   f"{self.weights} weights{', reduce_range (7-bit weights)' if self.reduce_range else ''})")
        kept = f"; kept float: {', '.join(self.float_parts)}" if self.float_parts else ""
        return f"{how}; {'per-channel' if self.per_channel else 'per-tensor'} weights, QDQ{kept}"


# Chosen by benchmarks/onnx_int8_study.py on the aflw-train val split (reports/onnx-int8.md,
# MobileNetV3-Small): NNCF's activation range for the 1024-wide pooled feature that feeds the final
# linear layer clips it (local SQNR 15 dB, every other tensor >= 27 dB) and carried most of the loss;
# with that layer float (62 x 1024 MACs) int8 costs +0.06 val NME instead of +0.86 (AFLW2000-3D:
# +0.04 instead of +0.54). NNCF also quantizes depthwise inputs per channel, which onnxruntime's
# quantize_static cannot (NNCF with them per tensor: +0.42 val). On onnxruntime CPU it runs slower
# than fp32 (few QLinearConv fusions): the report has the measured trade-off.
DEFAULT_INT8 = Int8Settings(quantizer="nncf", float_parts=("classifier",))
# where NNCF is missing or fails: the onnxruntime variant with the lowest val NME in the same study (+0.17)
FALLBACK_INT8 = Int8Settings(quantizer="onnxruntime", method="percentile", float_parts=("classifier", "depthwise"))
# `--onnx-quantizer onnxruntime`: onnxruntime's own Q/DQ placement, which its CPU provider fuses into
# QLinearConv everywhere, so the file runs faster than fp32. On a ReLU network (3DDFA-V2 mb05) it was
# the most accurate variant too (+0.019 val, +0.015 AFLW2000-3D, 0.67 vs 0.93 ms fp32); on
# MobileNetV3-Small its per-tensor depthwise inputs cost +0.8 val, so NNCF stays the default.
ORT_INT8 = Int8Settings(quantizer="onnxruntime", method="minmax", activations="uint8", float_parts=("classifier",))
INT8_QUANTIZERS = {"nncf": DEFAULT_INT8, "onnxruntime": ORT_INT8}


def int8_settings(quantizer: str) -> Int8Settings:
    """The settings ``--onnx-quantizer NAME`` stands for; a typo is one line naming the closest."""
    if quantizer not in INT8_QUANTIZERS:
        raise unknown_name_error("--onnx-quantizer", quantizer, INT8_QUANTIZERS)
    return INT8_QUANTIZERS[quantizer]


def quantizer_of_note(note: str) -> str | None:
    """The ``--onnx-quantizer`` name whose settings wrote a file's calibration note (its
    ``edgefa.calibration`` metadata); None for anything else (the fallback where NNCF failed, QAT).
    The settings must end where the note's description does (``;``, `` (`` or the end), so settings
    with more float parts are not taken for a named recipe whose description they start with."""
    for name, settings in INT8_QUANTIZERS.items():
        at = note.find(f", {settings.describe()}")
        rest = note[at + len(settings.describe()) + 2:] if at >= 0 else None
        if rest is not None and (rest == "" or rest.startswith((";", " ("))):
            return name
    return None


FLOAT_PARTS = {
    "stem": "the first convolution",
    "se": "squeeze-excitation convolutions (between a global pooling and the Mul that scales the features)",
    "depthwise": "depthwise convolutions",
    "head": "every Conv / Gemm / MatMul after the last global pooling (classifier included)",
    "classifier": "the last Conv / Gemm / MatMul (the layer that outputs the parameters)",
}


def float_part_nodes(model, parts: tuple[str, ...] | list[str], skip: set[str] = frozenset()) -> list[str]:
    """Names of the nodes of ``parts`` (see FLOAT_PARTS), found from the graph's structure; ``skip``:
    nodes already kept float (the post-processing), so "last" means the network's last."""
    nodes = [n for n in model.graph.node if n.name not in skip]
    compute = [n for n in nodes if n.op_type in ("Conv", "Gemm", "MatMul")]
    pools = [i for i, n in enumerate(nodes) if n.op_type in ("ReduceMean", "GlobalAveragePool")]
    consumers: dict[str, list[int]] = {}
    for i, node in enumerate(nodes):
        for name in node.input:
            consumers.setdefault(name, []).append(i)
    picked: list[str] = []
    for part in parts:
        if part == "stem":
            picked += [compute[0].name] if compute else []
        elif part == "classifier":
            picked += [compute[-1].name] if compute else []
        elif part == "depthwise":
            picked += [n.name for n in compute if n.op_type == "Conv"
                       and next((a.i for a in n.attribute if a.name == "group"), 1) > 1]
        elif part == "head" and pools:
            picked += [n.name for n in nodes[pools[-1]:] if n.op_type in ("Conv", "Gemm", "MatMul")]
        elif part == "se":
            for start in pools[:-1]:  # the last pooling starts the head
                path, frontier = [], list(nodes[start].output)
                while frontier:  # follow single-consumer nodes until the Mul that applies the gate
                    users = consumers.get(frontier.pop(), [])
                    if len(users) != 1 or nodes[users[0]].op_type == "Mul":
                        break
                    path.append(nodes[users[0]])
                    frontier = list(nodes[users[0]].output)
                picked += [n.name for n in path if n.op_type == "Conv"]
    return list(dict.fromkeys(picked))


class _Calibration:
    """onnxruntime's CalibrationDataReader protocol over a numpy batch."""

    def __init__(self, calib: np.ndarray):
        self.items = iter([{INPUT_NAME: calib[i:i + 1]} for i in range(len(calib))])

    def get_next(self):
        return next(self.items, None)


def _quantize_ort(model, calib: np.ndarray, exclude: list[str], settings: Int8Settings):
    import tempfile

    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    types = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[settings.method]
    # Entropy: onnxruntime 1.32 passes no bin count to its calibrator, whose 128 bins for 128 levels
    # leave no threshold to search, so it returns the MinMax ranges (measured: identical files)
    extra = {"CalibPercentile": settings.percentile} if settings.method == "percentile" else {}
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp, "f.onnx"), Path(tmp, "q.onnx")
        onnx.save(model, src)  # node names kept (onnxslim already folded the graph), so exclusions hold
        quantize_static(str(src), str(dst), _Calibration(calib), quant_format=QuantFormat.QDQ,
                        per_channel=settings.per_channel, reduce_range=settings.reduce_range,
                        activation_type=types[settings.activations], weight_type=types[settings.weights],
                        calibrate_method=method, nodes_to_exclude=exclude or None, extra_options=extra)
        return onnx.load(dst)


def _quantize_nncf(model, calib: np.ndarray, exclude: list[str], settings: Int8Settings):
    import nncf
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        OverflowFix,
        QuantizationParameters,
    )
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    advanced = AdvancedQuantizationParameters(
        overflow_fix=OverflowFix.ENABLE if settings.reduce_range else OverflowFix.FIRST_LAYER,
        weights_quantization_params=QuantizationParameters(per_channel=settings.per_channel),
        **({} if settings.depthwise_per_channel else
           {"activations_quantization_params": QuantizationParameters(per_channel=False)}),
        **({"activations_range_estimator_params": RangeEstimatorParametersSet.MINMAX}
           if settings.method == "minmax" else {}))
    kwargs = {"ignored_scope": nncf.IgnoredScope(names=exclude, validate=False)} if exclude else {}
    dataset = nncf.Dataset([calib[i:i + 1] for i in range(len(calib))], lambda x: {INPUT_NAME: x})
    return nncf.quantize(model, dataset, subset_size=len(calib), fast_bias_correction=settings.fast_bias_correction,
                         advanced_parameters=advanced, **kwargs)


def _unfusable_channel_qdq(model):
    """NNCF quantizes depthwise-conv inputs per channel; onnxruntime 1.32 can fuse such a
    DequantizeLinear into a QLinearConv, which then refuses to run (its input zero point must be a
    scalar; seen on a 64 px MobileNetV3-Small). Rewrite each per-channel pair (zero points 0) feeding
    Convs as x * (1/s) -> Q/DQ(scale 1) -> * s: the same grid (x * (1/s) can round a value lying on a
    half step the other way: +0.005 AFLW2000-3D NME measured) and no DQ -> Conv edge to fuse."""
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    rewrites: dict[int, list] = {}
    for q in model.graph.node:
        dqs = consumers.get(q.output[0], [])
        scale = numpy_helper.to_array(inits[q.input[1]]) if q.op_type == "QuantizeLinear" and q.input[1] in inits else None
        zero = numpy_helper.to_array(inits[q.input[2]]) if len(q.input) > 2 and q.input[2] in inits else None
        axis = next((a.i for a in q.attribute if a.name == "axis"), 1)
        if (scale is None or scale.size < 2 or zero is None or zero.any() or axis != 1 or len(dqs) != 1
                or any(c.op_type != "Conv" for c in consumers.get(dqs[0].output[0], []))):
            continue
        base, dq = q.output[0], dqs[0]
        model.graph.initializer.extend([
            numpy_helper.from_array((1 / scale).astype(np.float32).reshape(-1, 1, 1), f"{base}_inv_scale"),
            numpy_helper.from_array(scale.astype(np.float32).reshape(-1, 1, 1), f"{base}_channel_scale"),
            numpy_helper.from_array(np.array(1, np.float32), f"{base}_unit_scale"),
            numpy_helper.from_array(np.zeros((), zero.dtype), f"{base}_scalar_zero")])
        unit = [f"{base}_unit_scale", f"{base}_scalar_zero"]
        rewrites[id(q)] = [helper.make_node("Mul", [q.input[0], f"{base}_inv_scale"], [f"{base}_in"], name=f"{q.name}_pre"),
                          helper.make_node("QuantizeLinear", [f"{base}_in", *unit], [base], name=q.name)]
        rewrites[id(dq)] = [helper.make_node("DequantizeLinear", [base, *unit], [f"{base}_out"], name=dq.name),
                           helper.make_node("Mul", [f"{base}_out", f"{base}_channel_scale"], list(dq.output),
                                            name=f"{dq.name}_post")]
    if rewrites:
        nodes = [new for node in model.graph.node for new in rewrites.get(id(node), [node])]
        del model.graph.node[:]
        model.graph.node.extend(nodes)
    return model


def quantize(model, calib: np.ndarray, settings: Int8Settings, postprocess: bool = True):
    """A static QDQ int8 copy of a float model, calibrated on ``calib`` (the graph's input batch)."""
    settings.check()
    if calib is None or len(calib) < 2:
        raise EdgefaError("ONNX int8 needs calibration crops (--calib-data)")
    tail = set(float_only_nodes(model)) if postprocess else set()
    exclude = [*tail, *float_part_nodes(model, settings.float_parts, skip=tail)]
    with _quiet():
        if settings.quantizer == "onnxruntime":
            return _quantize_ort(model, calib, exclude, settings)
        return _unfusable_channel_qdq(_quantize_nncf(model, calib, exclude, settings))


def quantize_with_fallback(model, graph, calib: np.ndarray, settings: Int8Settings = DEFAULT_INT8) -> tuple[object, dict]:
    """``settings`` on every calibration crop; the onnxruntime fallback only where NNCF is not
    installed or fails, and its MinMax twin where percentile histograms fail (a tensor with no
    spread, e.g. in an untrained model); each reason is recorded."""
    notes = {}
    for candidate in dict.fromkeys((settings, FALLBACK_INT8, replace(FALLBACK_INT8, method="minmax"))):
        try:
            quantized = quantize(model, calib, candidate, graph.postprocess)
        except EdgefaError:
            raise
        except ImportError:
            notes[candidate.quantizer] = "not installed"
            continue
        except Exception as exc:
            notes[f"{candidate.quantizer} {candidate.method}"] = f"failed: {type(exc).__name__}: {str(exc)[:120]}"
            continue
        why = f" ({', '.join(f'{k} {v}' for k, v in notes.items())})" if notes else ""
        chosen_in = {DEFAULT_INT8: "reports/onnx-int8.md", ORT_INT8: "reports/onnx-int8-mb05.md"}.get(candidate)
        why += f"; settings chosen in {chosen_in}" if chosen_in else ""
        return quantized, {"quantizer": candidate.quantizer,
                           "calibration": f"static PTQ, {len(calib)} calibration crops, {candidate.describe()}{why}"}
    raise EdgefaError(f"ONNX int8: no quantizer succeeded ({notes})")
