"""``edgefa predict``: faces in photos, folders, globs and videos -> JSON and drawn overlays.

JSON: ``{"model", "detector", "images": [{"path", "width", "height", "faces": [face...]}]}``; a video
adds one entry per frame with ``"frame"`` (0-based) and ``"time"`` (seconds). A face is
``{"box": [x1, y1, x2, y2], "score", "landmarks": [[x, y, z] x 68], "pose": {"yaw", "pitch", "roll"},
"params": [62], "crop_box": [x1, y1, x2, y2]}`` in the image's pixels (``edgefa.align.Face``).
"""
from __future__ import annotations

import glob
import sys
from pathlib import Path

import cv2
import numpy as np

from edgefa.align import FaceAligner
from edgefa.data.images import read_image
from edgefa.draw import draw_faces
from edgefa.errors import EdgefaError
from edgefa.fileio import atomic_write_bytes, atomic_write_json, check_writable, temp_sibling

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}


def media_kind(path: Path) -> str | None:
    ext = path.suffix.lower()
    return "image" if ext in IMAGE_EXTS else "video" if ext in VIDEO_EXTS else None


def resolve_sources(source: str) -> list[Path]:
    """An image or video file, a folder (its images and videos, sorted) or a glob pattern."""
    path = Path(source)
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.is_file() and media_kind(p))
        if not found:
            raise EdgefaError(f"--source {source}: no images or videos in this folder "
                              f"({', '.join(sorted(IMAGE_EXTS | VIDEO_EXTS))})")
        return found
    if path.is_file():
        if media_kind(path) is None:
            raise EdgefaError(f"--source {source}: not an image or video file by its extension "
                              f"({', '.join(sorted(IMAGE_EXTS | VIDEO_EXTS))})")
        return [path]
    if any(c in source for c in "*?["):
        found = sorted(Path(p) for p in glob.glob(source, recursive=True) if media_kind(Path(p)))
        if not found:
            raise EdgefaError(f"--source {source}: the pattern matches no images or videos")
        return found
    raise EdgefaError(f"--source {source}: no such file or folder")


class Overlays:
    """Writes drawn copies into a folder, each file atomically, names kept unique."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        check_writable(self.folder / "overlay.jpg", "--save")  # creates the folder
        self.used: set[str] = set()

    def path_for(self, source: Path, suffix: str) -> Path:
        name, k = source.stem + suffix, 1
        while name in self.used:
            k += 1
            name = f"{source.stem}-{k}{suffix}"
        self.used.add(name)
        return self.folder / name

    def write_image(self, source: Path, image: np.ndarray) -> Path:
        suffix = source.suffix.lower() if source.suffix.lower() in (".jpg", ".jpeg", ".png") else ".jpg"
        out = self.path_for(source, suffix)
        ok, data = cv2.imencode(suffix, image)
        if not ok:
            raise EdgefaError(f"{out}: could not encode the overlay")
        atomic_write_bytes(out, data.tobytes())
        return out


def predict_image(aligner: FaceAligner, path: Path, overlays: Overlays | None) -> dict:
    image = read_image(path)
    faces = aligner(image)
    if overlays is not None:
        overlays.write_image(path, draw_faces(image, faces))
    h, w = image.shape[:2]
    return {"path": str(path), "width": w, "height": h, "faces": [f.to_dict() for f in faces]}


def predict_video(aligner: FaceAligner, path: Path, overlays: Overlays | None, progress: bool) -> list[dict]:
    """Every frame, tracked (``FaceAligner.track``); the overlay video is written to a temp file and
    renamed when complete, so an interrupted run leaves no half video."""
    capture = cv2.VideoCapture(str(path))
    ok, frame = capture.read() if capture.isOpened() else (False, None)
    if not ok:
        capture.release()
        raise EdgefaError(f"{path}: not a readable video")
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    writer = out = tmp = None
    if overlays is not None:
        out = overlays.path_for(path, ".mp4")
        tmp = temp_sibling(out)
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (frame.shape[1], frame.shape[0]))
    aligner.reset()
    entries, index, done = [], 0, False
    bar = _bar(total, f"{path.name}", progress)
    try:
        while ok:
            faces = aligner.track(frame)
            entries.append({"path": str(path), "frame": index, "time": round(index / fps, 4),
                            "width": frame.shape[1], "height": frame.shape[0], "faces": [f.to_dict() for f in faces]})
            if writer is not None:
                writer.write(draw_faces(frame, faces))
            index += 1
            bar.update(1)
            ok, frame = capture.read()
        done = True
    finally:
        bar.close()
        capture.release()
        if writer is not None:
            writer.release()
            if done:
                tmp.replace(out)
            else:
                tmp.unlink(missing_ok=True)
    return entries


def _bar(total, desc, enabled):
    from tqdm import tqdm

    # disable=None: no bar when stderr is not a terminal
    return tqdm(total=total, desc=desc, unit="frame" if desc.endswith(tuple(VIDEO_EXTS)) else "image",
                leave=False, file=sys.stderr, disable=None if enabled else True)


def run_predict(model: str, source: str, save: str | None = None, json_path: str | None = None,
                detector: str = "blazeface", passes: int = 2, threads: int | None = None,
                smooth: float = 0.0, redetect_every: int = 10, progress: bool = True) -> tuple[dict, list[str]]:
    """Predict every face of ``source``; returns the JSON record and the files skipped (with why).
    One bad file among many is skipped with a warning; a single bad file is an error."""
    sources = resolve_sources(source)
    if json_path:
        check_writable(json_path, "--json")
    overlays = Overlays(save) if save else None
    aligner = FaceAligner(model, detector=detector, passes=passes, threads=threads,
                          redetect_every=redetect_every, smooth=smooth)
    record = {"model": model, "detector": detector, "passes": aligner.passes, "images": []}
    skipped = []
    images = [p for p in sources if media_kind(p) == "image"]
    bar = _bar(len(images), "images", progress and len(images) > 1)
    for path in sources:
        try:
            if media_kind(path) == "video":
                record["images"] += predict_video(aligner, path, overlays, progress)
            else:
                record["images"].append(predict_image(aligner, path, overlays))
                bar.update(1)
        except EdgefaError as exc:
            if len(sources) == 1:
                raise
            skipped.append(str(exc))
            print(f"edgefa predict: skipped {exc}", file=sys.stderr)
    bar.close()
    if skipped:
        record["skipped"] = skipped
    if json_path:
        atomic_write_json(json_path, record)
    return record, skipped
