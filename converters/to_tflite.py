"""TFLite: litert-torch (PyTorch -> .tflite directly, batch 1, signature outputs named as the
graph's); fp16 as float16 conv/linear weights (ai-edge-quantizer float casting, float compute);
int8 as full-integer static PTQ with litert-torch's PT2EQuantizer (torchao prepare_pt2e /
convert_pt2e, per-channel weights) applied to ``graph.net`` only, so the uint8->float
pre-processing and the 3DMM landmark / Euler math stay float; float I/O unless ``int8_io``.
The edgefa metadata is one JSON object in the flatbuffer's own ``Model.metadata`` list (entry
``edgefa``). Runs in ai-edge-litert (XNNPACK by default), or tflite-runtime where that is all
there is."""
from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgefa.errors import EdgefaError
from edgefa.runtime.formats import INPUT_NAME
from edgefa.runtime.tflite import METADATA_NAME, interpreter, read_metadata, schema_module


class _Named(nn.Module):
    """The graph with a dict output, so the TFLite signature outputs carry the edgefa names."""

    def __init__(self, graph):
        super().__init__()
        self.wrapped = graph  # not "graph": that name is taken on the exported GraphModule
        self.names = list(graph.output_meanings)
        self.training = False  # without recursing: a pt2e GraphModule refuses .eval()

    def forward(self, input):  # the argument name becomes the signature's input name
        out = self.wrapped(input)
        return dict(zip(self.names, out if isinstance(out, tuple) else (out,)))


@contextlib.contextmanager
def _quiet():
    """litert-torch prints a progress tree per conversion; keep the CLI readable."""
    old = os.environ.get("LITERT_TORCH_SHOW_PROGRESS")
    os.environ["LITERT_TORCH_SHOW_PROGRESS"] = "n"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        if old is None:
            os.environ.pop("LITERT_TORCH_SHOW_PROGRESS", None)
        else:
            os.environ["LITERT_TORCH_SHOW_PROGRESS"] = old


def _convert(module: nn.Module, example: torch.Tensor, quant_config=None) -> bytes:
    import litert_torch

    edge = litert_torch.convert(module, sample_kwargs={INPUT_NAME: example}, quant_config=quant_config)
    return bytes(edge.model_content())


def _int8_graph(graph, calib: np.ndarray, float_output: bool = True, float_parts: tuple[str, ...] = ()):
    """(a copy of the graph whose ``net`` is the calibrated pt2e int8 network, QuantConfig, note).

    The quantizer is scoped by construction: only ``graph.net`` is exported, annotated and
    calibrated, then put back into a copy of the float graph (PT2EQuantizer's module-name/type
    filters do not match torch.export's ``nn_module_stack`` keys in this torch version)."""
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from edgefa.quantization.qat import make_quantizer
    from edgefa.quantization.xnnpack_int8 import split_hardswish

    if calib is None or len(calib) < 1:
        raise EdgefaError("TFLite int8 needs calibration crops (--calib-data)")
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(calib))
        net_in = graph._preprocess(x) if graph.postprocess else x.float()
    quantizer = make_quantizer(is_qat=False, float_output=float_output, float_parts=float_parts, int8_mean=True)
    # XNNPACK has no int8 HARD_SWISH; split, it runs as int8 ADD / MUL (quantization/xnnpack_int8.py)
    net, split = split_hardswish(graph.net)
    net = torch.export.export(net, (net_in[:1],), strict=False).module()
    net = prepare_pt2e(net, quantizer)
    with torch.no_grad():
        for i in range(len(net_in)):  # batch 1: the exported network has a static batch
            net(net_in[i:i + 1])
    net = convert_pt2e(net, fold_quantize=False)
    qgraph = copy.deepcopy(graph)
    qgraph.net = net
    scope = ("network only; uint8->float pre-processing and 3DMM landmark/pose math kept float"
             if graph.postprocess else "whole graph (the network)")
    # the 62 outputs span very different ranges: one int8 scale over them cost mb05-refined 0.14 NME
    # points on AFLW2000-3D (3.850 vs 3.707 with them float, float model 3.671). Left unannotated,
    # LiteRT runs the final Linear in float (int8 -> DEQUANTIZE -> float FC), a negligible cost
    note = (f"{len(calib)} crops, litert-torch PT2EQuantizer static int8: per-tensor affine activations "
            f"(histogram observer), per-channel symmetric weights"
            f"{'; final Linear (62 params) kept float' if float_output else ''}"
            f"{f'; {split} hard-swish split into int8 add/mul' if split else ''}"
            f"{'; kept float: ' + ', '.join(float_parts) if float_parts else ''}; {scope}")
    return qgraph, QuantConfig(pt2e_quantizer=quantizer), note


