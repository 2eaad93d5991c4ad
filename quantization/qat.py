"""Quantization-aware training with PyTorch 2 export quantization (torchao pt2e).

Why torchao pt2e with litert-torch's ``PT2EQuantizer`` and not coremltools' ``LinearQuantizer``:
the pt2e fake-quant graph converts (``convert_pt2e``) into Q/DQ ops that *both* the dynamo ONNX
exporter (QuantizeLinear/DequantizeLinear, run by onnxruntime) and litert-torch (full-integer
TFLite) consume with the learned scales, so one QAT run feeds the two runtimes we can run and
parity-check here. ``LinearQuantizer`` (eager module swaps) only feeds the CoreML path, which
cannot run on Linux, so its accuracy could not even be measured here. litert-torch's quantizer is
the maintained XNNPACK-style one (torchao's XNNPACKQuantizer lives in a deprecated testing module)
and is the one the TFLite PTQ path already uses, so QAT and PTQ artifacts share one scheme:
per-channel symmetric int8 weights, per-tensor affine int8 activations.

A QAT model is a ``QATRegressor``: the float model exported (dynamic batch) and prepared with
``prepare_qat_pt2e``. It is saved as tensors only: the prepared graph's state_dict (float weights,
BN statistics, observer ranges, scales / zero points) plus ``compression["qat"]`` (plain
settings); loading re-runs the same export + prepare on the rebuilt float model and loads them.

``xnnpack_int8`` (a setting, off by default): hard-swish split into int8 ADD / MUL and spatial
means quantized before the graph is prepared, the same shaping the calibrated TFLite path applies
(``xnnpack_int8.py``), so the int8 TFLite file runs in XNNPACK end to end. One checkpoint feeds both
runtimes and onnxruntime has no int8 kernels for the split ops: measured on MobileNetV3-Small, the
TFLite file went 1.25 -> 0.63 ms and the ONNX file 1.07 -> 2.86 ms (``reports/compression.md``'s
notes), so it is for TFLite targets. A checkpoint saved without the setting rebuilds unshaped.

``float_parts`` (a setting, ``stem`` in new recipes): the same parts the calibrated TFLite path keeps
float (``float_parts.py``) are left unannotated, so they train and export float in both formats
(MobileNetV3-Small: val NME 6.800 against 6.966 with the stem int8). A checkpoint saved without the
setting rebuilds all-int8.
"""
from __future__ import annotations

import contextlib
import copy

import torch
from torch import nn

from edgefa.errors import EdgefaError
from edgefa.models.architecture import register_rebuild_hook
from edgefa.models.registry import FaceRegressor
from edgefa.quantization.float_parts import float_part_nodes
from edgefa.quantization.prune import family_of

SCHEME = ("litert-torch PT2EQuantizer (torchao pt2e QAT): per-channel symmetric int8 weights, "
          "per-tensor affine int8 activations")


def drop_annotations(model, skip: set) -> None:
    """Leave the ``skip`` nodes float: no quantizer on their inputs or output. A node whose qspec is
    shared with a skipped node (the inputs of a residual add, a pooling's output) is skipped too,
    or torchao's prepare would look for a quantizer that is no longer there."""
    from torchao.quantization.pt2e.quantizer import SharedQuantizationSpec

    def shared_with(annotation):
        for spec in (annotation.output_qspec, *annotation.input_qspec_map.values()):
            if isinstance(spec, SharedQuantizationSpec):
                ref = spec.edge_or_node
                yield from (ref if isinstance(ref, tuple) else (ref,))

    annotated = [n for n in model.graph.nodes if n.meta.get("quantization_annotation") is not None]
    grown = True
    while grown:
        grown = False
        for node in annotated:
            if node not in skip and any(r in skip for r in shared_with(node.meta["quantization_annotation"])):
                skip.add(node)
                grown = True
    for node in skip:  # unannotated, not emptied: QAT's conv-bn fusion reads a conv's annotation if present
        node.meta.pop("quantization_annotation", None)


