"""benchmarks/onnx_ops.py: which operators onnxruntime runs for an ONNX file."""
import pytest

pytest.importorskip("onnxruntime")

from edgefa.benchmarks.onnx_ops import main, op_table  # noqa: E402

INT8 = "reports/models/mb05-refined-int8.onnx"  # onnxruntime's quantizer: every conv fuses
FP32 = "reports/models/mb05-refined.onnx"


def test_int8_convs_fuse_and_float_convs_do_not():
    int8, fp32 = op_table(INT8), op_table(FP32)
    assert int8["convs"] == int8["fused"] == 27 and int8["conversions"] <= 2
    assert int8["before"]["QuantizeLinear"] > 20  # the file itself is QDQ; the fusion is onnxruntime's
    assert fp32["fused"] == 0 and fp32["conversions"] == 0 and fp32["convs"] == 27


def test_cli_writes_markdown_and_refuses_a_missing_file(tmp_path, capsys):
    assert main([INT8, "-o", str(tmp_path / "ops")]) == 0
    text = (tmp_path / "ops.md").read_text()
    assert "`mb05-refined-int8.onnx`" in text and "27 of 27 convolutions run as QLinearConv" in text
    capsys.readouterr()
    assert main([str(tmp_path / "none.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert "none.onnx: no such file" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("script", ["onnx", "tflite"])
def test_a_broken_file_or_an_unwritable_output_is_one_line(script, tmp_path, capsys):
    from edgefa.benchmarks import tflite_ops

    run = main if script == "onnx" else tflite_ops.main
    broken = tmp_path / f"broken.{script}"
    broken.write_bytes(b"not a model")
    assert run([str(broken)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"broken.{script}: not a readable model file" in err and len(err.splitlines()) == 1
    good = INT8 if script == "onnx" else "reports/models/mb05-refined-int8.tflite"
    (tmp_path / "file").write_text("")
    assert run([good, "-o", str(tmp_path / "file" / "ops")]) == 2  # its folder is a file
    err = capsys.readouterr().err.strip()
    assert "-o path is a file" in err and len(err.splitlines()) == 1
