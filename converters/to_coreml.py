"""CoreML: ``torch.export`` -> coremltools ``mlprogram`` (.mlpackage, iOS 16 / macOS 13 and newer).

- fp32: float32 weights and compute. fp16: float16 weights and compute in the network; the
  post-processing (de-whitening, 3DMM landmarks, Euler angles) stays float32 (BFM vertex
  coordinates reach 1.3e5 > fp16's 65504 and param_mean has 1e-7 entries). int8 / palette6 /
  palette4: weight-only compression (``linear_quantize_weights`` int8 symmetric per-channel,
  ``palettize_weights`` kmeans 6/4-bit per-tensor) applied to the fp16 program; activations run
  in fp16, the landmark basis is left uncompressed. No calibration data is used.
- sparse50: unstructured magnitude pruning of the weights to 50 % zeros (``prune_weights``), stored
  as Core ML sparse constants (bitmask + non-zeros): a smaller file, the one target where
  unstructured sparsity pays; it changes neither MACs nor latency on CPU runtimes (ONNX / TFLite
  run dense kernels), so it exists for CoreML only. Accuracy is not fine-tuned back: check it on macOS.
- Inputs and outputs are float32. A post-processing graph takes an NHWC crop as **float32 0..255**:
  a Core ML MLMultiArray has no uint8 type (FLOAT32/FLOAT16/DOUBLE/INT32; INT8 from iOS 26) and
  coremltools' torch.export frontend has no torch.uint8 mapping; ``edgefa.input`` says so.
- ``aten.atan2`` is decomposed here (``_atan2``): coremltools' own lowering returns 0 instead of pi
  for atan2(0, x<0).
- Runs (``predict``) only on macOS; on Linux ``validate`` checks the spec (I/O, ops, weights).
"""
from __future__ import annotations

import json
import math
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from edgefa.errors import EdgefaError
from edgefa.runtime.coreml import coremltools_module, open_model, quiet
from edgefa.runtime.formats import INPUT_NAME

DEPLOYMENT_TARGET = "iOS16"  # spec 7 / macOS 13: mlprogram with int8 and LUT weight compression
PRECISIONS = ("fp32", "fp16", "int8", "palette6", "palette4", "sparse50")
COMPRESSED = ("int8", "palette6", "palette4", "sparse50")  # weight-only, applied to the fp16 program
NEEDS_MACOS = "predict / parity / latency (Core ML framework: macOS only)"
_CONSTEXPR = {"constexpr_affine_dequantize": "int8", "constexpr_blockwise_shift_scale": "int8",
              "constexpr_lut_to_dense": "palettized", "constexpr_sparse_to_dense": "sparse"}


