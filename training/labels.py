"""Refined 62-parameter labels for aflw-train (``python -m edgefa.training.labels OUT.npz``).

For every crop and its mirror image:
1. **prior**: the teacher's 68 points averaged over the crop and its flip, as 62 parameters
   (fitted to those points, starting from the teacher's own parameters);
2. **refinement**: the parameters fitted to the *visible* AFLW-21 ground truth with the prior as a
   whitened ridge term, ``sum_visible |C(p)_k - gt_k|^2 / sigma^2 + lam |w - w_prior|^2``.

``C`` is the AFLW-21 correspondence: each AFLW point is a model-space anchor (a mean of some of the
68 landmarks) plus a model-space offset learned by least squares on the train split against the
prior, so it rotates with the head; the "naive" alternative is the fixed index map. Which one, and
lam (only lam * sigma^2 matters), are chosen by leave-one-point-out on the validation split: hide
one visible point, fit to the others, score the hidden one. AFLW2000-3D is only a check
(``--check``): the same procedure on its 21 points, scored against its 68-point labels.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from edgefa.data.aflw_train import AFLW21_TO_68
from edgefa.data.base import crop_to_original, original_to_crop
from edgefa.data.labels import LABELS_FORMAT, save_labels
from edgefa.errors import EdgefaError
from edgefa.facemodel.base import FaceModel
from edgefa.facemodel.geometry import dewhiten, landmarks, model_space_vertices, project_to_crop, split_params, whiten
from edgefa.fileio import check_writable
from edgefa.metrics import face_size
from edgefa.training.augment import FLIP_21, FLIP_68

# AFLW point -> the 68 landmarks whose mean anchors it (brows, eye corners and centres, ears at the
# top of the jaw line, nose wings and tip, mouth corners and centre, chin); offsets do the rest
ANCHORS = [[17], [19], [21], [22], [24], [26], [36], [36, 37, 38, 39, 40, 41], [39], [42],
           [42, 43, 44, 45, 46, 47], [45], [0], [31], [30], [35], [16], [48, 60], [51, 57, 62, 66],
           [54, 64], [8]]
LAMBDAS = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0)
SIGMA = 2.0  # crop pixels; only lam * sigma^2 matters, so sigma is fixed and lam searched


class Correspondence:
    """AFLW-21 points from 62 raw params: anchor (mean of 68-point subsets) + model-space offset."""

    def __init__(self, kind: str, offsets: np.ndarray | None = None):
        if kind not in ("naive", "learned"):
            raise EdgefaError(f"correspondence: unknown '{kind}' (valid: naive, learned)")
        self.kind = kind
        anchor = np.zeros((21, 68))
        usable = np.zeros(21, dtype=bool)
        for k in range(21):
            idx = ANCHORS[k] if kind == "learned" else ([AFLW21_TO_68[k]] if AFLW21_TO_68[k] is not None else [])
            if idx:
                anchor[k, idx] = 1.0 / len(idx)
                usable[k] = True
        self.anchor, self.usable = anchor, usable
        self.offsets = np.zeros((21, 3)) if offsets is None else np.asarray(offsets, dtype=np.float64)

    def model_points(self, raw: torch.Tensor, fm: FaceModel) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 21, 3) model-space anchors (offsets not added) and the pose (B, 3, 4)."""
        pose, a_shp, a_exp = split_params(raw)
        verts = model_space_vertices(a_shp, a_exp, fm.mean, fm.shape_basis, fm.expr_basis)
        return torch.as_tensor(self.anchor, dtype=raw.dtype, device=raw.device) @ verts, pose

    def __call__(self, raw: torch.Tensor, fm: FaceModel) -> torch.Tensor:
        """Raw params (B, 62) -> AFLW-21 points (B, 21, 2) in crop pixels (unusable points: anchor 0)."""
        pts, pose = self.model_points(raw, fm)
        pts = pts + torch.as_tensor(self.offsets, dtype=raw.dtype, device=raw.device)
        return project_to_crop(pts, pose, fm.size)[..., :2]

    def learn_offsets(self, prior_raw: np.ndarray, gt21: np.ndarray, fm: FaceModel) -> np.ndarray:
        """Least-squares model-space offset per point: gt - proj(anchor) = J offset, J = D (sR)[:2].

        Two passes; the second drops residuals over 3x the point's median (mislabelled points)."""
        if self.kind == "naive":
            return self.offsets
        raw = torch.as_tensor(prior_raw, dtype=torch.float64)
        anchors, pose = self.model_points(raw, fm)
        base = project_to_crop(anchors, pose, fm.size)[..., :2].numpy()
        jac = pose[:, :2, :3].numpy() * np.array([1.0, -1.0])[None, :, None]  # crop y points down
        offsets = np.zeros((21, 3))
        for k in range(21):
            vis = np.isfinite(gt21[:, k, 0])
            keep = vis.copy()
            for _ in range(2):
                j = jac[keep]  # (n, 2, 3)
                r = gt21[keep, k] - base[keep, k]
                lhs = np.einsum("nij,nik->jk", j, j)
                lhs += 1e-9 * np.trace(lhs) * np.eye(3)
                offsets[k] = np.linalg.solve(lhs, np.einsum("nij,ni->j", j, r))
                err = np.full(len(gt21), np.inf)
                err[vis] = np.linalg.norm(gt21[vis, k] - base[vis, k] - jac[vis] @ offsets[k], axis=-1)
                keep = vis & (err <= 3.0 * np.median(err[vis]))
        self.offsets = offsets
        return offsets


