"""Box -> crop rules: where to cut the model's square input from a detector box (first pass) or from
the landmarks a first pass predicted (second pass, which makes the detector's bias matter little).

A rule moves the box centre by (dx, dy) box sizes and cuts a square of ``scale`` box sizes, the box
size being max(width, height). The constants are fitted on aflw-train (never on AFLW2000-3D) so
that the crops match the ones the models were trained on: ``python -m edgefa.training.crop_rules``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class CropRule:
    dx: float
    dy: float
    scale: float

    def __call__(self, box) -> np.ndarray:
        """(4,) x1 y1 x2 y2 -> (4,) square crop box x1 y1 x2 y2, in the same pixels."""
        x1, y1, x2, y2 = (float(v) for v in box)
        size = max(x2 - x1, y2 - y1)
        cx, cy = (x1 + x2) / 2 + self.dx * size, (y1 + y2) / 2 + self.dy * size
        half = self.scale * size / 2
        return np.array([cx - half, cy - half, cx + half, cy + half], np.float32)

    def to_dict(self) -> dict:
        return {k: round(v, 4) for k, v in asdict(self).items()}


def landmark_box(points) -> np.ndarray:
    """The (N, 2+) points' bounding box x1 y1 x2 y2."""
    pts = np.asarray(points, np.float64)[:, :2]
    return np.concatenate([np.nanmin(pts, 0), np.nanmax(pts, 0)]).astype(np.float32)


# 3DDFA-V2's parse_roi_box_from_landmark, for reference: centred, sqrt(2) x the longer side
LANDMARKS_3DDFA_V2 = CropRule(0.0, 0.0, math.sqrt(2))

# python -m edgefa.training.crop_rules --data ../shared/data/aflw-train --labels runs/labels/aflw-train.npz
# (17,472 train crops, refined labels; BlazeFace found 17,221 of them): medians, MAD in brackets
FROM_BLAZEFACE = CropRule(dx=-0.0092, dy=0.0461, scale=1.4201)  # MAD 0.029, 0.030, 0.098
FROM_LANDMARKS_ON_LABELS = CropRule(dx=-0.0006, dy=-0.0008, scale=1.436)  # MAD 0.025, 0.015, 0.053: ~3DDFA-V2's
# The rule used on *predicted* landmarks, fitted by ... --tune-model reports/models/mobilenetv3-small.onnx
# (the shipped model; with the label-fitted rule its re-crops came out larger than the training crops):
# the grid point with the lowest second-pass NME on 2,500 train crops (3.180); on the val split 3.736
# against 3.827 with the label-fitted rule
FROM_LANDMARKS = CropRule(dx=0.0, dy=0.02, scale=1.32)


def crop_metadata(size: int) -> dict:
    """How an app cuts this model's input from a photo (the ``edgefa.crop`` field of device files)."""
    return {"size": int(size),
            "rule": "box size s = max(x2 - x1, y2 - y1); centre = box centre + (dx, dy) * s; "
                    "crop = the square of side scale * s at that centre (pad outside the image with black), "
                    "resized to size x size",
            "from_detector": {"detector": "BlazeFace short-range (MediaPipe face_detection_short_range.tflite)",
                              **FROM_BLAZEFACE.to_dict()},
            "from_landmarks": {"use": "second pass and video tracking: the bounding box of the 68 predicted "
                                      "landmarks (x, y) in image pixels", **FROM_LANDMARKS.to_dict()},
            "map_back": "image x = x1 + x_crop * (x2 - x1) / size, y likewise, z scaled like x"}