def _float_only_scopes(content: bytes, graph) -> list[str]:
    """Op scopes (output tensor names, as ai-edge-quantizer matches them) that stay float32 in
    fp16: the post-processing FULLY_CONNECTED on the face model's landmark basis, and any weight
    op whose values exceed float16's range (the converter folds de-whitening by param_std, up to
    ~1e6 for the BFM, into the last layer's weights: in float16 those become inf)."""
    if not graph.postprocess:
        return []
    interp = interpreter(content=content)
    interp.allocate_tensors()
    basis = tuple(graph.lm_basis.T.shape)  # FULLY_CONNECTED weights are (out, in)
    scopes = []
    for op in interp._get_ops_details():
        if op["op_name"] not in ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D") or len(op["inputs"]) < 2:
            continue
        weight = interp._get_tensor_details(op["inputs"][1], 0)
        try:
            too_big = float(np.abs(interp.get_tensor(op["inputs"][1])).max()) > 6.0e4
        except ValueError:  # not a constant tensor
            too_big = False
        if too_big or (op["op_name"] == "FULLY_CONNECTED" and tuple(weight["shape"]) == basis):
            scopes.append(";".join(interp._get_tensor_details(i, 0)["name"] for i in op["outputs"]) + ";")
    return scopes


def _fp16(content: bytes, graph) -> tuple[bytes, str]:
    from ai_edge_quantizer import algorithm_manager, qtyping, quantizer

    q = quantizer.Quantizer(content)
    # only the network's weight ops: ALL_SUPPORTED would also cast the face model's constants
    # (BFM landmark coordinates reach 1.3e5, beyond float16's 65504 -> inf)
    for op in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
        if hasattr(qtyping.TFLOperationName, op):
            q.add_weight_only_config(regex=".*", operation_name=getattr(qtyping.TFLOperationName, op), num_bits=16,
                                     algorithm_key=algorithm_manager.AlgorithmName.FLOAT_CASTING)
    keep = _float_only_scopes(content, graph)
    for scope in keep:  # the latest matching recipe wins
        q.update_quantization_recipe(regex=f"^{re.escape(scope)}$", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                                     algorithm_key=algorithm_manager.AlgorithmName.NO_QUANTIZE)
    out = bytes(q.quantize(enable_progress_report=False).quantized_model)
    return out, "ai-edge-quantizer float casting: float16 conv/linear weights, float32 compute" + (
        f"; {len(keep)} post-processing op(s) kept float32 (landmark basis, folded de-whitening)" if keep else "")


def _opcode(model, schema, builtin: int) -> int:
    for i, code in enumerate(model.operatorCodes):
        if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin:
            return i
    code = schema.OperatorCodeT()
    code.builtinCode, code.deprecatedBuiltinCode, code.version = builtin, min(builtin, 127), 1
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def _float_interface(model, schema) -> int:
    """Integer-quantized model inputs/outputs -> float32 ones, with a QUANTIZE op in front and a
    DEQUANTIZE op behind (what TFLite's converter emits for float I/O). litert-torch folds the
    input quantize of a network whose first op is quantized into an int8 input; this undoes it."""
    sg, changed = model.subgraphs[0], 0
    for kind in ("inputs", "outputs"):
        ends = getattr(sg, kind)
        for k, idx in enumerate(list(ends)):
            old = sg.tensors[idx]
            q = old.quantization
            if old.type == schema.TensorType.FLOAT32 or q is None or q.scale is None or not np.any(q.scale):
                continue  # float already, or a plain uint8 image input
            new = copy.copy(old)
            new.type, new.quantization, new.buffer = schema.TensorType.FLOAT32, None, 0
            old.name = bytes(old.name or b"") + b"_quantized"  # the float tensor keeps the name
            sg.tensors.append(new)
            new_idx = len(sg.tensors) - 1
            op = schema.OperatorT()
            if kind == "inputs":
                op.opcodeIndex = _opcode(model, schema, schema.BuiltinOperator.QUANTIZE)
                op.inputs, op.outputs = [new_idx], [idx]
                sg.operators.insert(0, op)
            else:
                op.opcodeIndex = _opcode(model, schema, schema.BuiltinOperator.DEQUANTIZE)
                op.inputs, op.outputs = [idx], [new_idx]
                sg.operators.append(op)
            ends[k] = new_idx
            for sig in model.signatureDefs or []:
                for entry in getattr(sig, kind) or []:
                    if entry.tensorIndex == idx:
                        entry.tensorIndex = new_idx
            changed += 1
    return changed


