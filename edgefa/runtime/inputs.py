"""Crops -> what a network or an exported file takes, from an input spec: ``FaceRegressor.input_spec()``
for a PyTorch model, the ``edgefa.input`` metadata for a file. One function for training, evaluation,
export parity and the runtimes, so all of them feed a network identically."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def prepare_tensor(crops_bgr: torch.Tensor, spec: dict) -> torch.Tensor:
    """(B, S, S, 3) uint8 BGR crops (any device) -> the tensor ``spec`` describes: size (bilinear with
    half-pixel centres, as cv2.resize INTER_LINEAR for these small rescales), colour order, layout,
    dtype, mean/std."""
    x = crops_bgr.permute(0, 3, 1, 2).float()
    if spec["color"] == "RGB":
        x = x.flip(1)
    h, w = spec["size"]
    if tuple(x.shape[-2:]) != (h, w):
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
    if spec["dtype"] == "uint8":
        x = x.round().clamp(0, 255).to(torch.uint8)
    else:
        mean = torch.tensor(spec["mean"], dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(spec["std"], dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
        x = (x - mean) / std
    if spec["layout"] == "NHWC":
        x = x.permute(0, 2, 3, 1)
    return x


def prepare_input(crops_bgr: np.ndarray, spec: dict) -> np.ndarray:
    """``prepare_tensor`` for numpy crops, in numpy (what a runtime is fed)."""
    return np.ascontiguousarray(prepare_tensor(torch.from_numpy(np.ascontiguousarray(crops_bgr)), spec).numpy())
