"""Network parts an int8 file keeps float, for both pt2e paths: the calibrated TFLite export
(``--int8-float``) and quantization-aware training (``qat.float_parts``), so a part means the same
nodes in both. No torch import: recipes check the names before anything heavy loads.

The ONNX int8 path quantizes an ONNX graph instead and has its own table (``converters/onnx_int8.py``'s
``FLOAT_PARTS``: there "stem" is the first convolution only).
"""
from __future__ import annotations

from edgefa.errors import unknown_name_error

# network parts a calibrated int8 TFLite file (and a QAT model, ``float_parts``) can keep float
INT8_FLOAT_PARTS = {
    "stem": "the first convolution, its activation and the layer that reads them, so the stem's "
            "output is never quantized (one per-tensor int8 scale over MobileNetV3-Small's 16 stem "
            "channels, ranges 0.2-19, was most of its int8 loss: reports/tflite-int8.md)",
}
# what --int8-float means when not given: measured on both shipped networks (reports/tflite-int8.md)
DEFAULT_INT8_FLOAT_PARTS = ("stem",)


def parse_float_parts(text, what: str = "--int8-float") -> tuple[str, ...]:
    """``--int8-float`` / ``qat.float_parts``: ``none``, or a comma list (or YAML list) of
    INT8_FLOAT_PARTS names; ``what`` names the argument in the error."""
    items = text if isinstance(text, (list, tuple)) else ([] if text is None else str(text).split(","))
    parts = tuple(str(p).strip() for p in items if str(p).strip())
    if parts in ((), ("none",)):
        return ()
    for part in parts:
        if part not in INT8_FLOAT_PARTS:
            raise unknown_name_error(f"{what} part", part, [*INT8_FLOAT_PARTS, "none"])
    return parts


def _is_compute(node) -> bool:
    """A convolution or a fully connected layer of an exported (aten) graph."""
    return node.op == "call_function" and any(k in str(node.target) for k in ("conv", "linear", "addmm"))


def float_part_nodes(graph, parts) -> set:
    """The nodes of an exported network's graph that ``parts`` (INT8_FLOAT_PARTS names) cover.
    A part is a float run from the network's input on: the converter keeps an op float only when
    nothing quantized feeds it (an op between a dequantize and a quantize becomes int8 again)."""
    nodes = list(graph.nodes)
    picked = set()
    if "stem" in parts:
        compute = [i for i, n in enumerate(nodes) if _is_compute(n)]
        picked |= set(nodes[compute[0]:compute[min(1, len(compute) - 1)] + 1]) if compute else set()
    return picked
