"""Save an 8x8 contact sheet of synthetic renders, to look at them.

    python benchmarks/contact_sheet.py reports/synthetic-contact-sheet.png [--landmarks] [--seed 0]
    python benchmarks/contact_sheet.py /tmp/poses.png --pose-sweep   # clean renders, yaw/pitch grid

``--palette N`` stores N colours (a paletted PNG, ~4x smaller; needs Pillow, which torchvision
brings), e.g. ``--palette 192`` keeps the committed 8x8 sheet under 400 KB.
``--landmarks`` also writes ``<name>-landmarks.png`` with the 68 labels drawn on the same faces.
``--pose-sweep`` renders one face per cell at fixed poses (yaw -90..90 across, pitch/expressions
down) with no occluders, to judge the geometry.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from edgefa.data.render import render_face
from edgefa.data.synthetic import SyntheticFaces, rotation_matrices, sample_params
from edgefa.draw import draw_landmarks
from edgefa.facemodel import geometry
from edgefa.facemodel.synthetic import synthetic_face_model


def save_png(path: Path, image: np.ndarray, palette: int = 0) -> None:
    if palette:
        from PIL import Image

        rgb = Image.fromarray(np.ascontiguousarray(image[:, :, ::-1]))
        rgb.quantize(palette, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    else:
        cv2.imwrite(str(path), image, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB)")


def pose_sweep_params(fm, rows: int, cols: int) -> list[np.ndarray]:
    """Fixed poses: yaw across columns; rows vary pitch, roll, shape and expression."""
    out = []
    for r in range(rows):
        rng = np.random.default_rng(1000 + r)
        base = sample_params(rng, fm)
        for c in range(cols):
            yaw = -90 + 180 * c / (cols - 1)
            pitch, roll = [(0, 0), (20, 0), (-20, 0), (0, 20)][r % 4] if r < 4 else (0, 0)
            p = base.copy()
            if r < 4:
                p[12:] = 0
            rot = rotation_matrices([yaw], [pitch], [roll])[0]
            scale = np.linalg.norm(base[:3])
            p[:12] = np.concatenate([scale * rot, base[[3, 7, 11]].reshape(3, 1)], 1).reshape(-1)
            # re-centre: the landmark bbox centre to the crop centre
            pts = geometry.landmarks(p, fm)
            p[3] += fm.size / 2 - (pts[:, 0].min() + pts[:, 0].max()) / 2
            p[7] -= fm.size / 2 - (pts[:, 1].min() + pts[:, 1].max()) / 2
            out.append(p)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start", type=int, default=0, help="first dataset index")
    parser.add_argument("--grid", type=int, default=8)
    parser.add_argument("--landmarks", action="store_true")
    parser.add_argument("--pose-sweep", action="store_true")
    parser.add_argument("--palette", type=int, default=0, help="quantise to this many colours (0: off)")
    args = parser.parse_args(argv)
    n = args.grid * args.grid
    fm = synthetic_face_model()
    if args.pose_sweep:
        params = pose_sweep_params(fm, args.grid, args.grid)
        images = [render_face(p, fm, np.random.default_rng(k), occlusion=0.0) for k, p in enumerate(params)]
        points = [geometry.landmarks(p, fm) for p in params]
    else:
        data = SyntheticFaces(n=args.start + n, seed=args.seed, face_model=fm)
        samples = [data[i] for i in range(args.start, args.start + n)]
        images, points = [s["image"] for s in samples], [s["pts68"] for s in samples]

    def sheet(tiles):
        rows = [np.concatenate(tiles[r * args.grid:(r + 1) * args.grid], 1) for r in range(args.grid)]
        return np.concatenate(rows, 0)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_png(args.out, sheet(images), args.palette)
    if args.landmarks:
        marked = args.out.with_name(args.out.stem + "-landmarks" + args.out.suffix)
        save_png(marked, sheet([draw_landmarks(im, p) for im, p in zip(images, points)]), args.palette)


if __name__ == "__main__":
    main()
