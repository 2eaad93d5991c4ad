"""Shaping a network so LiteRT's XNNPACK delegate runs its int8 TFLite file in int8 end to end.

Measured on MobileNetV3-Small with ai-edge-litert 2.3 (``reports/compression.md``'s notes):

- XNNPACK has no int8 HARD_SWISH. Each hard-swish the converter made int8 ran in TFLite's builtin
  kernel and cut the delegated graph (13 partitions for 10 of them); the others stayed float
  behind QUANTIZE / DEQUANTIZE pairs. Written as ``x * (relu6(x + 3) * 1/6)`` it becomes int8
  ADD (RELU6 fused) and MUL ops, which XNNPACK runs: ``SplitHardswish``.
- Its constants are 1x1x1x1 tensors: as 0-d scalars they made litert-torch's layout pass wrap
  every split activation in two TRANSPOSEs (a 0-d input is not "4-D", so the op stayed NCHW).
- XNNPACK runs int8 MEAN, but PT2EQuantizer leaves ``aten.mean`` (squeeze-excite's pooling)
  unannotated, so it ran in float: ``annotate_spatial_mean`` quantizes it, its output sharing its
  input's scale as an average pooling's does.
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F


class SplitHardswish(nn.Module):
    """hard-swish as int8-quantizable ADD / RELU6 / MUL ops; equal to ``nn.Hardswish`` in float."""

    def __init__(self):
        super().__init__()
        self.register_buffer("three", torch.full((1, 1, 1, 1), 3.0), persistent=False)
        self.register_buffer("sixth", torch.full((1, 1, 1, 1), 1.0 / 6.0), persistent=False)

    def forward(self, x):
        return x * (F.relu6(x + self.three) * self.sixth)


def split_hardswish(net: nn.Module) -> tuple[nn.Module, int]:
    """(a copy of ``net`` with every ``nn.Hardswish`` module a ``SplitHardswish``, how many)."""
    net = copy.deepcopy(net)
    count = 0
    for module in list(net.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Hardswish):
                setattr(module, name, SplitHardswish())
                count += 1
    return net, count


def _is_spatial_mean(node) -> bool:
    if node.op != "call_function" or node.target != torch.ops.aten.mean.dim or not node.args:
        return False
    val = getattr(node.args[0], "meta", {}).get("val")
    dims = node.args[1] if len(node.args) > 1 else None
    if val is None or val.dim() != 4 or not dims:
        return False
    return sorted(d % 4 for d in dims) == [2, 3]


def annotate_spatial_mean(model, act_qspec) -> int:
    """Annotate every still-unannotated mean over H and W of a 4-D tensor (NCHW) for int8; returns
    how many."""
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation, SharedQuantizationSpec

    count = 0
    for node in model.graph.nodes:
        if node.meta.get("quantization_annotation") is None and _is_spatial_mean(node):
            x = node.args[0]
            node.meta["quantization_annotation"] = QuantizationAnnotation(
                input_qspec_map={x: act_qspec}, output_qspec=SharedQuantizationSpec((x, node)), _annotated=True)
            count += 1
    return count
