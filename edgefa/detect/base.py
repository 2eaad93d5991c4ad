"""What a face detector returns, and the trivial one: the whole image is the face."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Detection:
    box: np.ndarray  # (4,) x1 y1 x2 y2 in image pixels
    score: float
    keypoints: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))  # (K, 2) image pixels


class Detector:
    """``detector(image_bgr)`` -> detections, best first."""

    name: str

    def __call__(self, image_bgr: np.ndarray) -> list[Detection]:
        raise NotImplementedError


class WholeImageDetector(Detector):
    """``--detector none``: the image is already a face crop (e.g. one made by the 3DDFA rule), so the
    crop is the whole image and no box -> crop rule applies."""

    name = "none"

    def __call__(self, image_bgr: np.ndarray) -> list[Detection]:
        h, w = image_bgr.shape[:2]
        return [Detection(np.array([0, 0, w, h], np.float32), 1.0)]