def make_quantizer(is_qat: bool = True, float_output: bool = False, float_parts: tuple[str, ...] = (),
                   float_nodes=None, int8_mean: bool = False):
    """litert-torch's PT2EQuantizer; ``float_output``: leave the network's output (the 62
    regression values) unquantized. One per-tensor int8 scale over 62 parameters of different
    ranges alone moved landmarks by 0.27 NME points (measured on the synthetic-quick model); the
    head's inputs and weights stay int8. ``float_parts``: parts of the network left float (see
    ``float_part_nodes``); ``float_nodes``: a function of the exported graph returning more nodes to
    leave float (``benchmarks/tflite_int8_study.py`` simulates such variants); ``int8_mean``: also
    quantize spatial means (squeeze-excite), which LiteRT's XNNPACK runs in int8 (xnnpack_int8.py;
    QAT follows its checkpoint's ``xnnpack_int8`` setting)."""
    from litert_torch.quantize.pt2e_quantizer import (
        PT2EQuantizer,
        get_symmetric_quantization_config,
    )

    from edgefa.quantization.xnnpack_int8 import annotate_spatial_mean

    class ScopedQuantizer(PT2EQuantizer):
        def annotate(self, model):
            model = super().annotate(model)
            if int8_mean:
                annotate_spatial_mean(model, self.global_config.input_activation)
            skip = float_part_nodes(model.graph, float_parts) | (float_nodes(model.graph) if float_nodes else set())
            drop_annotations(model, skip)
            for out in (n for n in model.graph.nodes if n.op == "output" and float_output):
                for node in out.all_input_nodes:
                    annotation = node.meta.get("quantization_annotation")
                    if annotation is not None:
                        annotation.output_qspec = None
            return model

    cls = ScopedQuantizer if float_output or float_parts or float_nodes or int8_mean else PT2EQuantizer
    return cls().set_global(get_symmetric_quantization_config(is_per_channel=True, is_qat=is_qat))


@contextlib.contextmanager
def _litert_qat_pattern_fix():
    """litert-torch 0.10's conv+bn QAT annotator hands a plain function to torchao's
    ``_get_aten_graph_module_for_pattern``, which (torchao 0.18) calls ``torch.export.export`` on
    it and fails ("Expected `mod` to be an instance of `torch.nn.Module`"); torchao's own
    quantizers wrap patterns in ``WrapperModule`` first. Do the same, only while preparing."""
    import litert_torch.quantize.pt2e_quantizer_utils as utils
    from torchao.quantization.pt2e.export_utils import WrapperModule

    original = utils._get_aten_graph_module_for_pattern

    def wrapped(pattern, *args, **kwargs):
        return original(pattern if isinstance(pattern, nn.Module) else WrapperModule(pattern), *args, **kwargs)

    utils._get_aten_graph_module_for_pattern = wrapped
    try:
        yield
    finally:
        utils._get_aten_graph_module_for_pattern = original


def _batch_norm_nodes(gm) -> list:
    return [n for n in gm.graph.nodes if n.op == "call_function" and "batch_norm" in str(n.target)
            and len(n.args) > 5 and isinstance(n.args[5], bool)]


class QATRegressor(FaceRegressor):
    """Fake-quant network: same inputs/outputs and input convention as the float model it wraps."""

    def __init__(self, float_model: FaceRegressor, settings: dict | None = None):
        super().__init__()
        from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

        for attr in ("input_size", "input_color", "input_mean", "input_std", "num_params"):
            setattr(self, attr, getattr(float_model, attr))
        self.registry_name = float_model.registry_name
        self.registry_cfg = dict(float_model.registry_cfg)
        # defaults for keys a checkpoint may predate: it rebuilds as it was trained
        self.settings = {"scheme": SCHEME, "bn_frozen": False, "float_output": True, "xnnpack_int8": False,
                         "float_parts": [], **(settings or {})}
        shaped = bool(self.settings["xnnpack_int8"])
        if shaped:
            from edgefa.quantization.xnnpack_int8 import split_hardswish

            float_model, _ = split_hardswish(float_model)
        size = int(self.input_size)
        example = (torch.zeros(2, 3, size, size),)
        batch = torch.export.Dim("batch", min=1, max=4096)
        float_model = float_model.train()  # export the training graph: BN updates its statistics
        exported = torch.export.export(float_model, example, dynamic_shapes={"x": {0: batch}}, strict=False)
        with _litert_qat_pattern_fix():
            quantizer = make_quantizer(is_qat=True, float_output=bool(self.settings["float_output"]),
                                       float_parts=tuple(self.settings["float_parts"]), int8_mean=shaped)
            self.qat = prepare_qat_pt2e(exported.module(), quantizer)
        self.compression_record = {**getattr(float_model, "compression_record", {}), "qat": self.settings}
        self.train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.qat(x)

    def train(self, mode: bool = True):
        """The exported graph refuses ``.train()``/``.eval()``: torchao rewrites its BN / dropout
        ops instead; frozen BN statistics stay frozen whatever the mode."""
        from torchao.quantization.pt2e import (
            disable_observer,
            enable_observer,
            move_exported_model_to_eval,
            move_exported_model_to_train,
        )

        self.training = mode
        (move_exported_model_to_train if mode else move_exported_model_to_eval)(self.qat)
        if self.settings["bn_frozen"]:
            self._set_bn_training(False)
        # pt2e observers would keep updating ranges in eval mode too: validation crops and the
        # export's reference pass must not move the learned scales
        self.qat.apply(enable_observer if mode and not self.settings.get("observers_frozen") else disable_observer)
        return self

    def _set_bn_training(self, training: bool) -> None:
        nodes = _batch_norm_nodes(self.qat)
        for node in nodes:
            args = list(node.args)
            args[5] = training
            node.args = tuple(args)
        if nodes:
            self.qat.recompile()

    def freeze_bn(self) -> None:
        """Use and keep the running BN statistics (the pt2e QAT tutorial's recipe): the folded
        conv weights stop moving with each batch's statistics, so late epochs fine-tune what the
        integer model will compute."""
        self.settings["bn_frozen"] = True
        self._set_bn_training(False)

    def freeze_observers(self) -> None:
        """Stop updating activation/weight ranges: scales and zero points are final from here on."""
        from torchao.quantization.pt2e import disable_observer

        self.qat.apply(disable_observer)
        self.settings["observers_frozen"] = True

    def converted(self, fold_weights: bool = False) -> nn.Module:
        """The integer-op graph (quantize / dequantize around each op) with the learned scales;
        ``fold_weights``: weights stored as int8 constants (ONNX: int8 initializers, 4x smaller
        files) instead of float weights behind a quantize op (what litert-torch expects)."""
        from torchao.quantization.pt2e import move_exported_model_to_eval
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

        gm = copy.deepcopy(self.qat)
        move_exported_model_to_eval(gm)
        return convert_pt2e(gm, fold_quantize=fold_weights)


