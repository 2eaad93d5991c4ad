"""Fit the box -> crop rules of ``edgefa.detect.crop`` on aflw-train, so a crop cut around a detected
face (or around a first pass's landmarks) matches the crops the models were trained on.

    python -m training.crop_rules --data ../shared/data/aflw-train --labels runs/labels/aflw-train.npz

- BlazeFace: each training crop is pasted at the centre of a black canvas twice its size (a face
  filling a photo's middle, as in a full image rather than a tight crop), the detector runs, and the
  best box (in original pixels via the crop's roi box) is related to the crop's roi box.
- Landmarks: the refined labels' 68 points (crop pixels) are related to the crop (0..size).
Each constant is the median over the train split (robust to the few bad detections); the spread
(median absolute deviation) is printed with it.

``--passes-model FILE`` then checks how many model runs per face to make (the crop from the box,
then re-crops from the landmarks) on the **val** split, photos simulated as above, scored against
the refined labels, beside the same file on the training crops themselves:

    python -m training.crop_rules --data ../shared/data/aflw-train --labels runs/labels/aflw-train.npz \
        --passes-model reports/models/mobilenetv3-small.onnx
"""
from __future__ import annotations

import argparse
import json

import numpy as np

from edgefa.data.aflw_train import AFLWTrain
from edgefa.data.images import read_image
from edgefa.detect import create_detector
from edgefa.detect.crop import FROM_LANDMARKS, landmark_box


def relation(boxes: np.ndarray, crops: np.ndarray) -> dict:
    """Median (dx, dy, scale) taking ``boxes`` to ``crops`` (both (N, 4)), with their MADs."""
    size = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    dx = ((crops[:, 0] + crops[:, 2]) - (boxes[:, 0] + boxes[:, 2])) / 2 / size
    dy = ((crops[:, 1] + crops[:, 3]) - (boxes[:, 1] + boxes[:, 3])) / 2 / size
    scale = np.maximum(crops[:, 2] - crops[:, 0], crops[:, 3] - crops[:, 1]) / size
    out = {}
    for name, v in (("dx", dx), ("dy", dy), ("scale", scale)):
        med = float(np.median(v))
        out[name], out[name + "_mad"] = round(med, 4), round(float(np.median(np.abs(v - med))), 4)
    out["n"] = int(len(boxes))
    return out


def detector_boxes(ds: AFLWTrain, detector, indices) -> tuple[np.ndarray, np.ndarray, int]:
    boxes, crops, missed = [], [], 0
    for i in indices:
        crop = read_image(ds.root / "crops" / ds.names[i])
        s = crop.shape[0]
        canvas, off = in_canvas(crop)
        found = detector(canvas)
        if not found:
            missed += 1
            continue
        box = found[0].box - off  # canvas -> crop pixels
        roi = ds.roi_boxes[i]
        k = (roi[2] - roi[0]) / s
        boxes.append([box[0] * k + roi[0], box[1] * k + roi[1], box[2] * k + roi[0], box[3] * k + roi[1]])
        crops.append(roi)
    return np.array(boxes), np.array(crops), missed


def in_canvas(crop: np.ndarray) -> tuple[np.ndarray, int]:
    """The crop at the centre of a black canvas twice its size, and the offset."""
    s = crop.shape[0]
    canvas = np.zeros((2 * s, 2 * s, 3), np.uint8)
    canvas[s // 2:s // 2 + s, s // 2:s // 2 + s] = crop
    return canvas, s // 2


def passes_on_val(model: str, data: str, labels: str, detector: str, max_passes: int = 4) -> dict:
    """Balanced NME (vs the refined labels) of 1..max_passes model runs per face, val split."""
    from edgefa.align import FaceAligner
    from edgefa.metrics import nme, nme_by_yaw

    ds = AFLWTrain(data, split="val", labels=labels)
    aligner = FaceAligner(model, detector=detector, threads=1)
    preds = {k: [] for k in range(0, max_passes + 1)}  # 0: the training crop itself
    gts, yaws = [], []
    for i in range(len(ds)):
        crop = read_image(ds.root / "crops" / ds.names[i])
        canvas, off = in_canvas(crop)
        aligner.passes = 1
        faces = aligner(canvas)
        if not faces:
            continue
        face = faces[0]
        preds[1].append(face.landmarks)
        for k in range(2, max_passes + 1):
            face = aligner._faces(canvas, [face.box], [face.score], [FROM_LANDMARKS(landmark_box(face.landmarks))])[0]
            preds[k].append(face.landmarks)
        own = aligner._faces(canvas, [face.box], [1.0], [np.array([off, off, off + ds.size, off + ds.size], np.float32)])
        preds[0].append(own[0].landmarks)
        gt = ds.labels["pts68"][i, 0].copy()
        gt[:, :2] += off
        gts.append(gt)
        yaws.append(ds.yaws[i])
    gts, yaws = np.array(gts), np.array(yaws)
    scores = {("training crop" if k == 0 else f"{k} pass{'es' if k > 1 else ''}"):
              round(nme_by_yaw(nme(np.array(p), gts), yaws)["balanced_mean"], 3) for k, p in preds.items()}
    return {"model": model, "faces": int(len(gts)), "of": len(ds), "balanced_nme_vs_refined_labels": scores}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="the aflw-train folder")
    ap.add_argument("--labels", required=True, help="refined labels (python -m training.labels)")
    ap.add_argument("--detector", default="blazeface")
    ap.add_argument("--passes-model", help="also score 1-4 passes of this model file on the val split")
    ap.add_argument("-o", "--output", help="write the fitted rules here as JSON")
    args = ap.parse_args(argv)
    ds = AFLWTrain(args.data, split="train", labels=args.labels)
    indices = np.arange(len(ds))
    boxes, crops, missed = detector_boxes(ds, create_detector(args.detector), indices)
    from_box = relation(boxes, crops)
    from_box["missed"] = missed
    size = ds.size
    pts = ds.labels["pts68"][:, 0]  # the crop's own labels (not the mirror's), crop pixels
    lm_boxes = np.stack([landmark_box(p) for p in pts])
    from_landmarks = relation(lm_boxes, np.tile([0, 0, size, size], (len(pts), 1)).astype(np.float32))
    result = {"data": "aflw-train split=train", "detector": args.detector,
              "from_box": from_box, "from_landmarks": from_landmarks}
    if args.passes_model:  # with the rules now in edgefa.detect.crop (paste the fitted ones there first)
        result["passes"] = passes_on_val(args.passes_model, args.data, args.labels, args.detector)
    print(json.dumps(result, indent=1))
    if args.output:
        from edgefa.fileio import atomic_write_json

        atomic_write_json(args.output, result)


if __name__ == "__main__":
    main()
