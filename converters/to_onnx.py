"""ONNX: dynamo export (opset 20, dynamic batch, one file) -> onnxslim -> onnx.checker; fp16 via
onnxruntime's float16 converter (float I/O kept); int8 as static QDQ, calibrated (``onnx_int8``:
NNCF with the final linear layer kept float by default, chosen by ``benchmarks/onnx_int8_study.py``).
Runs in onnxruntime with pinned threads."""
from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import torch

from edgefa.converters.onnx_int8 import float_only_nodes, int8_settings, quantize_with_fallback
from edgefa.runtime.formats import INPUT_NAME

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


def export(graph, path: Path, precision: str, calib: np.ndarray | None, metadata: dict[str, str],
           quantizer: str = "nncf") -> dict:
    """``quantizer``: the int8 recipe of a float model, a key of INT8_QUANTIZERS."""
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
        block = float_only_nodes(model) if graph.postprocess else None
        model = convert_float_to_float16(model, keep_io_types=True, node_block_list=block)
        model = _slim(_drop_fp16_round_trips(model))
    elif qat:
        info["calibration"] = qat_calibration_note(graph.net)
    elif precision == "int8":
        model, notes = quantize_with_fallback(model, graph, calib, int8_settings(quantizer))
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
