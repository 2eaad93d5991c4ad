"""300W-LP in its public layout (users have it; edgefa ships none of it).

    300W_LP/{AFW,HELEN,IBUG,LFPW}[_Flip]/NAME.jpg + NAME.mat   (Pose_Para, pt2d 2x68, ...)
    300W_LP/landmarks/{AFW,HELEN,IBUG,LFPW}/NAME_pts.mat      (pts_3d 68x2: 3D landmarks projected)

Faces are cropped by 3DDFA-V2's box around the landmarks; ``pts68`` prefers ``pts_3d`` (the
3DDFA label convention, points on the 3D face even where hidden) and falls back to ``pt2d``.
"""
from __future__ import annotations

from pathlib import Path

from edgefa.data.base import make_sample
from edgefa.data.images import box_from_landmarks, crop_resize, read_image
from edgefa.data.mat import pose_from_pose_para, read_mat
from edgefa.errors import EdgefaError

SUBSETS = ("AFW", "HELEN", "IBUG", "LFPW")


class W300LP:
    def __init__(self, root: str | Path, subsets: str = "all", flip: bool = True,
                 n: int | None = None, size: int = 120):
        root = Path(root)
        if (root / "300W_LP").is_dir():
            root = root / "300W_LP"
        if not root.is_dir():
            raise EdgefaError(f"{root}: 300W-LP folder not found")
        self.root, self.size = root, size
        wanted = SUBSETS if subsets == "all" else tuple(s.upper() for s in str(subsets).split("+"))
        bad = [s for s in wanted if s not in SUBSETS]
        if bad:
            raise EdgefaError(f"300w-lp subsets={subsets}: unknown subset '{bad[0]}' (valid: {', '.join(SUBSETS)})")
        dirs = [d for s in wanted for d in ((s, s + "_Flip") if flip else (s,))]
        self.files = [p for d in dirs if (root / d).is_dir() for p in sorted((root / d).glob("*.jpg"))]
        if not self.files:
            raise EdgefaError(f"{root}: no images in {', '.join(dirs)} (expected the public 300W_LP layout)")
        if n is not None:
            self.files = self.files[: int(n)]
        self.names = [f"{p.parent.name}/{p.name}" for p in self.files]

    def __len__(self) -> int:
        return len(self.files)

    def _landmarks(self, img_path: Path):
        pts_path = self.root / "landmarks" / img_path.parent.name / f"{img_path.stem}_pts.mat"
        if pts_path.is_file():
            pts = read_mat(pts_path, ("pts_3d",), "300W-LP landmarks")["pts_3d"]
        else:
            pts = read_mat(img_path.with_suffix(".mat"), ("pt2d",), "300W-LP")["pt2d"].T
        if pts.shape != (68, 2):
            raise EdgefaError(f"{pts_path if pts_path.is_file() else img_path.with_suffix('.mat')}: "
                              f"landmarks have shape {pts.shape}, expected 68 x 2")
        return pts

    def __getitem__(self, i: int) -> dict:
        img_path = self.files[i]
        mat = read_mat(img_path.with_suffix(".mat"), ("Pose_Para",), "300W-LP")
        pts = self._landmarks(img_path)
        box = box_from_landmarks(pts)
        crop = crop_resize(read_image(img_path), box, self.size)
        return make_sample(crop, i, roi_box=box, pts68=pts, pose=pose_from_pose_para(mat["Pose_Para"]))
