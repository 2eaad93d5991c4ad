"""From the full photo, as users run it: `edgefa predict`'s path (BlazeFace -> box rule -> model ->
landmark re-crop -> model) on AFLW2000-3D's 2,000 original images, against the 68-point labels with
the protocol's NME, beside the same model on the protocol crops.

    python benchmarks/full_image.py --model reports/models/mobilenetv3-small.onnx \
        --data ../shared/data/aflw2000-3d -o reports/full-image

A face counts as found when one detected face's landmark box overlaps the labelled face's (IoU >= 0.3;
AFLW2000 photos hold one labelled face, sometimes beside others); missed faces are counted per yaw bin
and left out of the full-image NME, whose protocol-crop twin is then given on the same faces.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edgefa.align import FaceAligner  # noqa: E402
from edgefa.benchmarks.machine import machine_line, script_command, versions_line  # noqa: E402
from edgefa.data.aflw2000 import ORIGINAL_DIR, AFLW2000Crops  # noqa: E402
from edgefa.data.base import crop_to_original  # noqa: E402
from edgefa.data.images import read_image  # noqa: E402
from edgefa.detect.blazeface import box_iou  # noqa: E402
from edgefa.detect.crop import landmark_box  # noqa: E402
from edgefa.fileio import write_md_json  # noqa: E402
from edgefa.metrics import BIN_NAMES, nme, nme_by_yaw, yaw_bin_index  # noqa: E402

MATCH_IOU = 0.3


def protocol_predictions(aligner: FaceAligner, ds: AFLW2000Crops, batch: int = 64) -> np.ndarray:
    """(N, 68, 3) landmarks in original pixels from the protocol's 120x120 crops."""
    out = []
    for start in range(0, len(ds), batch):
        idx = range(start, min(start + batch, len(ds)))
        crops = np.stack([ds[i]["image"] for i in idx])
        _, pts, _ = aligner.predictor.predict_all(crops)
        out.append(crop_to_original(pts, ds.roi_boxes[list(idx)], ds.size))
    return np.concatenate(out)


def full_image_predictions(aligner: FaceAligner, ds: AFLW2000Crops, passes: str, progress: bool):
    """(N, 68, 3) landmarks (NaN where missed) and per-image (faces found, seconds)."""
    pred = np.full((len(ds), 68, 3), np.nan)
    found, seconds = np.zeros(len(ds), int), np.zeros(len(ds))
    aligner.passes = 2 if passes == "two" else 1
    for i, name in enumerate(ds.names):
        image = read_image(ds.root / ORIGINAL_DIR / (Path(name).stem + ".jpg"))
        t = time.perf_counter()
        faces = aligner(image)
        seconds[i] = time.perf_counter() - t
        found[i] = len(faces)
        if faces:
            gt_box = landmark_box(ds.pts68[i])
            overlap = box_iou(gt_box, np.stack([landmark_box(f.landmarks) for f in faces]))
            best = int(np.argmax(overlap))
            if overlap[best] >= MATCH_IOU:
                pred[i] = faces[best].landmarks
        if progress and (i + 1) % 200 == 0:
            print(f"  {passes} pass(es): {i + 1}/{len(ds)}", file=sys.stderr)
    return pred, found, seconds


def score(pred: np.ndarray, ds: AFLW2000Crops, keep: np.ndarray) -> dict:
    return nme_by_yaw(nme(pred[keep], ds.pts68[keep]), ds.yaws[keep])