def is_qat(model) -> bool:
    return isinstance(model, QATRegressor)


# families whose training-mode forward returns a dict of training-only outputs (or runs a
# least-squares fit): the exported training graph would carry them into the integer model
UNSUPPORTED_FAMILIES = ("query_decoder", "dense")


def prepare_qat(float_model: FaceRegressor, settings: dict | None = None) -> QATRegressor:
    """Rebuild step and fresh start alike: the same export + prepare on the same architecture
    gives the same state_dict keys, so saved tensors load back exactly."""
    if family_of(float_model) in UNSUPPORTED_FAMILIES:
        raise EdgefaError(f"QAT of '{float_model.registry_name}' is not supported: its training-mode outputs "
                          "(decoder branch / dense points) are not a plain regression; use PTQ "
                          "(edgefa export --precision int8 --calib-data ...)")
    settings = dict(settings or {})
    frozen = settings.pop("bn_frozen", False)
    model = QATRegressor(float_model, settings)
    if frozen:
        model.freeze_bn()
    return model


def stage_hook(freeze_bn_after: int | None, freeze_observers_after: int | None):
    """Trainer callback run at the start of each (0-based) epoch: BN statistics frozen once
    ``freeze_bn_after`` epochs are done, observers once ``freeze_observers_after`` are."""

    def hook(model: QATRegressor, epoch: int) -> None:
        if freeze_bn_after is not None and epoch >= freeze_bn_after and not model.settings["bn_frozen"]:
            model.freeze_bn()
            print(f"epoch {epoch + 1}: BN statistics frozen", flush=True)
        if freeze_observers_after is not None and epoch >= freeze_observers_after:
            if not model.settings.get("observers_frozen"):
                print(f"epoch {epoch + 1}: observers frozen (scales final)", flush=True)
            model.freeze_observers()  # idempotent; re-applied after a resume

    return hook


@contextlib.contextmanager
def with_integer_net(graph, fold_weights: bool = False):
    """Inside: ``graph.net`` is the QAT model's converted integer-op graph (the exporters trace
    that); after: the fake-quant model again, the parity reference."""
    qat_model = graph.net
    graph.net = qat_model.converted(fold_weights)
    try:
        yield graph
    finally:
        graph.net = qat_model


def qat_calibration_note(model: QATRegressor) -> str:
    """``edgefa.calibration`` of a QAT artifact: no calibration crops, scales learned in training."""
    s = model.settings
    return (f"none (quantization-aware training: scales learned over {s.get('epochs', '?')} epoch(s) from "
            f"{s.get('source', '?')}; BN frozen after {s.get('freeze_bn_after')}, observers after "
            f"{s.get('freeze_observers_after')}); {s['scheme']}"
            + ("; network output (62 params) kept float" if s.get("float_output") else "")
            + (f"; kept float: {', '.join(s['float_parts'])}" if s.get("float_parts") else ""))


# checkpoints of QAT models rebuild through this (edgefa.models.architecture sits below us)
register_rebuild_hook("qat", prepare_qat)
