"""Face detectors behind one spec: ``blazeface`` (BlazeFace short-range in LiteRT; its file found as
below), ``blazeface:PATH[,min_score=0.5]``, or ``none`` (the image is already a face crop).

Nothing is downloaded. The BlazeFace file (MediaPipe's ``face_detection_short_range.tflite``,
Apache-2.0) is looked for in: the spec's path, ``$EDGEFA_FACE_DETECTOR``, an installed ``mediapipe``
package that bundles it (its 0.10 releases: ``pip install --no-deps mediapipe==0.10.21`` installs just
the files, and edgefa never imports it), then the shared folder's ``peers/mediapipe_face/``.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from edgefa.detect.base import Detection, Detector, WholeImageDetector
from edgefa.errors import EdgefaError, unknown_name_error
from edgefa.paths import shared_root
from edgefa.specs import fits_type, parse_spec

__all__ = ["Detection", "Detector", "create_detector", "find_blazeface", "DETECTORS"]

DETECTORS = ("blazeface", "none")
BLAZEFACE_FILE = "face_detection_short_range.tflite"


def blazeface_candidates() -> list[Path]:
    found = []
    env = os.environ.get("EDGEFA_FACE_DETECTOR")
    if env:
        found.append(Path(env))
    spec = importlib.util.find_spec("mediapipe")  # located, not imported: mediapipe is heavy
    if spec is not None and spec.submodule_search_locations:
        found += [Path(p) / "modules" / "face_detection" / BLAZEFACE_FILE for p in spec.submodule_search_locations]
    found.append(shared_root() / "peers" / "mediapipe_face" / BLAZEFACE_FILE)
    return found


def find_blazeface() -> Path:
    for path in blazeface_candidates():
        if path.is_file():
            return path
    raise EdgefaError(f"--detector blazeface: {BLAZEFACE_FILE} not found; get it with "
                      "`pip install --no-deps mediapipe==0.10.21` (only the file is used), pass --detector "
                      "blazeface:PATH or set EDGEFA_FACE_DETECTOR, or use --detector none for images that are "
                      "already face crops")


def create_detector(text: str = "blazeface", threads: int | None = None) -> Detector:
    spec = parse_spec(text, set(DETECTORS))
    if spec is None:
        raise unknown_name_error("detector", text.partition(":")[0], DETECTORS)
    if spec.kind == "none":
        if spec.path or spec.options:
            raise EdgefaError(f"--detector {text}: 'none' takes no path or options")
        return WholeImageDetector()
    from edgefa.detect.blazeface import BlazeFaceDetector

    unknown = set(spec.options) - {"min_score"}
    if unknown:
        raise EdgefaError(f"--detector {text}: unknown option '{sorted(unknown)[0]}' (valid: min_score)")
    path = Path(spec.path) if spec.path else find_blazeface()
    if not path.is_file():
        raise EdgefaError(f"--detector {text}: {path}: file not found")
    min_score = spec.options.get("min_score", 0.5)
    if not fits_type(min_score, float) or not 0 < min_score < 1:
        raise EdgefaError(f"--detector {text}: min_score must be a number between 0 and 1")
    return BlazeFaceDetector(path, min_score=float(min_score), threads=threads)