def markdown(rec: dict) -> str:
    def row(label, r):
        return f"| {label} | " + " | ".join(f"{r['bins'][b]:.3f}" for b in BIN_NAMES) + \
            f" | **{r['balanced_mean']:.3f}** | {r['plain_mean']:.3f} | {sum(r['counts'].values())} |"

    lines = [f"# From the full photo: {rec['model']} on AFLW2000-3D's original images", "",
             "What `edgefa predict` does (BlazeFace -> box rule -> model -> landmark re-crop -> model), scored "
             "against the 68-point labels with the protocol's NME (2D, sqrt(w*h) of the label box, balanced over "
             "|yaw| bins), beside the same file on the protocol's 120x120 crops. Box and landmark rules were fitted "
             "on aflw-train (`python -m edgefa.training.crop_rules`), not here.", "",
             "| input | [0,30] | (30,60] | (60,90] | balanced | plain | faces |", "| --- | --- | --- | --- | --- | --- | --- |",
             row("protocol crops, all faces", rec["protocol_all"])]
    for passes in ("two", "one"):
        r = rec[f"full_{passes}"]
        lines.append(row(f"full image, {passes} pass{'es' if passes == 'two' else ''} (found faces)", r["nme"]))
    lines.append(row("protocol crops, the faces found", rec["full_two"]["protocol_same_faces"]))
    two = rec["full_two"]
    gap = two["nme"]["balanced_mean"] - two["protocol_same_faces"]["balanced_mean"]
    verdict = "met" if gap <= 0.3 else f"missed by {gap - 0.3:.3f}"
    lines += ["", f"- Full image (two passes) vs protocol crops on the same faces: **{gap:+.3f}** NME points "
              f"(goal: within 0.3; {verdict}). Two passes is `edgefa predict`'s default, chosen on aflw-train's "
              "val split (`python -m edgefa.training.crop_rules ... --passes-model FILE`, with the MobileNetV3-Small "
              "weights shipped then (training stage 2): 3.736 NME against the refined labels with two passes, 3.896 "
              "with one, 3.731 with three: not worth a third model run). The landmark rule of the second pass was "
              "fitted to those weights' predictions on aflw-train's train split (`... --tune-model FILE`), not "
              "refitted for later weights of the same architecture.",
              f"- Faces missed by the detector (no detected face overlapping the labelled one): "
              f"{two['missed']} of {rec['n']} — by |yaw| bin " +
              ", ".join(f"{b} {two['missed_by_bin'][b]}" for b in BIN_NAMES) + f"; photos with no face found: "
              f"{two['no_face']}; with more than one: {two['several_faces']}.",
              f"- Time per photo (detector + two model runs, one thread each, mean): {two['ms_per_image']:.1f} ms.",
              "", "## How this was made", "", f"- `{rec['command']}`", f"- {rec['machine']}", f"- {rec['versions']}", ""]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="any --model spec: .onnx, .tflite, checkpoint, NAME:pretrained")
    ap.add_argument("--data", required=True, help="the aflw2000-3d folder (with AFLW2000/ originals)")
    ap.add_argument("--detector", default="blazeface")
    ap.add_argument("--n", type=int, default=None, help="first N faces only (a quick look)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("-o", "--output", required=True, help="report stem: writes STEM.md and STEM.json")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    ds = AFLW2000Crops(args.data, n=args.n)
    aligner = FaceAligner(args.model, detector=args.detector, threads=args.threads)
    protocol = protocol_predictions(aligner, ds)
    every = np.ones(len(ds), bool)
    rec = {"model": Path(args.model).name, "n": len(ds), "detector": args.detector,
           "protocol_all": score(protocol, ds, every)}
    for passes in ("two", "one"):
        pred, found, seconds = full_image_predictions(aligner, ds, passes, not args.quiet)
        hit = np.isfinite(pred).all(axis=(1, 2))
        bins = yaw_bin_index(ds.yaws)
        rec[f"full_{passes}"] = {
            "nme": score(pred, ds, hit), "protocol_same_faces": score(protocol, ds, hit),
            "missed": int((~hit).sum()), "missed_by_bin": {b: int((~hit & (bins == k)).sum()) for k, b in enumerate(BIN_NAMES)},
            "no_face": int((found == 0).sum()), "several_faces": int((found > 1).sum()),
            "ms_per_image": float(seconds.mean() * 1000)}
    rec.update(command=script_command(argv), machine=machine_line(), versions=versions_line())
    path = write_md_json(args.output, rec, markdown(rec))
    print(markdown(rec))
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
