"""Model size and compute: parameter count and MACs from torch's maintained FLOP counter.

``torch.utils.flop_counter.FlopCounterMode`` counts FLOPs of matmuls/convolutions (2 per
multiply-accumulate); MACs are half of that. Element-wise ops are not counted, as in thop/fvcore.
"""
from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: torch.nn.Module, input_size: int | None = None) -> int:
    """Multiply-accumulates of one forward pass on a single (1, 3, S, S) input."""
    size = int(input_size or getattr(model, "input_size", 120))
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter:
        model(torch.zeros(1, 3, size, size))
    model.train(was_training)
    return counter.get_total_flops() // 2
