"""Parity gate: an exported file must reproduce the PyTorch graph on the same crops.

Compared on what a user sees: the 62 parameters (max-abs-diff, whitened), the 68 landmarks (pixels of
the 120 px crop, and in NME points: the shift divided by sqrt(w*h) of the PyTorch landmarks' box,
x100, the AFLW2000-3D normalisation) and yaw/pitch/roll (degrees, wrapped).

Tolerances on the mean landmark shift in NME points (``GATES``), with why:
- fp32 1e-3 NME points (~1e-3 px on a 100 px face), max 0.01 px: float32 re-association across
  runtimes moves landmarks by ~1e-5..1e-4 px (measured: ONNX 5e-5 px, see reports/export-matrix.md),
  so this catches any real conversion bug while leaving 10-100x headroom.
- fp16 0.05 NME points: half-precision weights/activations in the network move landmarks by
  ~0.005-0.02 points on trained models (measured); 0.05 is ~1 % of a good model's NME of 3.5.
- int8 / 6-bit palettized 2.0 NME points, 4-bit palettized 3.0: calibrated int8 moves landmarks
  of trained models by 0.57 points (3DDFA-V2 MobileNet-V1) to 1.3-1.6 points (MobileNetV3-Small,
  hard-swish + SE; NNCF and onnxruntime, symmetric or not, fast or full bias correction: measured
  on 64 AFLW2000-3D crops). A broken conversion moves them by tens of points, so the gate catches
  that; the accuracy cost itself is measured by running the file on AFLW2000-3D
  (``edgefa eval --model FILE``), not here.
"""
from __future__ import annotations

import numpy as np
import torch

GATES = {
    "fp32": {"nme_points_mean": 1e-3, "landmark_px_max": 0.01},
    "fp16": {"nme_points_mean": 0.05},
    "int8": {"nme_points_mean": 2.0},
    "palette6": {"nme_points_mean": 2.0},
    "palette4": {"nme_points_mean": 3.0},
    # 50 % of the weights zeroed without fine-tuning: not measurable here (CoreML runs on macOS only);
    # the same bound as 4-bit palettes, to be set from macOS measurements
    "sparse50": {"nme_points_mean": 3.0},
}


def geometry(graph, outputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Any graph's outputs -> raw params (B, 62), landmarks (B, 68, 3) crop px, pose (B, 3) degrees."""
    if graph.postprocess:
        return outputs["params"], outputs["landmarks"], outputs["pose"]
    with torch.no_grad():
        raw = torch.from_numpy(np.asarray(outputs["params"], np.float32)) * graph.param_std + graph.param_mean
        lms, pose = graph.geometry(raw)
    return raw.numpy(), lms.numpy(), pose.numpy()


def torch_outputs(graph, x: np.ndarray, batch: int = 32) -> dict[str, np.ndarray]:
    names = list(graph.output_meanings)
    chunks = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            out = graph(torch.from_numpy(x[i:i + batch]))
            out = out if isinstance(out, tuple) else (out,)
            chunks.append([o.numpy() for o in out])
    return {n: np.concatenate([c[k] for c in chunks]) for k, n in enumerate(names)}


def compare(graph, ref: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> dict:
    missing = set(ref) - set(got)
    if missing:
        return {"error": f"outputs missing from the file: {', '.join(sorted(missing))}"}
    p_ref, l_ref, a_ref = geometry(graph, ref)
    p_got, l_got, a_got = geometry(graph, got)
    shift = np.linalg.norm(l_got[..., :2] - l_ref[..., :2], axis=-1)  # (B, 68) pixels
    extent = l_ref[..., :2].max(1) - l_ref[..., :2].min(1)
    norm = np.sqrt(np.maximum(extent[:, 0] * extent[:, 1], 1e-6))
    nme_points = 100.0 * shift.mean(1) / norm
    angle = np.abs((a_got - a_ref + 180.0) % 360.0 - 180.0)
    # near |yaw| = 90 pitch and roll trade off freely (gimbal lock): compare pose on the rest
    usable = np.abs(a_ref[:, 0]) < 80
    return {
        "crops": int(len(shift)),
        # whitened (network output scale ~1): raw BFM shape weights reach ~1e5, where float32 itself
        # differs in the 3rd decimal
        "params_max_abs": float(np.abs((p_got - p_ref) / graph.param_std.numpy()).max()),
        "landmark_px_mean": float(shift.mean()),
        "landmark_px_max": float(shift.max()),
        "nme_points_mean": float(nme_points.mean()),
        "nme_points_max": float(nme_points.max()),
        "pose_deg_mean": float(angle[usable].mean()) if usable.any() else float("nan"),
        "pose_deg_max": float(angle[usable].max()) if usable.any() else float("nan"),
    }


def gate(metrics: dict, precision: str) -> tuple[bool, str]:
    """(passed, reason) against ``GATES[precision]``."""
    if "error" in metrics:
        return False, metrics["error"]
    if not all(np.isfinite(metrics[k]) for k in ("params_max_abs", "landmark_px_max")):
        return False, "non-finite outputs"
    for key, limit in GATES[precision].items():
        if metrics[key] > limit:
            return False, f"{key} {metrics[key]:.4g} > {limit:g}"
    return True, ""