def _atan2(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """atan2 from atan + select, exact quadrants (atan(y/x) is as accurate as atan2 itself: the
    ratio's relative error becomes at most half as much absolute error in radians). Differs from
    torch only on signed zeros: (-0, x<0) gives +pi (torch -pi, the same angle), (+-0, -0) gives 0."""
    base = torch.atan(y / (x + (x == 0).to(x.dtype)))  # x == 0 -> divide by 1, the result is unused
    left = torch.where(y < 0, base - math.pi, base + math.pi)
    return torch.where(x > 0, base, torch.where(x < 0, left, torch.sign(y) * (math.pi / 2)))


def _exported_program(graph):
    example = graph.example_input(1)
    if graph.postprocess:  # no uint8 tensors in Core ML: the same graph traced on float 0..255
        example = example.to(torch.float32)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(graph, (example,))
        # ATen dialect for coremltools; atan2 -> our exact lowering, every other op kept as is
        return program.run_decompositions({torch.ops.aten.atan2.default: _atan2}), example


def _input_vars(op):
    for value in op.inputs.values():
        yield from (value if isinstance(value, (list, tuple)) else [value])


def _tail(ops, is_std) -> set[int]:
    """ids of the ops (in program order) downstream of the de-whitening constant ``param_std``."""
    tail: set[int] = set()
    for op in ops:
        if op.op_type != "const" and any(is_std(v) or (v.op is not None and id(v.op) in tail) for v in _input_vars(op)):
            tail.add(id(op))
    return tail


class _NetworkOnly:
    """``op_selector`` for FP16ComputePrecision: True (fp16) for every op but the post-processing tail."""

    def __init__(self, param_std: np.ndarray | None):
        self.param_std = None if param_std is None else np.asarray(param_std, np.float32).ravel()
        self.ops, self.tail = None, None

    def is_std(self, var) -> bool:
        if self.param_std is None or var.op is None or var.op.op_type != "const":
            return False
        val = var.op.val.val
        return "param_std" in var.op.name or (isinstance(val, np.ndarray) and val.size == self.param_std.size
                                              and np.array_equal(val.ravel(), self.param_std))

    def __call__(self, op) -> bool:
        if self.tail is None:  # first call, before the pass changes anything; self.ops keeps the ids unique
            self.ops = list(op.enclosing_block.operations)
            self.tail = _tail(self.ops, self.is_std)
        return id(op) not in self.tail


def _tail_consts(prog, param_std) -> list[str]:
    """Float constants (>= 64 values: the landmark basis and mean) the post-processing reads."""
    ops = list(prog.functions["main"].operations)
    tail = _tail(ops, _NetworkOnly(param_std).is_std)
    return sorted({v.op.name for op in ops if id(op) in tail for v in _input_vars(op)
                   if v.op is not None and v.op.op_type == "const" and isinstance(v.op.val.val, np.ndarray)
                   and v.op.val.val.dtype.kind == "f" and v.op.val.val.size >= 64})


def _compress(ct, model, precision: str, keep: list[str]):
    opt = ct.optimize.coreml
    if precision == "int8":
        op_config = opt.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel")
        fn, how = opt.linear_quantize_weights, "int8 linear symmetric per-channel weights on the fp16 program"
    elif precision.startswith("sparse"):
        sparsity = int(precision.removeprefix("sparse")) / 100
        op_config = opt.OpMagnitudePrunerConfig(target_sparsity=sparsity)
        fn, how = opt.prune_weights, (f"{sparsity:.0%} unstructured magnitude-sparse weights on the fp16 program "
                                      "(smaller file; no speed-up on CPU runtimes)")
    else:
        nbits = int(precision.removeprefix("palette"))
        op_config = opt.OpPalettizerConfig(mode="kmeans", nbits=nbits, granularity="per_tensor")
        fn, how = opt.palettize_weights, f"{nbits}-bit kmeans palettized weights (per-tensor LUT) on the fp16 program"
    config = opt.OptimizationConfig(global_config=op_config, op_name_configs={name: None for name in keep})
    with quiet():
        return fn(model, config), how


def export(graph, path: Path, precision: str, calib: np.ndarray | None, metadata: dict[str, str],
           deployment_target: str = DEPLOYMENT_TARGET) -> dict:
    """``calib`` is unused: CoreML int8 / palettes compress weights only (no activation ranges)."""
    path = Path(path)
    if path.suffix != ".mlpackage":
        raise EdgefaError(f"{path}: a CoreML ML program is saved as a folder ending in .mlpackage")
    if precision not in PRECISIONS:
        raise EdgefaError(f"CoreML precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    ct = coremltools_module()
    program, example = _exported_program(graph)
    names = list(graph.output_meanings)
    param_std = graph.param_std.numpy() if graph.postprocess else None
    selector = _NetworkOnly(param_std)
    fp32 = precision == "fp32"
    with quiet():
        model = ct.convert(
            program, convert_to="mlprogram", minimum_deployment_target=getattr(ct.target, deployment_target),
            inputs=[ct.TensorType(name=INPUT_NAME, shape=tuple(example.shape), dtype=np.float32)],
            outputs=[ct.TensorType(name=n, dtype=np.float32) for n in names],
            compute_precision=ct.precision.FLOAT32 if fp32 else ct.transform.FP16ComputePrecision(op_selector=selector))
    if not fp32 and graph.postprocess and not selector.tail:
        raise EdgefaError("CoreML fp16: cannot find the de-whitening constant (param_std) in the post-processing graph")
    info = {"converter": f"torch.export -> coremltools {ct.__version__} mlprogram",
            "deployment_target": deployment_target,
            "compute_precision": "float32" if fp32 else "float16 network" + (", float32 post-processing" if graph.postprocess else "")}
    if precision in COMPRESSED:
        keep = _tail_consts(model._mil_program, param_std) if graph.postprocess else []
        model, info["weights"] = _compress(ct, model, precision, keep)
        if keep:
            info["uncompressed"] = keep
    spec_in, meta = graph.input_spec(), dict(metadata)
    if precision in COMPRESSED:  # every compressed file says how it was calibrated
        meta["edgefa.calibration"] = f"none: weight-only compression ({info['weights']}), float activations"
    if graph.postprocess:  # the file's input is float32 holding 0..255, not uint8
        spec_in = info["input_spec"] = {**spec_in, "dtype": "float32", "value_range": [0, 255]}
        meta["edgefa.input"] = json.dumps(spec_in)
    for key, value in meta.items():
        model.user_defined_metadata[key] = str(value)
    kind = "landmarks + pose + params" if graph.postprocess else "whitened 3DMM params"
    model.short_description = (f"edgefa 3D face alignment: {meta.get('edgefa.model', 'model')} -> {kind} "
                               f"({precision}, face model {graph.face_model_name})")
    model.author = "edgefa"
    model.version = str(meta.get("edgefa.version", ""))
    crop = f"{spec_in['color']} crop {spec_in['size'][0]}x{spec_in['size'][1]}"
    model.input_description[INPUT_NAME] = (f"{crop}, NHWC float32 pixel values 0..255" if graph.postprocess else
                                           f"{crop}, NCHW float32 (pixel - mean) / std, see edgefa.input")
    for name, meaning in graph.output_meanings.items():
        model.output_description[name] = meaning
    with quiet():
        model.save(str(path))
    return info


def _spec_ops(block):
    for op in block.operations:
        yield op
        for inner in op.blocks:
            yield from _spec_ops(inner)


def _feature(desc) -> dict:
    from coremltools.proto import FeatureTypes_pb2

    arr = desc.type.multiArrayType
    return {"name": desc.name, "shape": [int(v) for v in arr.shape],
            "dtype": FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name(arr.dataType).lower()}


def _weights(ops, tail: set[str]) -> dict[str, int]:
    """Weight elements (tensors of >= 64 values) per storage kind; the post-processing's apart."""
    from coremltools.proto import MIL_pb2

    kinds: Counter = Counter()
    types = {o.name: o.type.tensorType for op in ops for o in op.outputs}
    for op in ops:
        out = op.outputs[0].type.tensorType if op.outputs else None
        size = int(np.prod([d.constant.size for d in out.dimensions])) if out is not None else 0
        if (op.type != "const" and op.type not in _CONSTEXPR) or size < 64:
            continue
        kind = _CONSTEXPR.get(op.type) or MIL_pb2.DataType.Name(out.dataType).lower()
        if op.type == "constexpr_lut_to_dense":  # the LUT: an attribute up to iOS17, an input from iOS18
            if "lut" in op.attributes:
                lut = op.attributes["lut"].type.tensorType
            else:
                arg = op.inputs["lut"].arguments[0]
                lut = types[arg.name] if arg.name else arg.value.type.tensorType
            kind = f"palettized_{int(math.log2(lut.dimensions[-2 if len(lut.dimensions) > 1 else -1].constant.size))}bit"
        kinds[("postprocess_" if op.outputs[0].name in tail else "") + kind] += size
    return dict(kinds)


EXPECTED_WEIGHTS = {"fp32": "float32", "fp16": "float16", "int8": "int8", "palette6": "palettized_6bit",
                    "palette4": "palettized_4bit", "sparse50": "sparse"}


def validate(path: str | Path, graph) -> dict:
    """What Linux can check: I/O names, shapes and dtypes against the graph; the MIL op counts, each
    op type registered in coremltools' MIL op registry for an opset <= the file's deployment target;
    the network weights' storage as ``edgefa.precision`` says (fp16 / int8 / palettized); a float32
    post-processing tail. Running the file (predict, parity, latency) needs macOS."""
    from coremltools.converters.mil.mil.ops.registry import SSAOpRegistry
    from coremltools.proto import MIL_pb2

    ct = coremltools_module()
    spec = open_model(Path(path), runtime=False).get_spec()
    inputs = [_feature(d) for d in spec.description.input]
    outputs = [_feature(d) for d in spec.description.output]
    example = graph.example_input(1).to(torch.float32)
    with torch.no_grad():
        ref = graph(example)
    ref = ref if isinstance(ref, tuple) else (ref,)
    want_in = [{"name": INPUT_NAME, "shape": list(example.shape), "dtype": "float32"}]
    want_out = [{"name": n, "shape": list(r.shape), "dtype": "float32"} for n, r in zip(graph.output_meanings, ref)]
    problems = [f"{what} {got} != expected {want}" for what, got, want in
                (("inputs", inputs, want_in), ("outputs", outputs, want_out)) if got != want]
    result = {"ok": False, "inputs": inputs, "outputs": outputs, "problems": problems, "needs_macos": NEEDS_MACOS}
    if not spec.HasField("mlProgram"):
        return {**result, "problems": problems + ["not an ML program"]}
    func = spec.mlProgram.functions["main"]
    ops = list(_spec_ops(func.block_specializations[func.opset]))
    counts = Counter(op.type for op in ops)
    target = ct.target(spec.specificationVersion)
    for op_type in sorted(counts):
        versions = SSAOpRegistry.core_ops.get(op_type)
        if not versions:
            problems.append(f"op {op_type}: not a Core ML MIL op")
        elif min(versions) > target:
            problems.append(f"op {op_type}: needs {min(versions).name}, the file targets {target.name}")
    tail_vars, tail_consts = set(), set()  # everything downstream of the de-whitening must be float32
    if graph.postprocess:
        tail_vars = {o.name for op in ops if op.type == "const" for o in op.outputs if "param_std" in o.name}
        if not tail_vars:
            problems.append("post-processing: no param_std constant found")
        for op in ops:
            args = {a.name for arg in op.inputs.values() for a in arg.arguments if a.name}
            if op.type != "const" and args & tail_vars:
                tail_vars |= {o.name for o in op.outputs}
                tail_consts |= args
                problems += [f"post-processing op {op.type} {o.name} runs in float16" for o in op.outputs
                             if o.type.tensorType.dataType == MIL_pb2.DataType.FLOAT16]
    weights = _weights(ops, tail_consts)
    network = {k: v for k, v in weights.items() if not k.startswith("postprocess_")}
    stored = max(network, key=network.get) if network else "none"
    precision = spec.description.metadata.userDefined.get("edgefa.precision")
    if precision is not None and EXPECTED_WEIGHTS.get(precision) != stored:
        problems.append(f"edgefa.precision {precision}: expected {EXPECTED_WEIGHTS.get(precision)} network weights, "
                        f"most are {stored}")
    return {**result, "ok": not problems, "deployment_target": target.name, "spec_version": spec.specificationVersion,
            "ops": dict(counts.most_common()), "weights": weights, "network_weights": stored}
