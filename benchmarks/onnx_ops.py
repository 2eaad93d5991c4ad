"""Which operators onnxruntime really runs for an ONNX file: counts before and after its graph
optimisations (CPU provider, all levels), the onnxruntime twin of ``tflite_ops.py``.

    python benchmarks/onnx_ops.py reports/models/*.onnx [-o reports/onnx-ops]

A QDQ int8 file is only fast when onnxruntime fuses each DequantizeLinear -> Conv -> QuantizeLinear
into one QLinearConv and few conversions are left: every float operator between int8 ones (e.g. a
hard-swish with no int8 kernel) keeps a QuantizeLinear / DequantizeLinear pair around it.
"""
from __future__ import annotations

import sys
import tempfile
from collections import Counter
from pathlib import Path

from edgefa.benchmarks.tflite_ops import files_report_main

CONVERSIONS = ("QuantizeLinear", "DequantizeLinear")


def op_table(path: str | Path) -> dict:
    """Operator counts of the file and of the graph onnxruntime runs after optimising it here."""
    import onnx
    import onnxruntime as ort

    before = Counter(n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node)
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.log_severity_level = 3  # its warning about hardware-specific saved graphs is expected
        options.optimized_model_filepath = str(Path(tmp, "optimized.onnx"))
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        after = Counter(n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node)
    return {"file": str(path), "before": before, "after": after,
            "convs": before["Conv"], "fused": after["QLinearConv"],
            "conversions": sum(after[op] for op in CONVERSIONS)}


def to_markdown(tables: list[dict], command: str) -> str:
    import onnxruntime as ort

    versions = f"onnxruntime {ort.__version__}"
    lines = ["# Operators onnxruntime runs for each ONNX file", "", f"Command: `{command}`", "",
             f"Versions: {versions}. The optimised graph depends on the CPU (e.g. NCHWc layouts).", ""]
    for t in tables:
        lines += [f"## `{Path(t['file']).name}`", "",
                  f"{t['fused']} of {t['convs']} convolutions run as QLinearConv; {t['conversions']} "
                  "QuantizeLinear / DequantizeLinear left after optimisation.", "",
                  "| operator | in the file | run by onnxruntime |", "|---|---:|---:|"]
        for op in sorted(set(t["before"]) | set(t["after"]), key=lambda k: (-t["after"].get(k, 0), k)):
            lines.append(f"| {op} | {t['before'].get(op, 0)} | {t['after'].get(op, 0)} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    return files_report_main("onnx_ops", __doc__.splitlines()[0], argv, op_table, to_markdown)


if __name__ == "__main__":
    sys.exit(main())
