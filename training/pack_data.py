"""A compact copy of the training inputs for a machine without ``../shared`` (a GPU box reached by
upload): aflw-train's crops re-encoded as WebP in one blob, its labels, the bfm68 files, the 3DDFA-V2
mb05 teacher and (``--labels``) a compact copy of a refined-labels file, in the shared layout, so

    EDGEFA_SHARED=PACK edgefa train --config training/configs/NAME.yaml \
        "data.train=aflw-train:{shared}/data/aflw-train,split=train,labels={shared}/labels.npz"

runs there unchanged.

    python -m edgefa.training.pack_data .pack --labels runs/labels/aflw-train.npz   # 41 MB (39 MiB) at quality 50
    python -m edgefa.training.pack_data .pack --archive   # also .pack.tgz: one file, for other uploads

Why WebP in one blob: at quality 50 the 18,392 crops take 28 MiB (the shared q90 JPEGs: 134 MB on
disk) with a mean error of 4.1 grey levels (q60: 32 MiB, 3.8), and one file travels instead of 18k;
with the tracked tree (~22 MiB) the pack must fit a 64 MiB upload. The compact labels keep the 62
params only, whitened in fp16 (4 MB against 36); the reader derives the 68 points and angles again.
The pack is research data under its upstream terms: keep it in an ignored folder, never commit it.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

from edgefa.data.aflw_train import CROP_BLOB, CROP_OFFSETS
from edgefa.data.labels import compact_labels, read_labels
from edgefa.errors import EdgefaError
from edgefa.paths import shared_root

TEACHER = Path("peers/3ddfa_v2_mb05/mb05_120x120.pth")
PACKED_LABELS = Path("labels.npz")
BFM = Path("data/bfm68")
AFLW = Path("data/aflw-train")
LABELS = ("pts21.npy", "roi_box.npy", "yaws.npy")


def pack(shared: Path, out: Path, quality: int = 50, labels: Path | None = None) -> dict:
    """Write the pack to ``out`` (a new folder, renamed into place when complete)."""
    import cv2

    from edgefa.data.aflw2000 import _read_list

    src = shared / AFLW
    for need in [src / n for n in ("train.list", *LABELS)] + [shared / TEACHER, shared / BFM / "u_base.txt"]:
        if not need.exists():
            raise EdgefaError(f"{need}: not found (is {shared} the shared data folder?)")
    names = _read_list(src / "train.list")
    if labels is not None:
        read_labels(labels, names)  # a missing, broken or mismatched file fails before any work
    if out.exists():
        raise EdgefaError(f"{out}: exists; remove it or pick a new folder")
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        (tmp / AFLW).mkdir(parents=True)
        offsets = [0]
        with open(tmp / AFLW / CROP_BLOB, "wb") as blob:
            for name in names:
                image = cv2.imread(str(src / "crops" / name), cv2.IMREAD_COLOR)
                if image is None:
                    raise EdgefaError(f"{src / 'crops' / name}: not a readable image")
                ok, data = cv2.imencode(".webp", image, [cv2.IMWRITE_WEBP_QUALITY, quality])
                if not ok:
                    raise EdgefaError(f"{name}: WebP encoding failed")
                blob.write(data.tobytes())
                offsets.append(offsets[-1] + len(data))
        np.save(tmp / AFLW / CROP_OFFSETS, np.asarray(offsets, dtype=np.int64))
        for label in ("train.list", *LABELS):
            shutil.copy2(src / label, tmp / AFLW / label)
        if labels is not None:
            # beside data/, not in it: a group that reads no labels carries data/ without them
            compact_labels(labels, tmp / PACKED_LABELS)
        shutil.copytree(shared / BFM, tmp / BFM)
        (tmp / TEACHER).parent.mkdir(parents=True)
        shutil.copy2(shared / TEACHER, tmp / TEACHER)
    except BaseException:  # nothing partial is left behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    tmp.rename(out)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    return {"faces": len(names), "megabytes": round(size / 1e6, 1), "quality": quality}


def archive(folder: Path) -> Path:
    """``folder`` as one gzip tar beside it (written to a temp name, then renamed)."""
    import tarfile

    out = folder.with_name(folder.name + ".tgz")
    tmp = out.with_name(out.name + ".partial")
    with tarfile.open(tmp, "w:gz", compresslevel=1) as tar:  # WebP does not compress; the headers do
        for path in sorted(folder.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(folder)), recursive=False)
    tmp.rename(out)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", help="new folder for the pack (keep it git-ignored, e.g. .pack)")
    parser.add_argument("--shared", default=None, help="the shared data folder (default: $EDGEFA_SHARED or ../shared)")
    parser.add_argument("--quality", type=int, default=50, help="WebP quality 1-100")
    parser.add_argument("--labels", help="a refined-labels file to pack (compact) as labels.npz")
    parser.add_argument("--archive", action="store_true", help="also write OUTPUT.tgz (one file)")
    args = parser.parse_args(argv)
    try:
        if not 1 <= args.quality <= 100:
            raise EdgefaError(f"--quality {args.quality}: expected 1-100")
        info = pack(Path(args.shared) if args.shared else shared_root(), Path(args.output), args.quality,
                    Path(args.labels) if args.labels else None)
    except EdgefaError as exc:
        print(f"pack_data: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.output}: {info['faces']} faces, {info['megabytes']} MB (WebP q{info['quality']})")
    if args.archive:
        path = archive(Path(args.output))
        print(f"wrote {path}: {path.stat().st_size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
