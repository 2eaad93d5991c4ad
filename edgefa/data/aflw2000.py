"""AFLW2000-3D, the standard test set, in both layouts.

- ``AFLW2000Crops``: the 3DDFA protocol files (120x120 crops in list order + label arrays);
- ``AFLW2000Original``: the original ``imageXXXXX.jpg`` + ``.mat``, cropped here by the
  protocol roi boxes (``box=roi``), the ``.mat`` ``roi`` field (``box=mat``), a box around the
  ground-truth landmarks (``box=landmarks``) or any (N, 4) boxes in a ``.npy`` file.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgefa.data.base import make_sample
from edgefa.data.images import box_from_landmarks, crop_resize, read_image
from edgefa.data.mat import pose_from_pose_para, read_mat
from edgefa.errors import EdgefaError

CROP_DIR, CROP_LIST, LABEL_DIR, ORIGINAL_DIR = "AFLW2000-3D_crop", "AFLW2000-3D_crop.list", "labels", "AFLW2000"
PTS68, PTS68_RE, ROI_BOX, YAWS = ("AFLW2000-3D.pts68.npy", "AFLW2000-3D-Reannotated.pts68.npy",
                                  "AFLW2000-3D_crop.roi_box.npy", "AFLW2000-3D.pose.npy")


def _load_npy(path: Path, n: int | None, shape_tail: tuple, what: str) -> np.ndarray:
    if not path.is_file():
        raise EdgefaError(f"{path}: missing ({what})")
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise EdgefaError(f"{path}: not a numpy array file ({str(exc)[:100]})") from None
    if n is not None and len(arr) != n:
        raise EdgefaError(f"{path}: has {len(arr)} entries but the image list has {n}")
    if tuple(arr.shape[1:]) != shape_tail:
        raise EdgefaError(f"{path}: shape {arr.shape}, expected (N, {', '.join(map(str, shape_tail))})")
    return arr.astype(np.float32)


def _read_list(path: Path) -> list[str]:
    if not path.is_file():
        raise EdgefaError(f"{path}: missing (the AFLW2000-3D crop list)")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise EdgefaError(f"{path}: empty image list")
    return names


class AFLW2000Crops:
    """``root`` holds AFLW2000-3D_crop/, AFLW2000-3D_crop.list and labels/ (and AFLW2000/ for pitch/roll)."""

    def __init__(self, root: str | Path, n: int | None = None, size: int = 120):
        self.root = Path(root)
        if not self.root.is_dir():
            raise EdgefaError(f"{self.root}: AFLW2000-3D folder not found")
        self.size = size
        self.names = _read_list(self.root / CROP_LIST)
        total = len(self.names)
        labels = self.root / LABEL_DIR
        self.roi_boxes = _load_npy(labels / ROI_BOX, total, (4,), "crop roi boxes")
        self.pts68 = _load_npy(labels / PTS68, total, (3, 68), "68 ground-truth landmarks").transpose(0, 2, 1)
        self.yaws = _load_npy(labels / YAWS, total, (), "yaw angles")
        re_path = labels / PTS68_RE
        self.alt_labels = {}
        if re_path.is_file():
            self.alt_labels["reannotated"] = _load_npy(re_path, total, (2, 68), "re-annotated landmarks").transpose(0, 2, 1)
        self.poses = self._poses_from_mats()
        if n is not None:
            self._subset(int(n))

    def _poses_from_mats(self) -> np.ndarray:
        """Yaw from labels/; pitch and roll from the original .mat files when they are there."""
        poses = np.full((len(self.names), 3), np.nan, dtype=np.float32)
        poses[:, 0] = self.yaws
        mat_dir = self.root / ORIGINAL_DIR
        if mat_dir.is_dir():
            for i, name in enumerate(self.names):
                mat = read_mat(mat_dir / (Path(name).stem + ".mat"), ("Pose_Para",), "AFLW2000-3D")
                poses[i] = pose_from_pose_para(mat["Pose_Para"])
        return poses

    def _subset(self, n: int) -> None:
        self.names = self.names[:n]
        for key in ("roi_boxes", "pts68", "yaws", "poses"):
            setattr(self, key, getattr(self, key)[:n])
        self.alt_labels = {k: v[:n] for k, v in self.alt_labels.items()}

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> dict:
        path = self.root / CROP_DIR / self.names[i]
        image = read_image(path)
        if image.shape[:2] != (self.size, self.size):
            raise EdgefaError(f"{path}: crop is {image.shape[1]}x{image.shape[0]}, expected {self.size}x{self.size}")
        return make_sample(image, i, roi_box=self.roi_boxes[i], pts68=self.pts68[i], pose=self.poses[i])


class AFLW2000Original:
    """``root`` is the AFLW2000/ folder of imageXXXXX.jpg + .mat (or its parent)."""

    BOXES = ("roi", "mat", "landmarks")

    def __init__(self, root: str | Path, box: str = "roi", n: int | None = None, size: int = 120):
        root = Path(root)
        if (root / ORIGINAL_DIR).is_dir():
            root = root / ORIGINAL_DIR
        if not root.is_dir():
            raise EdgefaError(f"{root}: AFLW2000 image folder not found")
        self.root, self.size, self.box = root, size, str(box)
        list_path = root.parent / CROP_LIST
        if list_path.is_file():  # the protocol order, so results line up with the crop layout
            self.names = [Path(n).stem + ".jpg" for n in _read_list(list_path)]
        else:
            self.names = sorted(p.name for p in root.glob("image*.jpg"))
        if not self.names:
            raise EdgefaError(f"{root}: no imageXXXXX.jpg files")
        self.roi_boxes = self._given_boxes(len(self.names))
        self.alt_labels = {}
        re_path = root.parent / LABEL_DIR / PTS68_RE
        if re_path.is_file():
            self.alt_labels["reannotated"] = _load_npy(re_path, len(self.names), (2, 68),
                                                       "re-annotated landmarks").transpose(0, 2, 1)
        if n is not None:
            self.names = self.names[: int(n)]
            self.roi_boxes = None if self.roi_boxes is None else self.roi_boxes[: int(n)]
            self.alt_labels = {k: v[: int(n)] for k, v in self.alt_labels.items()}

    def _given_boxes(self, total: int) -> np.ndarray | None:
        if self.box == "roi":
            return _load_npy(self.root.parent / LABEL_DIR / ROI_BOX, total, (4,), "protocol roi boxes (box=roi)")
        if self.box in ("mat", "landmarks"):
            return None
        path = Path(self.box)
        if path.suffix == ".npy":
            return _load_npy(path, total, (4,), "crop boxes")
        raise EdgefaError(f"box={self.box}: expected one of {', '.join(self.BOXES)} or a .npy of (N, 4) boxes")

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> dict:
        img_path = self.root / self.names[i]
        keys = ("pt3d_68", "Pose_Para") + (("roi",) if self.box == "mat" else ())
        mat = read_mat(img_path.with_suffix(".mat"), keys, "AFLW2000-3D")
        pts68 = mat["pt3d_68"]
        if pts68.shape != (3, 68):
            raise EdgefaError(f"{img_path.with_suffix('.mat')}: pt3d_68 has shape {pts68.shape}, expected (3, 68)")
        image = read_image(img_path)
        if self.roi_boxes is not None:
            box = self.roi_boxes[i]
        elif self.box == "mat":
            box = mat["roi"].reshape(-1)[:4]
        else:
            box = box_from_landmarks(pts68.T)
        crop = crop_resize(image, box, self.size)
        return make_sample(crop, i, roi_box=box, pts68=pts68.T, pose=pose_from_pose_para(mat["Pose_Para"]))
