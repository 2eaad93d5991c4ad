"""benchmarks/interleaved.py: every file timed in turn per round, ratios against the first; a bad
path is one error line. Tiny ONNX files (a few ms of work in all)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edgefa.benchmarks.interleaved import crop_for, interleaved, main

onnx = pytest.importorskip("onnxruntime")


def _onnx(path, width: int):
    net = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 62)).eval()
    torch.onnx.export(net, torch.zeros(1, 3, 32, 32), str(path), input_names=["input"], dynamo=False)
    return str(path)


def test_ratios_are_against_the_first_file_and_a_heavier_file_is_slower(tmp_path):
    small, big = _onnx(tmp_path / "small.onnx", 4), _onnx(tmp_path / "big.onnx", 128)
    rows = interleaved([small, big, small], rounds=3, runs=20, warmup=2)
    assert [r["file"] for r in rows] == [small, big, small]
    assert rows[0]["ratio"] == 1.0 and rows[0]["ratio_min"] == rows[0]["ratio_max"] == 1.0
    assert rows[1]["ratio"] > 2.0  # 128 channels of 3x3 conv at 32x32 against 4
    assert rows[1]["ratio_min"] <= rows[1]["ratio"] <= rows[1]["ratio_max"]


def test_crop_follows_the_declared_input():
    class Runner:
        input_shape, input_dtype = [None, 120, 120, 3], "uint8"

    x = crop_for(Runner())
    assert x.shape == (1, 120, 120, 3) and x.dtype == np.uint8 and x.max() > 0


def test_missing_file_is_one_line(tmp_path, capsys):
    small = _onnx(tmp_path / "small.onnx", 4)
    assert main([small, str(tmp_path / "none.onnx"), "--rounds", "1", "--runs", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "none.onnx: file not found" in err and len(err.splitlines()) == 1
