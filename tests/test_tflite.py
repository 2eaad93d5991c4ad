"""TFLite converter: MobileViT v2 attention rewrite, an fp32 round trip with metadata read back
and an int8 post-processing export whose landmarks follow the float graph (tiny networks, so each
test stays within a few tens of seconds on two cores). The full format x precision matrix lives
in test_export.py."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("litert_torch")

from edgefa.converters import to_tflite
from edgefa.converters.graph import ExportGraph
from edgefa.converters.parity import compare, gate, torch_outputs
from edgefa.errors import EdgefaError
from edgefa.models.registry import FaceRegressor
from edgefa.runtime import tflite as tflite_runtime


class TinyRegressor(FaceRegressor):
    """Small enough to convert in seconds; default init so outputs vary with the input."""

    input_size = 32

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                 nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
                                 nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 62))

    def forward(self, x):
        return self.net(x)


@pytest.fixture(scope="module")
def face_model():
    from edgefa.facemodel.synthetic import synthetic_face_model

    return synthetic_face_model()


@pytest.fixture(scope="module")
def crops():
    from edgefa.data.synthetic import SyntheticFaces

    ds = SyntheticFaces(n=24, seed=3)
    return np.stack([ds[i]["image"] for i in range(24)])


def test_mobilevitv2_attention_rewrite_is_exact():
    from timm.models.mobilevit import LinearSelfAttention

    from edgefa.models.timm_backbones import (
        BroadcastLinearSelfAttention,
        broadcast_linear_attention,
    )

    torch.manual_seed(0)
    original = LinearSelfAttention(embed_dim=16).eval()
    rewritten = broadcast_linear_attention(nn.Sequential(LinearSelfAttention(embed_dim=16)))[0].eval()
    rewritten.load_state_dict(original.state_dict())
    assert type(rewritten) is BroadcastLinearSelfAttention
    x = torch.randn(2, 16, 4, 9)  # (B, C, P pixels per patch, N patches)
    with torch.no_grad():
        assert torch.equal(rewritten(x), original(x))


def test_mobilevitv2_converts():
    import litert_torch

    from edgefa.models.registry import create_model

    model = create_model("mobilevitv2_050").eval()
    assert not any(type(m).__name__ == "LinearSelfAttention" for m in model.modules())
    x = torch.randn(1, 3, model.input_size, model.input_size)
    with to_tflite._quiet():
        edge = litert_torch.convert(model, (x,))
    with torch.no_grad():
        ref = model(x).numpy()
    assert np.abs(edge(x.numpy()) - ref).max() < 1e-4


def test_fp32_round_trip_with_metadata(tmp_path, face_model, crops):
    graph = ExportGraph(TinyRegressor(), face_model)
    path = tmp_path / "tiny-raw.tflite"
    meta = {"edgefa.model": "tiny", "edgefa.outputs": '{"params": "x"}', "edgefa.precision": "fp32"}
    info = to_tflite.export(graph, path, "fp32", None, meta)
    assert info["converter"].startswith("litert-torch")
    runner = tflite_runtime.load(path, threads=1)
    assert runner.metadata == meta
    assert runner.input_name == "input" and runner.output_names == ["params"]
    x = graph.prepare(crops[:5])  # batch 5 through a batch-1 file
    ref = torch_outputs(graph, x)
    got = runner.run(x)
    assert got["params"].shape == (5, 62)
    assert np.abs(got["params"] - ref["params"]).max() < 1e-4
    assert gate(compare(graph, ref, got), "fp32")[0]

    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer at all")
    with pytest.raises(EdgefaError, match="bad.tflite"):
        tflite_runtime.load(bad)


def test_int8_postprocess_keeps_geometry_float(tmp_path, face_model, crops):
    graph = ExportGraph(TinyRegressor(), face_model, postprocess=True)
    path = tmp_path / "tiny-int8.tflite"
    calib, x = graph.prepare(crops[:16]), graph.prepare(crops[16:])
    info = to_tflite.export(graph, path, "int8", calib, {"edgefa.precision": "int8"})
    assert "16 crops" in info["calibration"] and "network only" in info["calibration"]
    runner = tflite_runtime.load(path, threads=1)
    assert runner.output_names == ["landmarks", "pose", "params"]
    assert runner.input["dtype"] == np.uint8
    assert runner.metadata["edgefa.calibration"] == info["calibration"]
    # the network is integer, the landmark-basis matmul (3DMM math) is float32
    interp = runner.interpreter
    ops = interp._get_ops_details()
    assert any(interp._get_tensor_details(o["outputs"][0], 0)["dtype"] == np.int8 for o in ops)
    basis = tuple(graph.lm_basis.T.shape)
    basis_fc = [o for o in ops if o["op_name"] == "FULLY_CONNECTED"
                and tuple(interp._get_tensor_details(o["inputs"][1], 0)["shape"]) == basis]
    assert basis_fc and all(interp._get_tensor_details(o["inputs"][1], 0)["dtype"] == np.float32 for o in basis_fc)
    metrics = compare(graph, torch_outputs(graph, x), runner.run(x))
    assert metrics["nme_points_mean"] < 1.0, metrics


def conv_weight_types(interp) -> list[str]:
    """The weight type of each convolution of a TFLite file, in execution order."""
    return [np.dtype(interp._get_tensor_details(o["inputs"][1], 0)["dtype"]).name
            for o in interp._get_ops_details() if o["op_name"] == "CONV_2D"]


@pytest.mark.parametrize("parts, weights", [
    ((), ["int8", "int8", "int8"]),
    (("stem",), ["float32", "float32", "int8"]),  # the stem's output is read by the second conv: both float
])
def test_int8_float_parts(tmp_path, face_model, crops, parts, weights):
    graph = ExportGraph(TinyRegressor(), face_model, postprocess=True)
    path = tmp_path / "tiny-int8.tflite"
    info = to_tflite.export(graph, path, "int8", graph.prepare(crops[:16]), {"edgefa.precision": "int8"},
                            float_parts=parts)
    assert ("kept float: " + ", ".join(parts) in info["calibration"]) is bool(parts)
    runner = tflite_runtime.load(path, threads=1)
    assert conv_weight_types(runner.interpreter) == weights
    x = graph.prepare(crops[16:])
    assert compare(graph, torch_outputs(graph, x), runner.run(x))["nme_points_mean"] < 1.0


def test_int8_float_parts_bad_names():
    from edgefa.quantization.float_parts import parse_float_parts

    assert parse_float_parts("none") == () and parse_float_parts(" stem") == ("stem",)
    with pytest.raises(EdgefaError, match="did you mean 'stem'"):
        parse_float_parts("stm")


@pytest.mark.parametrize("int8_io", [False, True])
def test_int8_final_linear_is_float_unless_int8_io(tmp_path, face_model, crops, int8_io):
    """By default the 62-param head is a float Linear after the int8 network: one int8 scale over
    outputs of very different ranges costs accuracy. --int8-io asks for int8 ends, so then it is int8."""
    graph = ExportGraph(TinyRegressor(), face_model, postprocess=False)
    path = tmp_path / "tiny-int8.tflite"
    info = to_tflite.export(graph, path, "int8", graph.prepare(crops[:16]), {"edgefa.precision": "int8"},
                            int8_io=int8_io)
    assert ("final Linear (62 params) kept float" in info["calibration"]) is not int8_io
    interp = tflite_runtime.load(path, threads=1).interpreter
    # int8 ends need an int8 first convolution; otherwise the stem stays float by default
    assert conv_weight_types(interp) == (["int8"] * 3 if int8_io else ["float32", "float32", "int8"])
    head = [o for o in interp._get_ops_details() if o["op_name"] == "FULLY_CONNECTED"]
    assert len(head) == 1
    dtypes = {interp._get_tensor_details(head[0][k][i], 0)["dtype"] for k, i in (("inputs", 0), ("inputs", 1), ("outputs", 0))}
    assert dtypes == ({np.int8} if int8_io else {np.float32})


class TinySERegressor(FaceRegressor):
    """hard-swish and a squeeze-excite block, the MobileNetV3 pieces XNNPACK's int8 path trips on."""

    input_size = 32

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.Hardswish(),
                                  nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.Hardswish())
        self.se_reduce, self.se_expand = nn.Conv2d(16, 4, 1), nn.Conv2d(4, 16, 1)
        self.head = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.Hardswish(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 62))

    def forward(self, x):
        x = self.stem(x)
        gate = self.se_expand(torch.relu(self.se_reduce(x.mean((2, 3), keepdim=True))))
        return self.head(x * nn.functional.hardsigmoid(gate))


