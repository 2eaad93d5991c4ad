"""Overlays: landmarks by face region, the detector box, and the head-pose axes."""
from __future__ import annotations

import cv2
import numpy as np

from edgefa.facemodel.geometry import euler_to_rotation

# jaw, brows, nose, eyes, mouth (BGR)
REGIONS = [(range(17), (255, 255, 0)), (range(17, 27), (0, 255, 255)), (range(27, 36), (0, 255, 0)),
           (range(36, 48), (255, 0, 255)), (range(48, 68), (0, 0, 255))]
NOSE_TIP = 30


def draw_landmarks(image: np.ndarray, pts: np.ndarray, scale: int = 2, radius: float = 0.5) -> np.ndarray:
    """68 points (``radius`` pixels) drawn at sub-pixel positions (on a ``scale``-times canvas, then
    scaled back)."""
    big = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    r = max(1, round(radius * scale * 4))  # 2 fractional bits (shift=2)
    for idx, colour in REGIONS:
        for k in idx:
            x, y = (pts[k, :2] + 0.5) * scale - 0.5
            cv2.circle(big, (round(x * 4), round(y * 4)), r, colour, -1, cv2.LINE_AA, 2)
    return cv2.resize(big, image.shape[1::-1], interpolation=cv2.INTER_AREA)


def draw_pose_axes(image: np.ndarray, origin, pose_deg, length: float) -> None:
    """The head's x (red), y (green) and z (blue) axes from ``origin``, in place. The pose matrix
    maps the model's y-up space to the crop's y-down pixels, hence the flipped y."""
    rot = np.asarray(euler_to_rotation(np.asarray(pose_deg, np.float64)))
    o = np.asarray(origin[:2], np.float64)
    for axis, colour in ((0, (0, 0, 255)), (1, (0, 255, 0)), (2, (255, 0, 0))):
        end = o + length * np.array([rot[0, axis], -rot[1, axis]])
        cv2.line(image, tuple(int(round(v)) for v in o), tuple(int(round(v)) for v in end), colour, 2, cv2.LINE_AA)


def draw_faces(image_bgr: np.ndarray, faces) -> np.ndarray:
    """A copy of the image with every face's box, landmarks and pose axes (``edgefa.align.Face``s)."""
    out = image_bgr.copy()
    scale = 2 if max(out.shape[:2]) < 1500 else 1
    for face in faces:
        x1, y1, x2, y2 = face.box
        out = draw_landmarks(out, face.landmarks, scale, radius=max(1.0, max(x2 - x1, y2 - y1) / 120))
    for face in faces:
        x1, y1, x2, y2 = (int(round(float(v))) for v in face.box)
        thick = max(1, round(max(out.shape[:2]) / 500))
        cv2.rectangle(out, (x1, y1), (x2, y2), (0, 200, 0), thick, cv2.LINE_AA)
        size = max(x2 - x1, y2 - y1)
        draw_pose_axes(out, face.landmarks[NOSE_TIP], face.pose, 0.5 * size)
    return out