def fit_whitened(prior_w: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, points_fn,
                 lam: float, sigma: float, steps: int = 300, lr: float = 0.05) -> torch.Tensor:
    """argmin_w sum_k mask_k |points_fn(w)_k - target_k|^2 / sigma^2 + lam |w - prior_w|^2, per row.

    Adam from the prior with a cosine learning rate: each row's problem is separate and Adam's
    per-element steps keep the rows independent."""
    w = prior_w.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([w], lr=lr)
    target = torch.nan_to_num(target)
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        pred = points_fn(w)[..., :target.shape[-1]]
        data = (((pred - target) ** 2).sum(-1) * mask).sum(-1) / sigma ** 2
        loss = (data + lam * ((w - prior_w) ** 2).sum(-1)).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return w.detach()


def _chunked(fn, n: int, chunk: int = 4096):
    return torch.cat([fn(slice(i, min(n, i + chunk))) for i in range(0, n, chunk)])


def mirror_points(pts: np.ndarray, size: int, order: np.ndarray) -> np.ndarray:
    """Points of a crop -> the same points on its horizontal mirror (x -> size - 1 - x, re-ordered)."""
    out = np.array(pts[:, order], dtype=np.float64, copy=True)
    out[..., 0] = size - 1 - out[..., 0]
    return out


