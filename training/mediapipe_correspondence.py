"""Learn MediaPipe Face Mesh's 468 -> 68 point correspondence (and its pose canonical) on aflw-train,
so ``edgefa eval --model mediapipe-face:FILE`` scores it on the 68-point protocol:

    python -m edgefa.training.mediapipe_correspondence --data ../shared/data/aflw-train \
        --labels runs/labels/aflw-train.npz -o edgefa/peers/mediapipe_68.json

MediaPipe runs on every aflw-train crop at each candidate ``framing`` (side of the centred square
fed to it over the crop's; > 1 pads). On the **train** split, per 68-point label: the K mesh vertices nearest to it on average
are its candidates, and a non-negative least-squares fit with the weights summing to 1 (a convex
combination, so the point moves with the mesh) picks a sparse few; a global xy offset (pixel-centre
conventions) is fitted with them. z: one scale (sign included) taking MediaPipe's depth to 3DDFA's.
Canonical mesh for pose: each train face's mesh, de-rotated by its refined label's pose, averaged.
The framing with the lowest balanced NME on the **val** split (every 20th face) is kept; that split's
errors against the refined labels (fitted labels, not ground truth) are printed and stored.
Never AFLW2000-3D: that is the test set.
"""
from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
from scipy.optimize import nnls

from edgefa.data.aflw_train import AFLWTrain
from edgefa.data.images import read_image
from edgefa.fileio import atomic_write_bytes, check_writable
from edgefa.metrics import nme, nme_by_yaw
from edgefa.paths import shared_root
from edgefa.peers.mediapipe_face import (
    CROP_SIZE,
    MAPPING_FORMAT,
    FaceMeshModel,
    map_to_68,
    mesh_pose,
    mesh_to_68,
    pose_space,
)

FRAMINGS = (0.8, 0.9, 1.0, 1.15, 1.3, 1.45)  # > 1: the crop padded (edge pixels repeated), face smaller
CANDIDATES = 10  # vertices considered per 68-point label
MIN_WEIGHT = 0.02  # smaller weights are dropped (sparsity; they move a point by < 0.1 px)
CANONICAL_MAX_YAW = 60.0  # MediaPipe was not made for profiles: keep them out of the canonical mesh
# candidate bins of MediaPipe's own yaw for the per-yaw combinations (degrees; chosen on val)
YAW_EDGES = ((-30.0, 30.0), (-50.0, -20.0, 20.0, 50.0), (-60.0, -35.0, -12.0, 12.0, 35.0, 60.0))


def run_mesh(model: FaceMeshModel, root: Path, names: list[str], framings, chunk: int = 512) -> dict:
    """Every crop through MediaPipe once per framing: {framing: (N, 468, 3)} in crop pixels."""
    out = {f: [] for f in framings}
    for start in range(0, len(names), chunk):
        images = np.stack([read_image(root / "crops" / n) for n in names[start:start + chunk]])
        for f in framings:
            out[f].append(model.run(images, f)[0])
    return {f: np.concatenate(v) for f, v in out.items()}


