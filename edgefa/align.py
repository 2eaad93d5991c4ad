"""Photo -> faces: detect -> crop (box rule) -> model -> re-crop from the landmarks -> model -> map back.

    from edgefa import FaceAligner
    faces = FaceAligner("mobilenetv3-small.onnx")(cv2.imread("photo.jpg"))
    faces[0].landmarks  # (68, 3) image pixels; faces[0].pose: yaw, pitch, roll in degrees

The second pass re-crops every face with the landmark rule the training crops follow, as 3DDFA-V2
does, so the detector's box bias matters little (two passes: chosen on aflw-train's val split,
``python -m edgefa.training.crop_rules --passes-model FILE``; a third pass gains 0.005 NME there). For video, ``track`` re-crops each frame from the
previous frame's landmarks and runs the detector only every ``redetect_every`` frames or when a face
is lost.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgefa.data.base import crop_to_original
from edgefa.data.images import crop_resize
from edgefa.detect import Detector, create_detector
from edgefa.detect.base import WholeImageDetector
from edgefa.detect.blazeface import box_iou
from edgefa.detect.crop import FROM_BLAZEFACE, FROM_LANDMARKS, CropRule, landmark_box
from edgefa.errors import EdgefaError
from edgefa.runtime.predictor import Predictor


@dataclass
class Face:
    box: np.ndarray  # (4,) x1 y1 x2 y2: the detector's box (on tracked video frames: the landmarks' box)
    score: float  # the detector's score (on tracked frames: the score at the last detection)
    landmarks: np.ndarray  # (68, 3) image pixels: x right, y down, z depth (same scale as x)
    pose: np.ndarray  # (3,) yaw, pitch, roll in degrees (AFLW2000-3D Pose_Para convention)
    params: np.ndarray  # (62,) raw 3DMM parameters, in the pixels of the model's crop
    crop_box: np.ndarray  # (4,) the square the model saw, x1 y1 x2 y2 in image pixels
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        yaw, pitch, roll = (round(float(v), 3) for v in self.pose)
        return {"box": [round(float(v), 2) for v in self.box], "score": round(float(self.score), 4),
                "landmarks": np.round(self.landmarks.astype(np.float64), 2).tolist(),
                "pose": {"yaw": yaw, "pitch": pitch, "roll": roll},
                "params": [float(f"{v:.6g}") for v in self.params],
                "crop_box": [round(float(v), 2) for v in self.crop_box]}


class FaceAligner:
    """``model``: any --model spec (.onnx, .tflite, checkpoint, ``NAME:pretrained``) or a Predictor;
    ``detector``: ``blazeface``, ``blazeface:PATH``, ``none`` (the image is a face crop) or a Detector."""

    def __init__(self, model, detector: str | Detector = "blazeface", passes: int = 2,
                 threads: int | None = None, redetect_every: int = 10, smooth: float = 0.0):
        if isinstance(model, Predictor):
            self.predictor = model
        else:
            from edgefa.predictor import load_predictor

            self.predictor = load_predictor(str(model), threads=threads)
        self.detector = detector if isinstance(detector, Detector) else create_detector(detector, threads)
        self.box_rule: CropRule | None = None if isinstance(self.detector, WholeImageDetector) else FROM_BLAZEFACE
        if passes < 1:
            raise EdgefaError(f"passes: {passes}: must be at least 1 (the crop from the detector box)")
        # with no detector the image is the crop: nothing to re-crop
        self.passes = int(passes) if self.box_rule is not None else 1
        if redetect_every < 1:
            raise EdgefaError(f"redetect_every: {redetect_every}: must be at least 1")
        if not 0 <= smooth < 1:
            raise EdgefaError(f"smooth: {smooth}: must be in [0, 1) (0: no smoothing)")
        self.redetect_every, self.smooth = int(redetect_every), float(smooth)
        self.reset()

    def reset(self) -> None:
        """Forget the tracked faces (start of a new video)."""
        self._tracks: list[Face] = []
        self._frame = 0

    def _run(self, image: np.ndarray, crop_boxes: list[np.ndarray]):
        size = self.predictor.crop_size
        crops = np.stack([crop_resize(image, box, size) for box in crop_boxes])
        params, pts, pose = self.predictor.predict_all(crops)
        boxes = np.stack(crop_boxes)
        return params, crop_to_original(pts, boxes, size), pose

    def faces_from_crops(self, image, boxes, scores, crop_boxes) -> list[Face]:
        """One model run per given crop box (the detector's boxes and scores passed through)."""
        params, pts, pose = self._run(image, crop_boxes)
        return [Face(np.asarray(b, np.float32), float(s), p.astype(np.float32), np.asarray(y, np.float32),
                     np.asarray(q, np.float32), np.asarray(c, np.float32))
                for b, s, p, y, q, c in zip(boxes, scores, pts, pose, params, crop_boxes)]

    def __call__(self, image_bgr: np.ndarray) -> list[Face]:
        """Every detected face in a BGR uint8 image (H, W, 3), best detection first."""
        image = _check_image(image_bgr)
        detections = self.detector(image)
        if not detections:
            return []
        boxes = [d.box for d in detections]
        scores = [d.score for d in detections]
        crop_boxes = [self.box_rule(b) if self.box_rule else b for b in boxes]
        faces = self.faces_from_crops(image, boxes, scores, crop_boxes)
        for _ in range(self.passes - 1):
            faces = self.faces_from_crops(image, boxes, scores, [FROM_LANDMARKS(landmark_box(f.landmarks)) for f in faces])
        return faces

    def track(self, frame_bgr: np.ndarray) -> list[Face]:
        """The faces of the next video frame: re-cropped from the previous frame's landmarks, with a
        detection every ``redetect_every`` frames and whenever no face is tracked."""
        frame = _check_image(frame_bgr)
        detect = not self._tracks or self._frame % self.redetect_every == 0
        self._frame += 1
        if detect:
            faces = self(frame)
        else:
            crop_boxes = [FROM_LANDMARKS(landmark_box(t.landmarks)) for t in self._tracks]
            faces = self.faces_from_crops(frame, [landmark_box(t.landmarks) for t in self._tracks],
                                [t.score for t in self._tracks], crop_boxes)
            faces = [f for f in faces if _plausible(f, frame.shape)]
        if self.smooth:
            faces = [self._smoothed(f) for f in faces]
        self._tracks = faces
        return faces

    def _smoothed(self, face: Face) -> Face:
        """Exponential smoothing of landmarks and pose against the same face in the last frame."""
        if not self._tracks:
            return face
        current = landmark_box(face.landmarks)
        previous = np.stack([landmark_box(t.landmarks) for t in self._tracks])
        overlap = box_iou(current, previous)
        best = int(np.argmax(overlap))
        if overlap[best] < 0.3:
            return face
        a, prev = self.smooth, self._tracks[best]
        face.landmarks = a * prev.landmarks + (1 - a) * face.landmarks
        face.pose = a * prev.pose + (1 - a) * face.pose
        return face


def _plausible(face: Face, shape) -> bool:
    """A tracked face is lost when its landmarks collapse or leave the frame."""
    x1, y1, x2, y2 = landmark_box(face.landmarks)
    h, w = shape[:2]
    size = max(x2 - x1, y2 - y1)
    inside = min(x2, w) - max(x1, 0) > 0.5 * (x2 - x1) and min(y2, h) - max(y1, 0) > 0.5 * (y2 - y1)
    return bool(np.isfinite(face.landmarks).all() and size >= 8 and inside)


def _check_image(image) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise EdgefaError(f"image: expected a BGR uint8 array (H, W, 3), got {image.dtype} {tuple(image.shape)}")
    return image