def teacher_prior(images: np.ndarray, teacher, fm: FaceModel, progress: bool = True) -> dict:
    """Teacher params on each crop and its mirror, and the flip-averaged 68 points of both views."""
    size = images.shape[1]
    raw, raw_m = [], []
    for i in range(0, len(images), 256):
        batch = torch.from_numpy(np.ascontiguousarray(images[i:i + 256]))
        raw.append(teacher(batch).double().numpy())
        raw_m.append(teacher(batch.flip(2)).double().numpy())
        if progress and (i // 256) % 10 == 0:
            print(f"  teacher {i}/{len(images)}", file=sys.stderr, flush=True)
    raw, raw_m = np.concatenate(raw), np.concatenate(raw_m)
    pts, pts_m = landmarks(raw, fm), landmarks(raw_m, fm)
    avg = (pts + mirror_points(pts_m, size, FLIP_68)) / 2
    return {"raw": raw, "raw_mirror": raw_m, "avg68": avg, "avg68_mirror": mirror_points(avg, size, FLIP_68)}


def prior_params(teacher_raw: np.ndarray, avg68: np.ndarray, fm: FaceModel, steps: int = 300) -> np.ndarray:
    """Raw params whose 68 points match the flip-averaged points (1 px noise), near the teacher's own."""
    def run(sl):
        w0 = whiten(torch.as_tensor(teacher_raw[sl]), fm)
        target = torch.as_tensor(avg68[sl])
        return fit_whitened(w0, target, torch.ones(target.shape[:2], dtype=target.dtype),
                            lambda w: landmarks(dewhiten(w, fm), fm), lam=1.0, sigma=1.0, steps=steps)
    return dewhiten(_chunked(run, len(teacher_raw)), fm).numpy()


def refine(prior_raw: np.ndarray, gt21: np.ndarray, corr: Correspondence, fm: FaceModel, lam: float,
           sigma: float = SIGMA, steps: int = 300) -> np.ndarray:
    """Raw params fitted to the visible (finite) points of ``gt21`` (B, 21, 2), crop pixels."""
    usable = torch.as_tensor(corr.usable)

    def run(sl):
        target = torch.as_tensor(gt21[sl], dtype=torch.float64)
        mask = (torch.isfinite(target[..., 0]) & usable).double()
        w0 = whiten(torch.as_tensor(prior_raw[sl], dtype=torch.float64), fm)
        return fit_whitened(w0, target, mask, lambda w: corr(dewhiten(w, fm), fm), lam, sigma, steps)
    return dewhiten(_chunked(run, len(prior_raw)), fm).numpy()


def leave_one_out(prior_raw: np.ndarray, gt21: np.ndarray, corr: Correspondence, fm: FaceModel,
                  lam: float, sigma: float = SIGMA, steps: int = 300, scale: np.ndarray | None = None,
                  scored: np.ndarray | None = None) -> float:
    """Mean error (% of the face size ``scale``, per face) of each visible point in ``scored`` (default:
    the points ``corr`` uses) predicted by a fit to the face's other points. Correspondences are
    compared on the same ``scored`` points (those the naive index map has)."""
    scored = corr.usable if scored is None else np.asarray(scored) & corr.usable
    rows, hidden = np.nonzero(np.isfinite(gt21[..., 0]) & scored[None])
    target = gt21[rows].copy()
    target[np.arange(len(rows)), hidden] = np.nan
    fitted = refine(prior_raw[rows], target, corr, fm, lam, sigma, steps)
    pred = corr(torch.as_tensor(fitted), fm).numpy()[np.arange(len(rows)), hidden]
    err = np.linalg.norm(pred - gt21[rows, hidden], axis=-1)
    norm = scale[rows] if scale is not None else np.ones(len(rows))
    return float(100.0 * np.mean(err / norm))


def load_crops(dataset) -> tuple[np.ndarray, np.ndarray]:
    """Decoded crops (N, S, S, 3) uint8 and the 21 points (N, 21, 2) in crop pixels."""
    from edgefa.data.workers import WorkerLoader

    images, pts = [], []
    # worker processes only pay for the full set; small sets decode in-process (no fork at all)
    workers = 2 if len(dataset) > 2000 else 0
    for batch in WorkerLoader(dataset, batch_size=512, num_workers=workers):
        images.append(batch["image"].numpy())
        pts.append(original_to_crop(batch["pts21"].numpy(), batch["roi_box"].numpy(), dataset.size))
    return np.concatenate(images), np.concatenate(pts)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def label_quality(teacher, corr: Correspondence, lam: float, fm: FaceModel, spec: str, steps: int = 300) -> dict:
    """The label procedure run on AFLW2000-3D's own 21 points, scored on its 68-point labels (a check,
    never used to choose anything): teacher, flip-averaged prior, refined."""
    from edgefa.data.aflw2000 import AFLW2000Crops, _load_npy
    from edgefa.data.registry import create_dataset
    from edgefa.metrics import nme, nme_by_yaw

    ds = create_dataset(spec)
    if not isinstance(ds, AFLW2000Crops):
        raise EdgefaError(f"--check {spec}: expected an aflw2000-3d spec")
    pts21 = _load_npy(ds.root / "labels" / "AFLW2000-3D.pts21.npy", None, (2, 21), "21 AFLW points")
    pts21 = pts21[:len(ds)].transpose(0, 2, 1).astype(np.float64)
    pts21[pts21[..., 0] < 0] = np.nan
    images, _ = load_crops(ds)
    gt21 = original_to_crop(pts21, ds.roi_boxes, ds.size)
    prior = teacher_prior(images, teacher, fm, progress=False)
    prior_raw = prior_params(prior["raw"], prior["avg68"], fm, steps)
    refined = refine(prior_raw, gt21, corr, fm, lam, steps=steps)
    rows = {}
    for name, pts in (("teacher", landmarks(prior["raw"], fm)), ("flip-averaged prior", prior["avg68"]),
                      ("refined", landmarks(refined, fm))):
        block = nme_by_yaw(nme(crop_to_original(pts, ds.roi_boxes, ds.size), ds.pts68), ds.yaws)
        rows[name] = {"balanced_mean": round(block["balanced_mean"], 4),
                      "bins": {k: round(v, 4) for k, v in block["bins"].items()}}
    return {"data": spec, "faces": len(ds), "nme": rows}


def make_labels(out: str | Path, data: str, teacher_spec: str, check: str | None = None, steps: int = 300,
                lambdas=LAMBDAS, loo_faces: int = 0) -> dict:
    """Write the labels file ``out``; returns its metadata (with the selection table)."""
    from edgefa.data.registry import create_dataset
    from edgefa.facemodel.bfm import load_bfm68
    from edgefa.paths import find_bfm68, shell_command, unfill_shared
    from edgefa.training.distill import Teacher

    out = check_writable(out, "labels")
    start = time.perf_counter()
    ds = create_dataset(data)
    if not hasattr(ds, "pts21") or not hasattr(ds, "names"):
        raise EdgefaError(f"--data {data}: expected an aflw-train spec (crops with 21 AFLW points)")
    fm = load_bfm68(find_bfm68(None))
    teacher = Teacher(teacher_spec, fm)
    _log(f"decoding {len(ds)} crops")
    images, gt21 = load_crops(ds)
    size = ds.size
    val = ds.val_mask() if hasattr(ds, "val_mask") else np.zeros(len(ds), dtype=bool)
    _log("teacher on every crop and its mirror")
    prior = teacher_prior(images, teacher, fm)
    _log("priors: parameters of the flip-averaged points")
    prior_raw = prior_params(prior["raw"], prior["avg68"], fm, steps)
    prior_raw_m = prior_params(prior["raw_mirror"], prior["avg68_mirror"], fm, steps)
    gt21_m = mirror_points(gt21, size, FLIP_21)
    train = ~val
    learned = Correspondence("learned")
    learned.learn_offsets(np.concatenate([prior_raw[train], prior_raw_m[train]]),
                          np.concatenate([gt21[train], gt21_m[train]]), fm)
    naive = Correspondence("naive")
    sel = np.nonzero(val)[0]
    if loo_faces and len(sel) > loo_faces:
        sel = sel[np.linspace(0, len(sel) - 1, loo_faces).astype(int)]
    if len(sel) == 0:
        raise EdgefaError(f"--data {data}: no validation faces to choose the fit's settings on (use split=all)")
    scale = face_size(prior["avg68"][sel])
    table = []
    for corr in (naive, learned):
        for lam in lambdas:
            score = leave_one_out(prior_raw[sel], gt21[sel], corr, fm, lam, steps=steps, scale=scale,
                                  scored=naive.usable)
            table.append({"correspondence": corr.kind, "lambda": lam, "loo_nme": round(score, 4)})
            _log(f"  leave-one-point-out on {len(sel)} val faces: {corr.kind:7s} lambda {lam:6g}: {score:.3f} %")
    best = min(table, key=lambda r: r["loo_nme"])
    corr = learned if best["correspondence"] == "learned" else naive
    _log(f"chosen: {best['correspondence']} correspondence, lambda {best['lambda']:g}; refining every crop and mirror")
    params = np.stack([refine(prior_raw, gt21, corr, fm, best["lambda"], steps=steps),
                       refine(prior_raw_m, gt21_m, corr, fm, best["lambda"], steps=steps)], axis=1)
    meta = {"format": LABELS_FORMAT, "data": unfill_shared(data), "teacher": unfill_shared(teacher_spec),
            "face_model": fm.name, "crops": len(ds), "sigma_px": SIGMA, "steps": steps,
            "chosen": {"correspondence": corr.kind, "lambda": best["lambda"]},
            "selection": {"method": "leave-one-point-out on the val split (every 20th crop), scored on the "
                                    "17 points both correspondences have",
                          "faces": int(len(sel)), "table": table},
            "offsets": corr.offsets.round(6).tolist(), "anchors": ANCHORS if corr.kind == "learned" else None,
            "command": shell_command(["python", "-m", "edgefa.training.labels", *sys.argv[1:]]),
            "seconds": None}
    if check:
        _log(f"check (not used to choose anything): the same procedure on {check}")
        meta["check"] = label_quality(teacher, corr, best["lambda"], fm, check, steps)
    meta["seconds"] = round(time.perf_counter() - start, 1)
    save_labels(out, list(ds.names), params, fm, meta)
    return meta


def main(argv: list[str] | None = None) -> int:
    from edgefa.paths import fill_shared

    parser = argparse.ArgumentParser(prog="python -m edgefa.training.labels", description=__doc__.split("\n\n")[0])
    parser.add_argument("output", help="labels file to write (.npz)")
    parser.add_argument("--data", default="aflw-train", help="aflw-train spec (default: the shared copy)")
    parser.add_argument("--teacher", default="3ddfa-v2-mb05:{shared}/peers/3ddfa_v2_mb05/mb05_120x120.pth",
                        help="teacher model spec for the prior")
    parser.add_argument("--check", nargs="?", const="aflw2000-3d", default=None,
                        help="also run the procedure on AFLW2000-3D's 21 points and score it (a check only)")
    parser.add_argument("--steps", type=int, default=300, help="Adam steps per fit")
    parser.add_argument("--loo-faces", type=int, default=0, help="val faces for the selection (0: all)")
    parser.add_argument("--lambdas", default=",".join(f"{v:g}" for v in LAMBDAS),
                        help="comma list of ridge weights the selection tries")
    parser.add_argument("--debug", action="store_true", help="tracebacks instead of one-line errors")
    args = parser.parse_args(argv)
    try:
        if args.steps < 1:
            raise EdgefaError(f"--steps {args.steps}: must be at least 1")
        try:
            lambdas = tuple(float(v) for v in args.lambdas.split(","))
        except ValueError:
            lambdas = ()
        if not lambdas or min(lambdas) <= 0:
            raise EdgefaError(f"--lambdas {args.lambdas}: expected a comma list of positive numbers")
        meta = make_labels(args.output, fill_shared(args.data), fill_shared(args.teacher), args.check,
                           args.steps, lambdas=lambdas, loo_faces=args.loo_faces)
    except EdgefaError as exc:
        if args.debug:
            raise
        print(f"python -m edgefa.training.labels: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({k: meta[k] for k in ("chosen", "crops", "seconds")} | ({"check": meta["check"]["nme"]} if "check" in meta else {})))
    return 0


if __name__ == "__main__":
    sys.exit(main())
