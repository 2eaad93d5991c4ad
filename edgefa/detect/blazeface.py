"""BlazeFace (MediaPipe's short-range face detector) run in LiteRT, decoded in numpy.

The decoding follows MediaPipe's face_detection_short_range graph: SSD anchors (strides 8, 16, 16, 16;
fixed anchor size), box and six keypoints as offsets in 128-pixel units from the anchor centre, a
sigmoid score clipped at +-100, weighted non-maximum suppression at IoU 0.3. The image is
letterboxed (aspect kept, zero padded) to 128 x 128 RGB scaled to [-1, 1], as MediaPipe feeds it.
"""
from __future__ import annotations

import functools
from pathlib import Path

import cv2
import numpy as np

from edgefa.detect.base import Detection, Detector
from edgefa.errors import EdgefaError

INPUT_SIZE = 128
STRIDES = (8, 16, 16, 16)
KEYPOINTS = ("right_eye", "left_eye", "nose_tip", "mouth_center", "right_ear", "left_ear")


@functools.lru_cache(maxsize=1)
def ssd_anchors() -> np.ndarray:
    """(896, 2) anchor centres in [0, 1]: consecutive layers of one stride share a grid, two
    anchors per layer (aspect ratio 1 plus the interpolated scale), all of size 1 (fixed)."""
    centres, layer = [], 0
    while layer < len(STRIDES):
        stride, per_cell = STRIDES[layer], 0
        while layer < len(STRIDES) and STRIDES[layer] == stride:
            per_cell += 2
            layer += 1
        cells = INPUT_SIZE // stride
        ys, xs = np.meshgrid((np.arange(cells) + 0.5) / cells, (np.arange(cells) + 0.5) / cells, indexing="ij")
        grid = np.stack([xs.ravel(), ys.ravel()], axis=1)
        centres.append(np.repeat(grid, per_cell, axis=0))
    return np.concatenate(centres).astype(np.float32)


def letterbox(image_bgr: np.ndarray) -> tuple[np.ndarray, float, float, float]:
    """Image -> (1, 128, 128, 3) float32 RGB in [-1, 1], plus the scale and padding (in 128-pixel
    units) that map the network's [0, 1] coordinates back to image pixels."""
    h, w = image_bgr.shape[:2]
    scale = INPUT_SIZE / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    canvas = np.zeros((INPUT_SIZE, INPUT_SIZE, 3), np.uint8)
    px, py = (INPUT_SIZE - nw) // 2, (INPUT_SIZE - nh) // 2
    canvas[py:py + nh, px:px + nw] = cv2.resize(image_bgr, (nw, nh), interpolation=cv2.INTER_AREA)
    x = canvas[None, :, :, ::-1].astype(np.float32) / 127.5 - 1.0
    return np.ascontiguousarray(x), scale, px, py


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one (4,) x1 y1 x2 y2 box with (N, 4) boxes."""
    ix = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = ix * iy
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def weighted_nms(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, iou: float):
    """MediaPipe's WEIGHTED suppression: each kept detection is the score-weighted mean of the
    candidates overlapping the best remaining one, with that one's score."""
    order = np.argsort(-scores)
    boxes, keypoints, scores = boxes[order], keypoints[order], scores[order]
    kept = []
    remaining = np.ones(len(scores), bool)
    for i in range(len(scores)):
        if not remaining[i]:
            continue
        group = remaining & (box_iou(boxes[i], boxes) > iou)
        group[i] = True
        weight = scores[group][:, None]
        kept.append(((boxes[group] * weight).sum(0) / weight.sum(),
                     (keypoints[group].reshape(group.sum(), -1) * weight).sum(0).reshape(-1, 2) / weight.sum(),
                     float(scores[i])))
        remaining &= ~group
    return kept


class BlazeFaceDetector(Detector):
    name = "blazeface"

    def __init__(self, path: str | Path, min_score: float = 0.5, iou: float = 0.3, threads: int | None = None):
        from edgefa.runtime.tflite import interpreter

        self.path = Path(path)
        try:
            self.interpreter = interpreter(str(self.path), threads=threads)
            self.interpreter.allocate_tensors()
        except Exception as exc:
            raise EdgefaError(f"{self.path}: not a loadable TFLite model ({type(exc).__name__}: {str(exc)[:120]})") \
                from None
        inputs = self.interpreter.get_input_details()
        outputs = {d["name"]: d for d in self.interpreter.get_output_details()}
        if tuple(inputs[0]["shape"]) != (1, INPUT_SIZE, INPUT_SIZE, 3) or \
                {"regressors", "classificators"} - set(outputs):
            raise EdgefaError(f"{self.path}: not BlazeFace short-range (expected a 1x128x128x3 input and "
                              "'regressors' / 'classificators' outputs)")
        self._input = inputs[0]["index"]
        self._boxes, self._scores = outputs["regressors"]["index"], outputs["classificators"]["index"]
        self.min_score, self.iou = float(min_score), float(iou)

    def __call__(self, image_bgr: np.ndarray) -> list[Detection]:
        x, scale, px, py = letterbox(image_bgr)
        self.interpreter.set_tensor(self._input, x)
        self.interpreter.invoke()
        raw = self.interpreter.get_tensor(self._boxes)[0]
        logits = np.clip(self.interpreter.get_tensor(self._scores)[0, :, 0].astype(np.float64), -100, 100)
        scores = 1.0 / (1.0 + np.exp(-logits))
        keep = scores >= self.min_score
        if not keep.any():
            return []
        anchors = ssd_anchors()[keep] * INPUT_SIZE
        raw, scores = raw[keep], scores[keep]
        centre = raw[:, :2] + anchors
        half = raw[:, 2:4] / 2
        boxes = np.concatenate([centre - half, centre + half], axis=1)
        keypoints = raw[:, 4:16].reshape(-1, 6, 2) + anchors[:, None, :]
        detections = []
        for box, kps, score in weighted_nms(boxes, keypoints, scores, self.iou):
            # 128-pixel letterbox units -> image pixels
            box = (box.reshape(2, 2) - (px, py)) / scale
            kps = (kps - (px, py)) / scale
            detections.append(Detection(box.reshape(4).astype(np.float32), score, kps.astype(np.float32)))
        return detections
