"""ONNX: dynamo export (opset 20, dynamic batch, one file) -> onnxslim -> onnx.checker; fp16 via
onnxruntime's float16 converter (float I/O kept); int8 as static QDQ, calibrated, the better of
NNCF and onnxruntime ``quantize_static`` kept. Runs in onnxruntime with pinned threads."""
from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from edgefa.errors import EdgefaError
from edgefa.runtime.formats import INPUT_NAME
from edgefa.runtime.onnx import session

OPSET = 20


def _torch_to_onnx(graph, batch_dim: bool = True):
    import onnx

    example = graph.example_input(2)
    names = list(graph.output_meanings)
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                graph, (example,), dynamo=True, external_data=False, opset_version=OPSET,
                input_names=[INPUT_NAME], output_names=names, verbose=False,
                dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=1024)}} if batch_dim else None)
        program.optimize()
        return program.model_proto, "torch.onnx.export(dynamo=True)"
    except Exception as exc:  # the legacy TorchScript exporter: deprecated, kept only as a fallback
        warnings.warn(f"dynamo ONNX export failed ({type(exc).__name__}: {str(exc)[:200]}); "
                      "falling back to the legacy exporter (opset 17)", stacklevel=2)
        torch.onnx.export(graph, (example,), buf, dynamo=False, opset_version=17, input_names=[INPUT_NAME],
                          output_names=names, dynamic_axes={INPUT_NAME: {0: "batch"}, **{n: {0: "batch"} for n in names}})
        return onnx.load_from_string(buf.getvalue()), "torch.onnx.export(dynamo=False) [fallback]"


def _slim(model):
    import onnxslim

    return onnxslim.slim(model)


def _set_metadata(model, metadata: dict[str, str]):
    del model.metadata_props[:]
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, str(value)
    model.producer_name = "edgefa"
    return model


def _float_only_nodes(model) -> list[str]:
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


def _drop_fp16_round_trips(model):
    """The float16 converter routes even float32-to-float32 edges between blocked nodes through
    Cast(fp16) -> Cast(fp32), which overflows BFM-sized values (~5e4) and rounds the rest; feed
    each such second Cast's consumers the original float32 value instead (onnxslim then drops the
    dead first Cast)."""
    from onnx import TensorProto

    nodes = list(model.graph.node)
    producer = {o: n for n in nodes for o in n.output}

    def cast_to(node):
        return next((a.i for a in node.attribute if a.name == "to"), None) if node.op_type == "Cast" else None

    for node in nodes:
        first = producer.get(node.input[0]) if node.op_type == "Cast" else None
        if first is not None and cast_to(node) == TensorProto.FLOAT and cast_to(first) == TensorProto.FLOAT16:
            node.op_type = "Identity"  # keeps the output name, so graph outputs stay as they are
            node.input[0] = first.input[0]
            del node.attribute[:]
    # the converter also emits the same Cast twice for a constant shared by two nodes (Clip's
    # min/max in ReLU6), which breaks single assignment: keep the first of identical nodes
    seen, unique = set(), []
    for node in model.graph.node:
        key = tuple(node.output)
        if key in seen:
            continue
        seen.add(key)
        unique.append(node)
    if len(unique) != len(model.graph.node):
        del model.graph.node[:]
        model.graph.node.extend(unique)
    return model


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


# how each quantizer sets activation ranges (recorded in edgefa.calibration)
CALIBRATION_METHOD = {"nncf": "NNCF MinMax (activations: mean of per-crop min/max; fast bias correction)",
                      "onnxruntime": "onnxruntime quantize_static MinMax (activations: min/max over all crops)"}


class _Calibration:
    """onnxruntime's CalibrationDataReader protocol over a numpy batch."""

    def __init__(self, calib: np.ndarray):
        self.items = iter([{INPUT_NAME: calib[i:i + 1]} for i in range(len(calib))])

    def get_next(self):
        return next(self.items, None)


def _quantize_ort(model, calib: np.ndarray, exclude: list[str]):
    import tempfile

    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp, "f.onnx"), Path(tmp, "q.onnx")
        onnx.save(model, src)  # node names kept (onnxslim already folded the graph), so exclusions hold
        quantize_static(str(src), str(dst), _Calibration(calib), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=exclude or None)
        return onnx.load(dst)