def _finish(content: bytes, metadata: dict[str, str], float_io: bool = False) -> bytes:
    """Embed the metadata (and, if asked, restore float I/O) in one flatbuffer rewrite."""
    from ai_edge_litert.tools import flatbuffer_utils

    schema = schema_module()
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(content))
    if float_io:
        _float_interface(model, schema)
    blob = json.dumps({k: str(v) for k, v in metadata.items()}).encode()
    model.metadata = [m for m in (model.metadata or []) if m.name not in (METADATA_NAME, METADATA_NAME.encode())]
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(blob, np.uint8)
    model.buffers.append(buffer)
    model.metadata.append(schema.MetadataT(name=METADATA_NAME, buffer=len(model.buffers) - 1))
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("litert-torch")
    except PackageNotFoundError:
        return "?"


def _dtypes(details) -> str:
    return "/".join(sorted({np.dtype(d["dtype"]).name for d in details}))


def export(graph, path: Path, precision: str, calib: np.ndarray | None, metadata: dict[str, str],
           int8_io: bool = False, float_parts: tuple[str, ...] | None = None) -> dict:
    """``float_parts``: parts of the network a calibrated int8 file keeps float (qat.py's
    ``quantization/float_parts.py``); None: ``DEFAULT_INT8_FLOAT_PARTS``, or none with ``int8_io`` (an int8
    input needs an int8 first convolution)."""
    from edgefa.quantization.float_parts import DEFAULT_INT8_FLOAT_PARTS
    from edgefa.quantization.qat import (
        is_qat,
        make_quantizer,
        qat_calibration_note,
        with_integer_net,
    )

    if precision not in ("fp32", "fp16", "int8"):
        raise EdgefaError(f"TFLite: unsupported precision '{precision}' (fp32, fp16, int8)")
    info = {"converter": f"litert-torch {_version()}", "batch": 1}
    example, float_io = graph.example_input(1), False
    with _quiet():
        if precision == "int8" and is_qat(graph.net):  # learned scales: no calibration
            from litert_torch.quantize.quant_config import QuantConfig

            info["calibration"] = qat_calibration_note(graph.net)
            with with_integer_net(graph):
                content = _convert(_Named(graph), example, QuantConfig(pt2e_quantizer=make_quantizer(is_qat=False)))
            float_io = not graph.postprocess and not int8_io
        elif precision == "int8":
            parts = (() if int8_io else DEFAULT_INT8_FLOAT_PARTS) if float_parts is None else float_parts
            # --int8-io asks for int8 tensors at both ends, so only then is the output quantized
            qgraph, quant_config, info["calibration"] = _int8_graph(graph, calib, float_output=not int8_io,
                                                                    float_parts=tuple(parts))
            content = _convert(_Named(qgraph), example, quant_config)
            # litert-torch folds the quantize/dequantize at a bare network's ends into int8 I/O;
            # float I/O (the default) puts them back as ops. A postprocess graph is uint8 in, float out.
            float_io = not graph.postprocess and not int8_io
            if int8_io and graph.postprocess:
                info["int8_io"] = "not applicable: the postprocess graph takes uint8 and outputs float math"
        else:
            content = _convert(_Named(graph), example)
            if precision == "fp16":
                content, info["fp16"] = _fp16(content, graph)
    meta = {**metadata, **({"edgefa.calibration": info["calibration"]} if "calibration" in info else {})}
    data = _finish(content, meta, float_io)
    ends = interpreter(content=data)
    info["io"] = f"{_dtypes(ends.get_input_details())} input, {_dtypes(ends.get_output_details())} outputs"
    Path(path).write_bytes(data)
    info["metadata"] = f"Model.metadata['{METADATA_NAME}'] (JSON object, {len(meta)} keys)"
    return info


def stamp(path: Path, extra: dict[str, str]) -> None:
    """Add metadata to a written file (e.g. its measured accuracy), atomically."""
    from edgefa.fileio import atomic_write_bytes

    content = Path(path).read_bytes()
    atomic_write_bytes(path, _finish(content, {**read_metadata(content), **extra}))
