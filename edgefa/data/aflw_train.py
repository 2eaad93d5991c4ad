"""AFLW training crops: 120x120 crops, 21 AFLW points (hidden = x -1) and yaw; no 3DMM labels."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgefa.data.aflw2000 import _load_npy, _read_list
from edgefa.data.base import crop_to_original, make_sample
from edgefa.data.images import decode_image, read_image
from edgefa.errors import EdgefaError

# AFLW's 21 points (0-based) -> the iBUG 68-point index nearest to them: the median distance over
# AFLW2000-3D, which has both label sets, is 3-5 px on 450 px images (7 px for nose sides).
# The eye centres (7, 10) and ear lobes (12, 16) have no 68-point counterpart.
AFLW21_TO_68 = {0: 17, 1: 19, 2: 21, 3: 22, 4: 24, 5: 26, 6: 36, 7: None, 8: 39, 9: 42, 10: None,
                11: 45, 12: None, 13: 31, 14: 30, 15: 35, 16: None, 17: 60, 18: 66, 19: 64, 20: 8}


def is_val(index: np.ndarray) -> np.ndarray:
    """The fixed validation split: every 20th face of train.list (5 %)."""
    return np.asarray(index) % 20 == 0


# a pack (``python -m edgefa.training.pack_data``) holds the crops as one blob of encoded images
# plus N + 1 byte offsets instead of crops/: one file travels to a GPU box instead of 18k
CROP_BLOB, CROP_OFFSETS = "crops.bin", "crops.offsets.npy"


class CropBlob:
    """Encoded crops stored back to back in one file; crop ``i`` is bytes offsets[i]:offsets[i + 1]."""

    def __init__(self, root: Path, count: int):
        self.path = root / CROP_BLOB
        self.offsets = _load_npy(root / CROP_OFFSETS, count + 1, (), "crop byte offsets")
        size = self.path.stat().st_size
        if self.offsets[0] != 0 or self.offsets[-1] != size or (np.diff(self.offsets) <= 0).any():
            raise EdgefaError(f"{root / CROP_OFFSETS}: offsets do not cut {self.path} ({size} bytes) into "
                              f"{count} crops")
        self._data = None  # mapped on first read, so the dataset pickles cheaply into loader workers

    def read(self, i: int) -> np.ndarray:
        if self._data is None:
            self._data = np.memmap(self.path, dtype=np.uint8, mode="r")
        start, end = int(self.offsets[i]), int(self.offsets[i + 1])
        return decode_image(self._data[start:end].tobytes(), f"{self.path}[{i}]")

    def __getstate__(self):
        return {**self.__dict__, "_data": None}


class AFLWTrain:
    """``root`` holds crops/ (or a crop blob), train.list, pts21.npy, roi_box.npy and yaws.npy.

    ``pose`` carries the yaw, pitch/roll NaN. With ``labels=FILE`` (``python -m edgefa.training.labels``)
    each sample also has refined 62 params and 68 points, for the crop and for its mirror. Those 68
    points are fitted labels, not ground truth: an evaluation on such a spec scores against them, so
    validate on the plain spec (its AFLW-21 points). ``yaws.npy`` is signed, in the Pose_Para convention
    (the shared README calls it |yaw|, but values run from -90 to 96 and the 3DDFA-V2 peer's yaw
    agrees in sign: correlation 0.97 on the validation split).
    """

    SPLITS = ("all", "train", "val")

    def __init__(self, root: str | Path, split: str = "all", n: int | None = None, size: int = 120,
                 labels: str | None = None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise EdgefaError(f"{self.root}: aflw-train folder not found")
        self.size = size
        self.names = _read_list(self.root / "train.list")
        total = len(self.names)
        self.pts21 = _load_npy(self.root / "pts21.npy", total, (2, 21), "21 AFLW points").transpose(0, 2, 1).copy()
        self.pts21[self.pts21[..., 0] < 0] = np.nan  # hidden points are stored as x = -1
        self.roi_boxes = _load_npy(self.root / "roi_box.npy", total, (4,), "crop roi boxes")
        self.yaws = _load_npy(self.root / "yaws.npy", total, (), "yaw angles")
        if split not in self.SPLITS:
            raise EdgefaError(f"split={split}: expected one of {', '.join(self.SPLITS)}")
        keep = np.arange(total)
        if split != "all":  # a fixed held-out split: every 20th face (5 %) is validation
            keep = keep[is_val(keep) == (split == "val")]
        if n is not None:
            keep = keep[: int(n)]
        self.index = keep  # position in train.list
        self.blob = CropBlob(self.root, total) if (self.root / CROP_BLOB).is_file() else None
        self.names = [self.names[i] for i in keep]
        self.pts21, self.roi_boxes, self.yaws = self.pts21[keep], self.roi_boxes[keep], self.yaws[keep]
        self.labels, self.labels_face_model = None, None
        if labels is not None:
            from edgefa.data.labels import read_labels

            self.labels = read_labels(labels, self.names)
            self.labels_face_model = self.labels["meta"].get("face_model")

    def val_mask(self) -> np.ndarray:
        """Which of these faces belong to the fixed validation split."""
        return is_val(self.index)

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> dict:
        if self.blob is not None:
            path, image = f"{self.root / CROP_BLOB}[{self.index[i]}]", self.blob.read(int(self.index[i]))
        else:
            path = self.root / "crops" / self.names[i]
            image = read_image(path)
        if image.shape[:2] != (self.size, self.size):
            raise EdgefaError(f"{path}: crop is {image.shape[1]}x{image.shape[0]}, expected {self.size}x{self.size}")
        if self.labels is None:
            return make_sample(image, i, roi_box=self.roi_boxes[i], pts21=self.pts21[i],
                               pose=(self.yaws[i], np.nan, np.nan))
        # refined labels (crop pixels) for the crop and for its mirror image
        box = self.roi_boxes[i][None]
        lab = self.labels
        pts68 = crop_to_original(lab["pts68"][i, 0][None], box, self.size)[0]
        return make_sample(image, i, roi_box=self.roi_boxes[i], pts21=self.pts21[i], pts68=pts68,
                           pose=(self.yaws[i], np.nan, np.nan), params=lab["params"][i, 0],
                           mirror_params=lab["params"][i, 1], mirror_pts68=lab["pts68"][i, 1])
