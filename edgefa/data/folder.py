"""A generic folder of face images with ``.npy`` landmark labels.

Labels: ``NAME.npy`` beside each image, or one ``labels.npy`` of shape (N, 68, 2|3) in sorted
image order; landmarks in image pixels. Images are used whole (``box=image``: they are crops
already) or cropped around their landmarks (``box=landmarks``, 3DDFA-V2's box).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgefa.data.base import make_sample
from edgefa.data.images import box_from_landmarks, crop_resize, read_image
from edgefa.errors import EdgefaError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def _check_landmarks(arr: np.ndarray, path: Path) -> np.ndarray:
    if arr.ndim != 2 or arr.shape[0] != 68 or arr.shape[1] not in (2, 3):
        raise EdgefaError(f"{path}: landmarks have shape {arr.shape}, expected (68, 2) or (68, 3)")
    return arr.astype(np.float32)


class ImageFolder:
    def __init__(self, root: str | Path, box: str = "image", n: int | None = None, size: int = 120):
        self.root, self.size, self.box = Path(root), size, box
        if not self.root.is_dir():
            raise EdgefaError(f"{self.root}: image folder not found")
        if box not in ("image", "landmarks"):
            raise EdgefaError(f"box={box}: expected 'image' or 'landmarks'")
        self.files = sorted(p for p in self.root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise EdgefaError(f"{self.root}: no images ({', '.join(IMAGE_SUFFIXES)})")
        self.labels = None
        label_path = self.root / "labels.npy"
        if label_path.is_file():
            try:
                labels = np.load(label_path, allow_pickle=False)
            except Exception as exc:
                raise EdgefaError(f"{label_path}: not a numpy array file ({str(exc)[:100]})") from None
            if len(labels) != len(self.files):
                raise EdgefaError(f"{label_path}: has {len(labels)} entries but the folder has {len(self.files)} images")
            self.labels = [_check_landmarks(a, label_path) for a in labels]
        if n is not None:
            self.files = self.files[: int(n)]
        self.names = [p.name for p in self.files]
        if box == "landmarks" and self.labels is None and not all(p.with_suffix(".npy").is_file() for p in self.files):
            raise EdgefaError(f"{self.root}: box=landmarks needs a .npy label for every image")

    def __len__(self) -> int:
        return len(self.files)

    def _landmarks(self, i: int):
        if self.labels is not None:
            return self.labels[i]
        path = self.files[i].with_suffix(".npy")
        if not path.is_file():
            return None
        try:
            return _check_landmarks(np.load(path, allow_pickle=False), path)
        except EdgefaError:
            raise
        except Exception as exc:
            raise EdgefaError(f"{path}: not a numpy array file ({str(exc)[:100]})") from None

    def __getitem__(self, i: int) -> dict:
        image = read_image(self.files[i])
        pts = self._landmarks(i)
        if self.box == "landmarks":
            box = box_from_landmarks(pts)
        else:
            box = np.array([0, 0, image.shape[1], image.shape[0]], dtype=np.float32)
        crop = crop_resize(image, box, self.size)
        return make_sample(crop, i, roi_box=box, pts68=pts)