def convex_fit(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Weights w >= 0, sum 1, minimising ||a w - b||: NNLS with the sum as a heavily weighted row,
    on the QR-reduced system (same minimiser, K rows instead of 2N)."""
    q, r = np.linalg.qr(a)
    penalty = 1e3 * np.abs(r).max()
    w, _ = nnls(np.vstack([r, penalty * np.ones((1, a.shape[1]))]), np.append(q.T @ b, penalty))
    return w / w.sum()


def fit_points(mesh: np.ndarray, labels: np.ndarray, offset: np.ndarray) -> list[dict]:
    """Per label point: sparse convex combination of mesh vertices predicting (label - offset) in x, y."""
    points = []
    for p in range(labels.shape[1]):
        dist = np.linalg.norm(mesh[::8, :, :2] - labels[::8, p, None, :2], axis=-1).mean(0)  # 1/8: enough to rank
        cand = np.argsort(dist)[:CANDIDATES]
        a = np.concatenate([mesh[:, cand, 0], mesh[:, cand, 1]])
        b = np.concatenate([labels[:, p, 0] - offset[0], labels[:, p, 1] - offset[1]])
        w = convex_fit(a, b)
        keep = w >= MIN_WEIGHT
        cand, w = cand[keep], convex_fit(a[:, keep], b)  # refit on the support
        order = np.argsort(-w)
        w = np.round(w[order], 4)
        w[0] = round(1.0 - w[1:].sum(), 4)  # exactly 1 after rounding
        points.append({"vertices": cand[order].tolist(), "weights": w.tolist()})
    return points


def arrays(points: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    width = max(len(p["vertices"]) for p in points)
    index = np.array([p["vertices"] + [0] * (width - len(p["vertices"])) for p in points])
    weight = np.array([p["weights"] + [0.0] * (width - len(p["weights"])) for p in points])
    return index, weight


def as_mapping(points: list[dict], offset, z_scale: float, canonical, framing: float) -> dict:
    index, weight = arrays(points)
    return {"index": index, "weight": weight, "offset": np.asarray(offset, np.float64), "z_scale": z_scale,
            "canonical": canonical, "framing": framing}


def fit_by_yaw(mesh: np.ndarray, labels: np.ndarray, mapping: dict, edges) -> dict:
    """One set of combinations per bin of MediaPipe's own yaw (what the predictor knows at run time)."""
    which = np.searchsorted(edges, mesh_pose(mesh, mapping)[:, 0])
    sets = [fit_points(mesh[which == b], labels[which == b], mapping["offset"]) for b in range(len(edges) + 1)]
    return mapping | {"yaw_edges": np.asarray(edges), "yaw_bins": [arrays(s) for s in sets], "yaw_points": sets,
                      "yaw_counts": np.bincount(which, minlength=len(edges) + 1).tolist()}


def fit(mesh: np.ndarray, labels: np.ndarray, params: np.ndarray, yaws: np.ndarray, framing: float) -> dict:
    offset = np.zeros(2)
    for _ in range(2):  # offset and weights: alternate (converges in one step in practice)
        points = fit_points(mesh, labels, offset)
        mapped = map_to_68(mesh, as_mapping(points, np.zeros(2), 1.0, None, framing))
        offset = (labels[..., :2] - mapped[..., :2]).reshape(-1, 2).mean(0)
    mapped = map_to_68(mesh, as_mapping(points, offset, 1.0, None, framing))
    zm = mapped[..., 2] - mapped[..., 2].mean(1, keepdims=True)
    zl = labels[..., 2] - labels[..., 2].mean(1, keepdims=True)
    z_scale = float((zm * zl).sum() / (zm * zm).sum())
    # canonical: each mesh in 3DDFA's pre-projection space, de-rotated and de-scaled by its label's sR
    keep = np.abs(yaws) <= CANONICAL_MAX_YAW
    v = pose_space(mesh[keep].astype(np.float64), z_scale)
    v -= v.mean(1, keepdims=True)
    s_rot = params[keep, :12].reshape(-1, 3, 4)[:, :, :3].astype(np.float64)
    canonical = np.einsum("bij,bnj->bni", np.linalg.inv(s_rot), v).mean(0)
    canonical /= np.sqrt((canonical ** 2).sum(1).mean())  # unit RMS radius: only its shape matters
    return as_mapping(points, offset, z_scale, canonical, framing) | {"points": points}


def score(mapping: dict, mesh: np.ndarray, labels: np.ndarray, pose: np.ndarray) -> dict:
    """NME (%) against the refined labels by the labels' |yaw| bin, jaw vs inner points, pose MAE."""
    pred, angles = mesh_to_68(mesh, mapping)
    per_face = nme(pred, labels)
    jaw, inner = nme(pred[:, :17], labels[:, :17]), nme(pred[:, 17:], labels[:, 17:])
    turned = np.abs(pose[:, 0]) > 20
    return {"nme": nme_by_yaw(per_face, pose[:, 0]), "nme_jaw_0_16": float(jaw.mean()),
            "nme_inner_17_67": float(inner.mean()),
            "pose_mae_vs_labels": dict(zip(("yaw", "pitch", "roll"),
                                           np.abs(angles - pose).mean(0).round(2).tolist())),
            "yaw_sign_agrees_if_turned_20": float((np.sign(angles[turned, 0]) == np.sign(pose[turned, 0])).mean())}


def compact_json(record: dict) -> str:
    """One top-level key per line, one 68-point entry or canonical vertex per line: a diffable file of
    tens of KB instead of the 100 KB of an indented dump."""
    def dump(value):
        return json.dumps(value, separators=(",", ":"))

    def lines(value, pad):
        if isinstance(value, list) and value and isinstance(value[0], (dict, list)):
            return "[\n" + ",\n".join(pad + "  " + (lines(v, pad + "  ") if isinstance(v, dict) else dump(v))
                                      for v in value) + "\n" + pad + "]"
        if isinstance(value, dict) and any(isinstance(v, list) and v and isinstance(v[0], (dict, list))
                                           for v in value.values()):
            return "{\n" + ",\n".join(f"{pad}  {dump(k)}: {lines(v, pad + '  ')}" for k, v in value.items()) + "\n" + pad + "}"
        return dump(value)

    return lines(record, "") + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="the aflw-train folder")
    ap.add_argument("--labels", required=True, help="refined labels (python -m edgefa.training.labels)")
    ap.add_argument("--model", default=str(shared_root() / "peers" / "mediapipe_face" / "face_landmark.tflite"))
    ap.add_argument("-o", "--output", required=True, help="the mapping JSON to write")
    ap.add_argument("--framings", default=",".join(map(str, FRAMINGS)), help="candidate framings, comma-separated")
    ap.add_argument("--cache", help="keep MediaPipe's outputs in this .npz (re-runs skip the model)")
    args = ap.parse_args(argv)
    check_writable(args.output, "-o")
    framings = [float(f) for f in args.framings.split(",")]
    ds = AFLWTrain(args.data, split="all", labels=args.labels)
    cache = Path(args.cache) if args.cache else None
    meshes = {}
    if cache and cache.is_file():
        with np.load(cache) as z:
            meshes = {float(k): z[k] for k in z.files}
    missing = [f for f in framings if f not in meshes]
    if missing:
        meshes.update(run_mesh(FaceMeshModel(args.model, threads=1), ds.root, ds.names, missing))
        if cache:
            np.savez(cache, **{str(f): m for f, m in meshes.items()})
    labels, params, pose = ds.labels["pts68"][:, 0], ds.labels["params"][:, 0], ds.labels["pose"][:, 0]
    val = ds.val_mask()
    results = {}
    for f in framings:
        mapping = fit(meshes[f][~val], labels[~val], params[~val], pose[~val, 0], f)
        results[f] = (mapping, score(mapping, meshes[f][val], labels[val], pose[val]))
        n = results[f][1]["nme"]
        print(f"framing {f:.2f}: val NME balanced {n['balanced_mean']:.3f} plain {n['plain_mean']:.3f} "
              f"bins {' / '.join(f'{v:.3f}' for v in n['bins'].values())}  pose MAE {results[f][1]['pose_mae_vs_labels']}")
    best = min(framings, key=lambda f: results[f][1]["nme"]["balanced_mean"])
    mapping, any_pose = results[best]
    print(f"chosen framing {best} (lowest balanced val NME); z scale {mapping['z_scale']:.3f}, "
          f"offset {np.round(mapping['offset'], 3).tolist()}")
    binned = {}
    for edges in YAW_EDGES:
        m = fit_by_yaw(meshes[best][~val], labels[~val], mapping, edges)
        binned[edges] = (m, score(m, meshes[best][val], labels[val], pose[val]))
        n = binned[edges][1]["nme"]
        print(f"yaw bins {edges} (train faces {m['yaw_counts']}): val NME balanced {n['balanced_mean']:.3f} "
              f"bins {' / '.join(f'{v:.3f}' for v in n['bins'].values())}")
    edges = min(YAW_EDGES, key=lambda e: binned[e][1]["nme"]["balanced_mean"])
    mapping, val_score = binned[edges]
    print(f"chosen yaw bins {edges}; val errors, any-pose combinations:\n{json.dumps(any_pose, indent=1)}\n"
          f"per-yaw combinations (used):\n{json.dumps(val_score, indent=1)}")
    atomic_write_bytes(args.output, compact_json({
        "format": MAPPING_FORMAT,
        "made_by": "python -m edgefa.training.mediapipe_correspondence --data ../shared/data/aflw-train "
                   "--labels runs/labels/aflw-train.npz -o edgefa/peers/mediapipe_68.json",
        "labels_sha256": hashlib.sha256(Path(args.labels).read_bytes()).hexdigest()[:16],
        "fitted_on": f"aflw-train train split ({int((~val).sum())} faces); scored on its val split ({int(val.sum())})",
        "crop_size": CROP_SIZE, "framing": best, "z_scale": round(mapping["z_scale"], 4),
        "offset": np.round(mapping["offset"], 3).tolist(),
        "val": {"framings": {str(f): round(r[1]["nme"]["balanced_mean"], 3) for f, r in results.items()},
                "yaw_bins": {str(list(e)): round(r[1]["nme"]["balanced_mean"], 3) for e, r in binned.items()},
                "any_pose": any_pose, "by_yaw": val_score},
        "points": mapping["points"],
        "by_yaw": {"edges": list(edges), "points": mapping["yaw_points"]},
        "canonical": np.round(mapping["canonical"], 3).tolist(),
    }).encode())
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