def _quantize_nncf(model, calib: np.ndarray, exclude: list[str]):
    import nncf

    kwargs = {"ignored_scope": nncf.IgnoredScope(names=exclude, validate=False)} if exclude else {}
    dataset = nncf.Dataset([calib[i:i + 1] for i in range(len(calib))], lambda x: {INPUT_NAME: x})
    return nncf.quantize(model, dataset, subset_size=len(calib), **kwargs)


def _error(sess, ref: np.ndarray, x: np.ndarray) -> float:
    out = sess.run(None, {INPUT_NAME: x})[0]
    return float(np.sqrt(np.mean((out - ref) ** 2)) / (np.std(ref) + 1e-12))


def _int8(model, graph, calib: np.ndarray) -> tuple[object, dict]:
    """Quantize with both NNCF and onnxruntime; keep whichever tracks the float model better on
    crops held out of calibration (normalised RMSE of the first output)."""
    if calib is None or len(calib) < 2:
        raise EdgefaError("ONNX int8 needs calibration crops (--calib-data)")
    exclude = _float_only_nodes(model) if graph.postprocess else []
    hold = max(1, len(calib) // 5)
    fit, check = calib[:-hold], calib[-hold:]
    ref = session(model).run(None, {INPUT_NAME: check})[0]
    candidates, notes = {}, {}
    for name, fn in (("nncf", _quantize_nncf), ("onnxruntime", _quantize_ort)):
        try:
            with _quiet():
                candidates[name] = fn(model, fit, exclude)
            notes[name] = round(_error(session(candidates[name]), ref, check), 5)
        except ImportError:
            notes[name] = "not installed"
        except Exception as exc:
            notes[name] = f"failed: {type(exc).__name__}: {str(exc)[:120]}"
    scored = {k: v for k, v in notes.items() if isinstance(v, float)}
    if not scored:
        raise EdgefaError(f"ONNX int8: no quantizer succeeded ({notes})")
    best = min(scored, key=scored.get)
    return candidates[best], {"quantizer": best, "quantizer_nrmse": notes,
                              "calibration": f"static PTQ, {len(fit)} calibration crops, {CALIBRATION_METHOD[best]}; "
                                             f"per-channel int8 weights, QDQ; the better of NNCF / onnxruntime "
                                             f"on {len(check)} held-out crops"}


def export(graph, path: Path, precision: str, calib: np.ndarray | None, metadata: dict[str, str]) -> dict:
    import onnx

    from edgefa.quantization.qat import is_qat, qat_calibration_note, with_integer_net

    qat = precision == "int8" and is_qat(graph.net)
    if qat:  # learned scales: the converted pt2e graph exports straight to QDQ, no calibration
        with with_integer_net(graph, fold_weights=True):  # int8 initializers, not float + QuantizeLinear
            model, how = _torch_to_onnx(graph)
    else:
        model, how = _torch_to_onnx(graph)
    model = _slim(model)
    info = {"converter": how, "opset": OPSET if "dynamo=True" in how else 17}
    if precision == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        # the post-processing (3DMM math) stays float32; keep_io_types appends its Cast nodes at the
        # end of the node list, so onnxslim re-sorts the graph topologically
        block = _float_only_nodes(model) if graph.postprocess else None
        model = convert_float_to_float16(model, keep_io_types=True, node_block_list=block)
        model = _slim(_drop_fp16_round_trips(model))
    elif qat:
        info["calibration"] = qat_calibration_note(graph.net)
    elif precision == "int8":
        model, notes = _int8(model, graph, calib)
        info.update(notes)
    model = _set_metadata(model, {**metadata, **({"edgefa.calibration": info["calibration"]} if "calibration" in info else {})})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return info


def stamp(path: Path, extra: dict[str, str]) -> None:
    """Add metadata to a written file (e.g. its measured accuracy), atomically."""
    import onnx

    from edgefa.fileio import temp_sibling

    model = onnx.load(str(path))
    meta = {p.key: p.value for p in model.metadata_props}
    tmp = temp_sibling(path)
    onnx.save(_set_metadata(model, {**meta, **extra}), str(tmp))
    tmp.replace(path)
