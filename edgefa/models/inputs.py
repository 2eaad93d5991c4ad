"""``edgefa.runtime.inputs``'s input contract for torch tensors: training, distillation, compression
and ``TorchPredictor`` feed a network exactly as the runtimes feed an exported file."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from edgefa.runtime.inputs import InputContract, apply_contract


def _interpolate(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Float NHWC -> NHWC at ``size``, bilinear with half-pixel centres (cv2 INTER_LINEAR's grid)."""
    x = F.interpolate(x.permute(0, 3, 1, 2), size=size, mode="bilinear", align_corners=False)
    return x.permute(0, 2, 3, 1)


def prepare_tensor(crops_bgr: torch.Tensor, spec: dict | InputContract) -> torch.Tensor:
    """(B, S, S, 3) uint8 BGR crops (any device) -> the tensor ``spec`` describes, on the same device."""
    return apply_contract(crops_bgr, spec, _interpolate)
