"""Evaluate any predictor on any dataset: NME by yaw bin, pose MAE, CED/AUC (``edgefa eval``)."""
from __future__ import annotations

import time

import numpy as np
from tqdm import tqdm

from edgefa.data.base import collate, crop_to_original
from edgefa.errors import EdgefaError
from edgefa.metrics import BIN_NAMES, CED_MAX_NME, CED_STEPS, auc, ced_curve, nme, nme_by_yaw, pose_mae


def predict_dataset(predictor, dataset, batch: int = 64, workers: int = 0, progress: bool = True) -> dict:
    """Run the predictor over the dataset; returns its landmarks (crop pixels of the predictor's
    crop size) and pose, with the labels needed for metrics."""
    if workers:  # decoding in worker processes: torch's DataLoader
        from edgefa.data.workers import WorkerLoader

        loader = WorkerLoader(dataset, batch_size=batch, shuffle=False, num_workers=workers)
    else:  # in process, torch-free (the runtime install)
        loader = (collate([dataset[i] for i in range(start, min(start + batch, len(dataset)))])
                  for start in range(0, len(dataset), batch))
    out = {k: [] for k in ("landmarks", "pred_pose", "roi_box", "pts68", "pts21", "pose")}
    total = -(-len(dataset) // batch)
    for sample in tqdm(loader, desc=f"eval {predictor.name}", unit="batch", total=total,
                       disable=None if progress else True, leave=False):
        lms, pose = predictor.predict_geometry(np.asarray(sample["image"]))
        out["landmarks"].append(lms)
        out["pred_pose"].append(pose)
        for key in ("roi_box", "pts68", "pts21", "pose"):
            out[key].append(np.asarray(sample[key]))
    return {k: np.concatenate(v) for k, v in out.items()}


def evaluate(predictor, dataset, batch: int = 64, workers: int = 0, progress: bool = True) -> dict:
    start = time.perf_counter()
    raw = predict_dataset(predictor, dataset, batch, workers, progress)
    seconds = time.perf_counter() - start
    result = {"faces": len(dataset), "seconds": round(seconds, 2)}
    result.update(score_predictions(raw, dataset, predictor.crop_size))
    return result


def validation_metrics(result: dict, data: str, what: str) -> dict:
    """What a checkpoint stores as its ``metrics``: the 68-point block of an ``evaluate`` result, or
    the AFLW-21 one where the data has no 68-point labels, without per-face arrays or CED curves.
    ``what`` names the argument that gave ``data`` in the error."""
    block = result.get("nme") or result.get("nme21")
    if block is None:
        raise EdgefaError(f"{what} {data}: has neither 68-point nor AFLW-21 labels to validate on")
    return {k: v for k, v in block.items() if k not in ("per_face", "ced")}


def score_predictions(raw: dict, dataset, crop_size: int) -> dict:
    """Metrics of ``predict_dataset`` output: NME blocks (per label set), AFLW-21 NME or pose MAE."""
    crop_pts = raw["landmarks"].astype(np.float64) * (dataset.size / crop_size)
    pred68 = crop_to_original(crop_pts, raw["roi_box"], dataset.size)
    yaws = raw["pose"][:, 0]
    result = {}

    def nme_block(gt):
        """Faces whose labels are not all finite are left out, counted and named, never silently."""
        labelled = np.isfinite(gt[..., :2]).all(axis=(1, 2))
        per_face = np.full(len(gt), np.nan)
        per_face[labelled] = nme(pred68[labelled], gt[labelled])
        scored = per_face[labelled]
        block = nme_by_yaw(scored, yaws[labelled])
        block["auc7"] = auc(scored)
        x, y = ced_curve(scored, CED_MAX_NME, CED_STEPS)
        block["ced"] = {"nme": x.round(3).tolist(), "fraction": y.round(5).tolist()}
        block["per_face"] = [None if np.isnan(v) else round(float(v), 4) for v in per_face]
        block["faces"] = int(labelled.sum())
        if not labelled.all():
            names = list(getattr(dataset, "names", []))
            left_out = [names[i] if i < len(names) else str(i) for i in np.flatnonzero(~labelled)]
            block["left_out"] = {"faces": len(left_out), "reason": "68-point labels not finite (NaN / Inf)",
                                 "examples": left_out[:5]}
        return block

    has68 = np.isfinite(raw["pts68"][..., :2]).all(axis=(1, 2))
    if has68.any():
        result["nme"] = nme_block(raw["pts68"])
        for name, gt in getattr(dataset, "alt_labels", {}).items():
            if np.isfinite(gt[..., :2]).all(axis=(1, 2)).any():
                result[f"nme_{name}"] = nme_block(gt)
    elif np.isfinite(raw["pts21"][..., 0]).any():
        result["nme21"] = nme21_block(pred68, raw["pts21"], yaws)
    if np.isfinite(raw["pose"]).any():
        result["pose_mae"] = pose_mae(raw["pred_pose"], raw["pose"])
    return result


def nme21_block(pred68: np.ndarray, pts21: np.ndarray, yaws: np.ndarray) -> dict:
    """NME over the visible AFLW points that have a 68-point counterpart (a proxy for data without
    68-point labels), normalised by sqrt(w * h) of those visible points' box."""
    from edgefa.data.aflw_train import AFLW21_TO_68

    idx21 = [i for i, j in sorted(AFLW21_TO_68.items()) if j is not None]
    idx68 = [AFLW21_TO_68[i] for i in idx21]
    gt, pred = pts21[:, idx21], pred68[:, idx68, :2]
    per_face = np.full(len(gt), np.nan)
    for k in range(len(gt)):
        vis = np.isfinite(gt[k, :, 0])
        if vis.sum() >= 3:
            extent = gt[k, vis].max(0) - gt[k, vis].min(0)
            norm = np.sqrt(max(extent[0] * extent[1], 1e-6))
            per_face[k] = 100.0 * np.linalg.norm(pred[k, vis] - gt[k, vis], axis=1).mean() / norm
    ok = np.isfinite(per_face)
    block = nme_by_yaw(per_face[ok], yaws[ok])
    block["faces"] = int(ok.sum())
    return block


def format_table(result: dict) -> str:
    """A papers-style table: NME per yaw bin, balanced mean, plain mean, std; pose MAE."""
    lines = [f"model: {result.get('model', '?')}   data: {result.get('data', '?')}   "
             f"faces: {result['faces']}   time: {result['seconds']:.1f} s"]
    blocks = [(k, v) for k, v in result.items() if k.startswith("nme")]
    if "nme21" in result:
        lines.append("NME over the visible AFLW-21 points with a 68-point counterpart (no 68-point labels here)")
    if blocks:
        head = f"{'NME %':<18}" + "".join(f"{b:>9}" for b in BIN_NAMES) + \
            f"{'mean':>9}{'plain':>9}{'std':>8}{'AUC@7':>8}"
        lines += [head, "-" * len(head)]
        for key, blk in blocks:
            label = "labels: " + (key.split("_", 1)[1] if "_" in key else ("aflw-21" if key == "nme21" else "original"))
            lines.append(f"{label:<18}" + "".join(f"{blk['bins'][b]:>9.3f}" for b in BIN_NAMES)
                         + f"{blk['balanced_mean']:>9.3f}{blk['plain_mean']:>9.3f}{blk['bin_std']:>8.3f}"
                         + f"{blk.get('auc7', float('nan')):>8.3f}")
        counts = blocks[0][1]["counts"]
        lines.append(f"{'faces per bin':<18}" + "".join(f"{counts[b]:>9d}" for b in BIN_NAMES))
        for key, blk in blocks:
            if blk.get("left_out"):
                out = blk["left_out"]
                lines.append(f"{key}: {out['faces']} of {result['faces']} faces left out, {out['reason']} "
                             f"(e.g. {', '.join(out['examples'])})")
    else:
        lines.append("NME: n/a (the dataset has no 68-point labels)")
    pose = result.get("pose_mae")
    if pose:
        lines.append(f"pose MAE (deg, {pose['count']} faces with |yaw| <= 99): yaw {pose['yaw']:.2f}  "
                     f"pitch {pose['pitch']:.2f}  roll {pose['roll']:.2f}  mean {pose['mean']:.2f}")
    return "\n".join(lines)
