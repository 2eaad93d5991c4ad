"""benchmarks/tflite_ops.py: where an int8 TFLite file falls back to float."""
import pytest

pytest.importorskip("ai_edge_litert")

from edgefa.benchmarks.tflite_ops import main, op_table  # noqa: E402

SE_NET = "reports/models/mobilenetv3-small-int8.tflite"  # squeeze-excitation + hard-swish
RELU_NET = "reports/models/mb05-refined-int8.tflite"  # plain ReLU MobileNet-V1


def test_counts_split_the_network_from_the_float_post_processing():
    se, relu = op_table(SE_NET), op_table(RELU_NET)
    for t in (se, relu):
        assert sum(t["network"].values()) + sum(t["post"].values()) == t["ops"]
        assert any(name == "ATAN2" for name, _ in t["post"])  # the pose angles: post-processing, float
        assert not any(name == "ATAN2" for name, _ in t["network"])
        assert any("int8" in types for _, types in t["network"])
    # the SE network leaves each squeeze-excite gate (hard-sigmoid on a 1x1xC tensor) float, wrapped
    # in conversions; the ReLU network converts once, after its float stem (--int8-float stem)
    def quantize_ops(table):
        return sum(n for (name, _), n in table["network"].items() if name == "QUANTIZE")

    assert quantize_ops(se) > 10 * max(1, quantize_ops(relu))
    assert se["float_in_network"] > 5 * relu["float_in_network"]
    assert se["network"][("DEQUANTIZE", "int8")] > relu["network"].get(("DEQUANTIZE", "int8"), 0)
    # no int8 HARD_SWISH left to cut XNNPACK's graph (it has no kernel for it): both networks are one
    # delegated partition, the others sit in the float post-processing (the old file had 13 in all)
    assert not any(name == "HARD_SWISH" and "int8" in types for name, types in se["network"])
    assert se["network_partitions"] == relu["network_partitions"] == 1
    assert se["xnnpack_partitions"] == relu["xnnpack_partitions"] <= 3


def test_cli_writes_markdown_and_refuses_a_missing_file(tmp_path, capsys):
    assert main([RELU_NET, "-o", str(tmp_path / "ops")]) == 0
    text = (tmp_path / "ops.md").read_text()
    assert "`mb05-refined-int8.tflite`" in text and "| CONV_2D |" in text
    capsys.readouterr()
    assert main([str(tmp_path / "none.tflite")]) == 2
    err = capsys.readouterr().err.strip()
    assert "none.tflite: no such file" in err and len(err.splitlines()) == 1