def test_split_hardswish_is_exact_and_leaves_the_source_alone():
    from edgefa.quantization.xnnpack_int8 import split_hardswish

    model = TinySERegressor()
    split, count = split_hardswish(model)
    assert count == 3 and sum(isinstance(m, nn.Hardswish) for m in model.modules()) == 3
    assert not any(isinstance(m, nn.Hardswish) for m in split.modules())
    x = torch.randn(2, 3, 32, 32) * 4
    assert torch.allclose(split(x), model(x), atol=1e-6)


def test_int8_hardswish_and_se_mean_run_in_xnnpack(tmp_path, face_model, crops):
    """XNNPACK has no int8 HARD_SWISH (each one ran in TFLite's own kernel and cut the delegated
    graph) and PT2EQuantizer left the squeeze-excite mean float: the file must have neither, no
    layout TRANSPOSEs, and one delegated partition for the whole network."""
    graph = ExportGraph(TinySERegressor(), face_model, postprocess=False)
    path = tmp_path / "tiny-se-int8.tflite"
    info = to_tflite.export(graph, path, "int8", graph.prepare(crops[:16]), {"edgefa.precision": "int8"},
                            float_parts=())
    assert "3 hard-swish split into int8 add/mul" in info["calibration"]
    runner = tflite_runtime.load(path, threads=1)
    x = graph.prepare(crops[16:])
    assert compare(graph, torch_outputs(graph, x), runner.run(x))["nme_points_mean"] < 1.0
    interp = runner.interpreter  # delegated by now: XNNPACK's partitions show as DELEGATE nodes
    ops = interp._get_ops_details()
    dtype = lambda o: np.dtype(interp._get_tensor_details(o["inputs"][0], 0)["dtype"]).name  # noqa: E731
    names = [o["op_name"] for o in ops]
    first_conv = names.index("CONV_2D")
    assert "HARD_SWISH" not in names and "TRANSPOSE" not in names[first_conv:], names  # (NCHW input: one before)
    assert [dtype(o) for o in ops if o["op_name"] == "MEAN"] == ["int8", "int8"]
    assert names.count("DELEGATE") == 1, names
