"""benchmarks/tflite_int8_study.py: block names, the simulated variants on a tiny network (fake-quant
in PyTorch, no conversion), the report and its one-line errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("litert_torch")

from edgefa.benchmarks import tflite_int8_study as study
from edgefa.converters.graph import ExportGraph
from edgefa.models.registry import FaceRegressor


class Tiny(FaceRegressor):
    input_size = 32

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.Hardswish(),
                                 nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 62))

    def forward(self, x):
        return self.net(x)


@pytest.mark.parametrize("path, block", [
    ("net.blocks.3.1.se.conv_reduce", "net.blocks.3.1"),
    ("net.bn1.act", "net.bn1"),
    ("dw2_1.conv_dw", "dw2_1"),
    ("net.3", "net.3"),
    ("conv1", "conv1"),
])
def test_block_of(path, block):
    assert study.block_of(path) == block


@pytest.fixture(scope="module")
def sim():
    from edgefa.data.synthetic import SyntheticFaces
    from edgefa.facemodel.synthetic import synthetic_face_model

    ds = SyntheticFaces(n=20, seed=3)
    crops = np.stack([ds[i]["image"] for i in range(20)])
    graph = ExportGraph(Tiny().eval(), synthetic_face_model(), postprocess=True).eval()
    return study.Simulator(graph, graph.prepare(crops[:12]), graph.prepare(crops[12:]))


def test_simulated_variants_quantize_what_they_say(sim):
    full = sim.drift(sim.calibrated(study._quantizer()))
    weights = sim.drift(sim.calibrated(study._quantizer(keep=("weights",))))
    everything_float = sim.drift(sim.calibrated(study._quantizer(lambda g: set(g.nodes))))
    assert full > 0 and everything_float < 1e-4 * full
    assert 0 < weights < full  # 8-bit per-channel weights alone move the points less than the whole scheme
    assert sim.block_paths()[:2] == ["net.0", "net.1"]


def test_main_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit):
        study.main([])  # neither --model nor --render
    assert "--model is required" in capsys.readouterr().err
    assert study.main(["--render", str(tmp_path / "missing.json"), "-o", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.json" in err[0]
    assert not (tmp_path / "r.md").exists()


def test_render_marks_the_choice(tmp_path):
    bins = {"[0,30]": 3.0, "(30,60]": 4.0, "(60,90]": 5.0}

    def row(name, val, p50):
        return {"variant": name, "file": f"m-{name}.tflite", "size_mb": 1.0, "convs": {"int8": 3}, "p50_ms": p50,
                "val": {"balanced": val, "bins": bins}, "eval": {"balanced": val - 2, "bins": bins},
                "delta_val": val - 6.0, "delta_eval": val - 6.0}

    record = {"command": "python x", "machine": {}, "rule": study.RULE, "target": study.TARGET,
              "data": {"calib": "c", "calib_n": 4, "val": "v", "drift_n": 2, "eval": "e"},
              "latency": {"rounds": 1, "runs": 2},
              "models": [{"model": "m", "label": "m", "chosen": "stem",
                          "simulated": {"variants": {"all int8 (the scheme)": 0.8, "weights only": 0.1},
                                        "blocks": {"net.0": 0.5, "net.1": 0.8}},
                          "rows": [row("fp32", 6.0, 1.0), row("none", 6.3, 1.4), row("stem", 6.05, 1.2)]}]}
    (tmp_path / "study.json").write_text(json.dumps(record))
    assert study.main(["--render", str(tmp_path / "study.json"), "-o", str(tmp_path / "r")]) == 0
    text = (tmp_path / "r.md").read_text()
    assert "| **stem** |" in text and "| weights only | 0.100 | 12% |" in text and "`net.0` 0.500" in text
