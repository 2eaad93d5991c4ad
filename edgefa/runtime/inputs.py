"""Crops -> what a network or an exported file takes, from an input spec: ``FaceRegressor.input_spec()``
for a PyTorch model, the ``edgefa.input`` metadata for a file. The contract (size, colour order,
layout, dtype, mean/std) is read and applied here once, for numpy arrays (the runtimes: no torch) and
torch tensors (``edgefa.models.inputs.prepare_tensor``: training, evaluation, export parity) alike,
so all of them feed a network identically; only the resize step is library-specific."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
from array_api_compat import array_namespace, device

from edgefa.errors import EdgefaError

CHOICES = {"layout": ("NCHW", "NHWC"), "dtype": ("float32", "uint8"), "color": ("RGB", "BGR")}


@dataclass(frozen=True)
class InputContract:
    """A parsed input spec: what the network takes, for (B, H, W, 3) uint8 BGR crops."""

    size: tuple[int, int]  # (height, width)
    layout: str
    dtype: str
    color: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def read(cls, spec: dict | InputContract) -> InputContract:
        """The spec dict checked: a damaged ``edgefa.input`` is one clear line, not a shape error later."""
        if isinstance(spec, InputContract):
            return spec
        try:
            for key, options in CHOICES.items():
                if spec[key] not in options:
                    raise ValueError(f"{key} {spec[key]!r} is not one of {', '.join(options)}")
            size, mean, std = (tuple(spec[key]) for key in ("size", "mean", "std"))
            if len(size) != 2 or not all(int(n) == n and n > 0 for n in size):
                raise ValueError(f"size {list(size)} is not [height, width] in pixels")
            if len(mean) != 3 or len(std) != 3 or not all(float(s) != 0 for s in std):
                raise ValueError(f"mean {list(mean)} / std {list(std)} are not 3 numbers each (std non-zero)")
        except (KeyError, TypeError, ValueError) as exc:
            detail = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
            raise EdgefaError(f"input spec {spec!r}: {detail}") from None
        return cls((int(size[0]), int(size[1])), spec["layout"], spec["dtype"], spec["color"], tuple(map(float, mean)), tuple(map(float, std)))


def apply_contract(crops_bgr, spec: dict | InputContract, resize: Callable):
    """(B, H, W, 3) uint8 BGR crops, a numpy array or a torch tensor (array API: same library, same
    device out) -> the input ``spec`` describes. ``resize(x, (h, w))`` rescales float NHWC crops
    (bilinear, half-pixel centres) when their size is not the spec's."""
    contract = InputContract.read(spec)
    xp = array_namespace(crops_bgr)
    x = xp.astype(crops_bgr, xp.float32)
    if contract.color == "RGB":
        x = xp.flip(x, axis=-1)
    if tuple(x.shape[1:3]) != contract.size:
        x = resize(x, contract.size)
    if contract.dtype == "uint8":
        x = xp.astype(xp.clip(xp.round(x), 0, 255), xp.uint8)
    else:
        mean = xp.asarray(contract.mean, dtype=xp.float32, device=device(x))
        std = xp.asarray(contract.std, dtype=xp.float32, device=device(x))
        x = (x - mean) / std
    if contract.layout == "NCHW":
        x = xp.permute_dims(x, (0, 3, 1, 2))
    return x


def resize_bilinear(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Float NHWC crops -> (B, h, w, C) by cv2 INTER_LINEAR: half-pixel centres, no antialiasing, as
    torch's ``interpolate(bilinear, align_corners=False)`` (tests/test_runtime_without_torch.py)."""
    h, w = size
    out = np.empty((x.shape[0], h, w, x.shape[3]), np.float32)
    for i, img in enumerate(x):
        out[i] = cv2.resize(np.ascontiguousarray(img), (w, h), interpolation=cv2.INTER_LINEAR).reshape(h, w, -1)
    return out


def prepare_input(crops_bgr: np.ndarray, spec: dict | InputContract) -> np.ndarray:
    """(B, S, S, 3) uint8 BGR numpy crops -> the contiguous array a runtime is fed, in numpy."""
    return np.ascontiguousarray(apply_contract(np.asarray(crops_bgr), spec, resize_bilinear))
