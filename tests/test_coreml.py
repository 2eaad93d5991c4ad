"""CoreML converter: a few small exports checked through the spec (the runtime is macOS-only)."""
from __future__ import annotations

import json
import platform

import numpy as np
import pytest

pytest.importorskip("coremltools")

from edgefa.converters import to_coreml
from edgefa.converters.graph import ExportGraph
from edgefa.errors import EdgefaError
from edgefa.models.registry import create_model
from edgefa.runtime import coreml as coreml_runtime

ON_MAC = platform.system() == "Darwin"


def _size(path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


@pytest.fixture(scope="module")
def model():
    # a narrow MobileNetV1 at 64 px: every op type of the real one, seconds to convert
    return create_model("mobilenet_v1_3ddfa", widen_factor=0.25, input_size=64)


@pytest.fixture(scope="module")
def exports(tmp_path_factory, model, toy_face_model):
    """(graph, path, info) per key, converted once for the module."""
    out = tmp_path_factory.mktemp("coreml")
    cache = {}

    def get(postprocess: bool, precision: str):
        key = (postprocess, precision)
        if key not in cache:
            graph = ExportGraph(model, toy_face_model, postprocess=postprocess)
            path = out / f"{'post' if postprocess else 'raw'}-{precision}.mlpackage"
            meta = {"edgefa.model": "mobilenet_v1_3ddfa", "edgefa.precision": precision, "edgefa.version": "0.test",
                    "edgefa.input": json.dumps(graph.input_spec()), "edgefa.outputs": json.dumps(graph.output_meanings)}
            cache[key] = graph, path, to_coreml.export(graph, path, precision, None, meta)
        return cache[key]

    return get


def test_fp16_bare_metadata_roundtrip(exports):
    graph, path, _ = exports(False, "fp16")
    runner = coreml_runtime.load(path)
    assert runner.input_name == "input" and runner.output_names == ["params"]
    assert runner.metadata["edgefa.model"] == "mobilenet_v1_3ddfa"
    assert runner.metadata["edgefa.precision"] == "fp16"
    assert json.loads(runner.metadata["edgefa.input"]) == graph.input_spec()  # bare input unchanged
    spec = runner.model.get_spec()
    assert spec.description.metadata.author == "edgefa"
    assert spec.description.metadata.versionString == "0.test"
    assert "whitened" in spec.description.output[0].shortDescription
    check = to_coreml.validate(path, graph)
    assert check["ok"], check["problems"]
    assert check["network_weights"] == "float16"


def test_postprocess_validates_with_float_tail(exports):
    graph, path, info = exports(True, "fp16")
    check = to_coreml.validate(path, graph)
    assert check["ok"], check["problems"]
    assert [(o["name"], o["shape"]) for o in check["outputs"]] == [
        ("landmarks", [1, 68, 3]), ("pose", [1, 3]), ("params", [1, 62])]
    assert check["inputs"] == [{"name": "input", "shape": [1, graph.crop_size, graph.crop_size, 3], "dtype": "float32"}]
    # no uint8 tensors in Core ML: the file says float32 0..255
    meta = json.loads(coreml_runtime.load(path).metadata["edgefa.input"])
    assert meta["dtype"] == "float32" and meta["layout"] == "NHWC" and info["input_spec"] == meta
    assert check["weights"].get("postprocess_float32", 0) > 0  # landmark basis kept in float32
    assert "atan2" not in check["ops"] and check["ops"]["atan"] == 4  # the exact lowering, 4 atan2 calls
    assert "cast" in check["ops"]  # fp16 network -> fp32 post-processing boundary


@pytest.mark.parametrize("precision,op_type", [("int8", "constexpr_affine_dequantize"),
                                                ("palette4", "constexpr_lut_to_dense"),
                                                ("sparse50", "constexpr_sparse_to_dense")])
def test_weight_compression_is_real(exports, precision, op_type):
    _, fp16, _ = exports(False, "fp16")
    graph, path, _ = exports(False, precision)
    check = to_coreml.validate(path, graph)
    assert check["ok"], check["problems"]
    assert check["ops"].get(op_type, 0) > 0
    assert _size(path) < 0.7 * _size(fp16)


def test_not_a_package_is_an_error(tmp_path):
    bogus = tmp_path / "model.mlpackage"
    bogus.write_text("not a model")
    with pytest.raises(EdgefaError, match="model.mlpackage"):
        coreml_runtime.load(bogus)


@pytest.mark.skipif(ON_MAC, reason="Linux/Windows behaviour; macOS runs the parity test")
def test_run_needs_macos(exports):
    graph, path, _ = exports(False, "fp16")
    runner = coreml_runtime.load(path)
    with pytest.raises(EdgefaError, match="only on macOS"):
        runner.run(graph.example_input(1).numpy())


@pytest.mark.skipif(not ON_MAC, reason="Core ML predict runs only on macOS")
def test_parity_on_macos(exports):
    from edgefa.converters.parity import compare, gate, torch_outputs

    graph, path, _ = exports(True, "fp32")
    x = np.random.default_rng(0).integers(0, 256, (4, graph.crop_size, graph.crop_size, 3), dtype=np.uint8)
    metrics = compare(graph, torch_outputs(graph, x), coreml_runtime.load(path).run(x))
    assert gate(metrics, "fp32")[0], metrics


def test_atan2_lowering_matches_torch():
    import torch

    y, x = torch.randn(2, 100_000)
    values = torch.tensor([0.0, 1e-30, -1e-30, 0.5, -0.5, 1.0, -1.0, 1e30, -1e30])
    gy, gx = torch.meshgrid(values, values, indexing="ij")
    for a, b in ((y, x), (gy, gx), (y, x * 1e-6)):
        assert torch.allclose(to_coreml._atan2(a, b), torch.atan2(a, b), atol=3e-7, rtol=0)


def test_exported_program_matches_graph(model, toy_face_model):
    """What coremltools converts (torch.export + our atan2 lowering) computes what the graph does."""
    import torch

    graph = ExportGraph(model, toy_face_model, postprocess=True)
    program, _ = to_coreml._exported_program(graph)
    x = torch.randint(0, 256, (1, graph.crop_size, graph.crop_size, 3)).float()
    with torch.no_grad():
        for got, want in zip(program.module()(x), graph(x)):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)
