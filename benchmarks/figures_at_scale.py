"""The report's four figures drawn from a synthetic record of 50 model files, to check by eye that
they stay readable at that scale (issue #25):

    python benchmarks/figures_at_scale.py runs/figures-50 [--rows 50] [--seed 0]

Rows are shaped like the report's flat rows (``tables.flat_rows`` + the report's labels): ten timm
families x ONNX/TFLite x fp32/int8, torch checkpoints of three of them, an untrained family, and both
peers (3DDFA-V2 mb05 as ONNX fp32 + TFLite int8, MediaPipe's face landmark TFLite). NME per yaw bin,
CED curves (the range ``edgefa.evaluate`` writes: ``metrics.CED_MAX_NME``, ``CED_STEPS``), latencies and overlays are random
but seeded. ``fifty_rows`` is what the tests draw too.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from edgefa.metrics import BIN_NAMES, CED_MAX_NME, CED_STEPS, ced_curve

FAMILIES = ("mobilenetv3_small_100", "mobilenetv3_large_100", "mobilenetv2_100", "efficientnet_lite0",
            "ghostnet_100", "repvit_m1", "fastvit_t8", "mobileone_s0", "lcnet_100", "mobilevit_s")
VARIANTS = (("onnx", "fp32", "onnxruntime", ".onnx"), ("onnx", "int8", "onnxruntime", "-int8.onnx"),
            ("tflite", "fp32", "litert", ".tflite"), ("tflite", "int8", "litert", "-int8.tflite"))
PEERS = (("3ddfa-v2-mb05.onnx", "mobilenet_v1_3ddfa", "onnx", "fp32", "onnxruntime", 3.79, 0.78),
         ("3ddfa-v2-mb05-int8.tflite", "mobilenet_v1_3ddfa", "tflite", "int8", "litert", 3.97, 0.70),
         ("mediapipe face_landmark.tflite", "face_landmark", "tflite", "fp16", "litert", 6.72, 1.02))


def _row(rng, name: str, model: str, fmt: str, prec: str, runtime: str, nme: float, p50: float,
         peer: bool = False, untrained: bool = False) -> tuple[dict, dict]:
    bins = nme * np.array([0.75, 0.98, 1.27]) * rng.normal(1, 0.02, 3)
    bins *= nme / bins.mean()  # the balanced mean is the mean of the bins
    faces = rng.lognormal(np.log(nme * 0.85), 0.45, 2000)
    x, y = ced_curve(faces, CED_MAX_NME, CED_STEPS)
    label = name + (" (peer)" if peer and "peer" not in name else "") + (" (untrained)" if untrained else "")
    row = {"name": name, "label": label, "model": model, "format": fmt, "precision": prec, "runtime": runtime,
           "peer": peer, "untrained": untrained, "status": "ok", "nme_mean": float(nme),
           "nme_plain": float(faces.mean()), "p50_1t": float(p50), "p50_2t": float(p50 * 0.7),
           **{b: float(v) for b, v in zip(BIN_NAMES, bins)}}
    return row, {"nme": x.round(3).tolist(), "fraction": y.round(5).tolist()}


def fifty_rows(n: int = 50, seed: int = 0, peers: bool = True) -> tuple[list[dict], list[tuple[dict, dict]]]:
    """``n`` rows (50 by default; fewer keeps the first ones) and their CED curves as the report's
    ``figures`` passes them: (row, {"nme": [...], "fraction": [...]})."""
    rng = np.random.default_rng(seed)
    out = []
    if peers:
        out += [_row(rng, name, model, fmt, prec, rt, nme, p50, peer=True) for name, model, fmt, prec, rt, nme, p50 in PEERS]
    for i, fam in enumerate(FAMILIES):
        speed = rng.uniform(0, 1)  # bigger (slower) families are more accurate, give or take
        p50, nme = 0.35 * (30 / 0.35) ** speed, 6.8 - 3.0 * speed + rng.normal(0, 0.5)
        stem = fam.replace("_", "-")
        for fmt, prec, rt, ext in VARIANTS:
            q = prec == "int8"
            out.append(_row(rng, stem + ext, fam, fmt, prec, rt, nme + q * rng.uniform(0.1, 0.3) + rng.normal(0, 0.01),
                            p50 * (rng.uniform(0.5, 0.9) if q else 1) * (1.3 if fmt == "tflite" else 1)))
        if i < 3:
            out.append(_row(rng, stem + ".pt", fam, "torch", "fp32", "torch", nme, p50 * 3.5))
    for fmt, prec, rt, ext in VARIANTS:
        out.append(_row(rng, "query-decoder-mobilenetv2" + ext, "query_decoder_mobilenetv2", fmt, prec, rt,
                        rng.uniform(23, 25), rng.uniform(2, 4), untrained=True))
    out = out[:n]
    return [r for r, _ in out], out


def overlay_entries(rows: list[dict], seed: int = 0) -> list[tuple[str, dict]]:
    """Overlay npz dicts like bench writes (a drawn face, 68 points in 120 px crops) for ``rows``."""
    from edgefa.facemodel.synthetic_layout import landmark_targets

    rng = np.random.default_rng(seed)
    mm = landmark_targets()
    t = np.linspace(np.pi * 1.02, np.pi * 1.98, 17)
    mm[:17] = np.stack([68 * np.cos(t), 25 + 95 * np.sin(t)], 1)
    gt = np.stack([60 + 0.6 * mm[:, 0], 48 - 0.6 * mm[:, 1]], 1)
    yy, xx = np.mgrid[:120, :120]
    face = (((xx - 60) / 44) ** 2 + ((yy - 55) / 54) ** 2) < 1
    image = np.where(face[..., None], np.array([120, 150, 200], np.uint8), np.array([60, 50, 40], np.uint8))
    out = []
    for r in rows:
        nme = np.array([0.4, 1.0, 3.0]) * r["nme_mean"]
        pred = gt[None] + rng.normal(0, 1, (3, 68, 2)) * (nme[:, None, None] / 100 * 90 / 1.4)
        out.append((r["label"], {"index": np.arange(3), "nme": nme, "image": np.repeat(image[None], 3, 0),
                                 "gt": np.repeat(gt[None], 3, 0), "pred": pred}))
    return out


def main(argv: list[str] | None = None) -> int:
    from edgefa.benchmarks import plots
    from edgefa.benchmarks.report import MAX_OVERLAY_ROWS

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="folder for the PNGs")
    ap.add_argument("--rows", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rows, curves = fifty_rows(args.rows, args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    figs = {"ced": plots.ced_plot(curves), "pareto": plots.pareto_plot(rows, "p50_1t"), "bins": plots.bins_plot(rows),
            "overlays": plots.overlay_sheet(overlay_entries(plots.ced_selection(rows, MAX_OVERLAY_ROWS), args.seed))}
    for key, png in figs.items():
        if png:
            (out / f"benchmark-{key}.png").write_bytes(png)
            print(out / f"benchmark-{key}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
