"""Fit the box -> crop rules of ``edgefa.detect.crop`` on aflw-train, so a crop cut around a detected
face (or around a first pass's landmarks) matches the crops the models were trained on.

    python -m edgefa.training.crop_rules --data ../shared/data/aflw-train --labels runs/labels/aflw-train.npz

- BlazeFace: each training crop is pasted at the centre of a black canvas twice its size (a face
  filling a photo's middle, as in a full image rather than a tight crop), the detector runs, and the
  best box (in original pixels via the crop's roi box) is related to the crop's roi box.
- Landmarks: the refined labels' 68 points (crop pixels) are related to the crop (0..size).
Each constant is the median over the train split (robust to the few bad detections); the spread
(median absolute deviation) is printed with it.

``--tune-model FILE`` fits the landmark rule a second time, for use: a model's *predicted* landmarks
spread differently from the labels, so the rule fitted on labels cuts crops unlike the training
crops. A small grid (scale x dy) is scored by the second pass's NME against the refined labels on
2,500 **train** crops (photos simulated as above); the val split is scored for the record.

``--passes-model FILE`` then checks how many model runs per face to make (the crop from the box,
then re-crops from the landmarks) on the **val** split, photos simulated as above, scored against
the refined labels, beside the same file on the training crops themselves:

    python -m edgefa.training.crop_rules --data ../shared/data/aflw-train --labels runs/labels/aflw-train.npz \
        --passes-model reports/models/mobilenetv3-small.onnx
"""
from __future__ import annotations

import argparse
import json

import numpy as np

from edgefa.data.aflw_train import AFLWTrain
from edgefa.data.images import read_image
from edgefa.detect import create_detector
from edgefa.detect.crop import FROM_LANDMARKS, FROM_LANDMARKS_ON_LABELS, CropRule, landmark_box


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


def first_passes(aligner, ds) -> list:
    """(canvas, first-pass landmarks, label points in canvas pixels, |yaw|) per face the detector finds."""
    items = []
    aligner.passes = 1
    for i in range(len(ds)):
        canvas, off = in_canvas(read_image(ds.root / "crops" / ds.names[i]))
        faces = aligner(canvas)
        if faces:
            gt = ds.labels["pts68"][i, 0].copy()
            gt[:, :2] += off
            items.append((canvas, faces[0], gt, ds.yaws[i]))
    return items


def second_pass_nme(aligner, items, rule: CropRule) -> float:
    from edgefa.metrics import nme, nme_by_yaw

    preds = [aligner.faces_from_crops(c, [f.box], [f.score], [rule(landmark_box(f.landmarks))])[0].landmarks
             for c, f, _, _ in items]
    return nme_by_yaw(nme(np.array(preds), np.array([it[2] for it in items])),
                      np.array([it[3] for it in items]))["balanced_mean"]


def tune_landmark_rule(model: str, data: str, labels: str, detector: str, n_train: int = 2500) -> dict:
    from edgefa.align import FaceAligner

    aligner = FaceAligner(model, detector=detector, threads=1)
    train = first_passes(aligner, AFLWTrain(data, split="train", labels=labels, n=n_train))
    grid = {(sc, dy): second_pass_nme(aligner, train, CropRule(0.0, dy, sc))
            for sc in np.round(np.arange(1.26, 1.50, 0.03), 2) for dy in (-0.04, -0.02, 0.0, 0.02, 0.04)}
    scale, dy = min(grid, key=grid.get)
    val = first_passes(aligner, AFLWTrain(data, split="val", labels=labels))
    return {"model": model, "train_faces": len(train), "grid_train_nme": {f"{k[0]},{k[1]}": round(v, 4) for k, v in grid.items()},
            "chosen": {"dx": 0.0, "dy": float(dy), "scale": float(scale), "train_nme": round(grid[(scale, dy)], 4)},
            "val_nme": {"chosen": round(second_pass_nme(aligner, val, CropRule(0.0, dy, scale)), 4),
                        "fitted on labels": round(second_pass_nme(aligner, val, FROM_LANDMARKS_ON_LABELS), 4)}}


def passes_on_val(model: str, data: str, labels: str, detector: str, max_passes: int = 4) -> dict:
    """Balanced NME (vs the refined labels) of 1..max_passes model runs per face, val split."""
    from edgefa.align import FaceAligner
    from edgefa.metrics import nme, nme_by_yaw

    ds = AFLWTrain(data, split="val", labels=labels)
    aligner = FaceAligner(model, detector=detector, threads=1)
    items = first_passes(aligner, ds)
    off = ds.size // 2  # in_canvas's offset
    own_crop = np.array([off, off, off + ds.size, off + ds.size], np.float32)
    preds = {k: [] for k in range(0, max_passes + 1)}  # 0: the training crop itself
    for canvas, face, _, _ in items:
        preds[1].append(face.landmarks)
        for k in range(2, max_passes + 1):
            face = aligner.faces_from_crops(canvas, [face.box], [face.score],
                                            [FROM_LANDMARKS(landmark_box(face.landmarks))])[0]
            preds[k].append(face.landmarks)
        preds[0].append(aligner.faces_from_crops(canvas, [face.box], [1.0], [own_crop])[0].landmarks)
    gts, yaws = [it[2] for it in items], [it[3] for it in items]
    gts, yaws = np.array(gts), np.array(yaws)
    scores = {("training crop" if k == 0 else f"{k} pass{'es' if k > 1 else ''}"):
              round(nme_by_yaw(nme(np.array(p), gts), yaws)["balanced_mean"], 3) for k, p in preds.items()}
    return {"model": model, "faces": int(len(gts)), "of": len(ds), "balanced_nme_vs_refined_labels": scores}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="the aflw-train folder")
    ap.add_argument("--labels", required=True, help="refined labels (python -m edgefa.training.labels)")
    ap.add_argument("--detector", default="blazeface")
    ap.add_argument("--tune-model", help="fit the landmark rule to this model's predicted landmarks (train split)")
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
    if args.tune_model:
        result["tuned_landmark_rule"] = tune_landmark_rule(args.tune_model, args.data, args.labels, args.detector)
    if args.passes_model:  # with the rules now in edgefa.detect.crop (paste the fitted ones there first)
        result["passes"] = passes_on_val(args.passes_model, args.data, args.labels, args.detector)
    print(json.dumps(result, indent=1))
    if args.output:
        from edgefa.fileio import atomic_write_json

        atomic_write_json(args.output, result)


if __name__ == "__main__":
    main()
