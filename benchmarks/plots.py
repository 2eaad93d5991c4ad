"""The report's figures: CED curves, accuracy-vs-latency Pareto, per-bin bars, landmark overlays.

matplotlib's object API (Figure + Agg canvas) only: no pyplot global state, no backend switch.
Each function returns PNG bytes, or None when there is nothing to draw.
"""
from __future__ import annotations

import io

import numpy as np

from edgefa.metrics import BIN_NAMES


def _figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def ced_plot(curves: list[tuple[str, dict]]) -> bytes | None:
    """curves: (label, {"nme": [...], "fraction": [...]}) per model."""
    if not curves:
        return None
    fig = _figure(7, 4.5)
    ax = fig.add_subplot()
    for label, ced in curves:
        ax.plot(ced["nme"], np.asarray(ced["fraction"]) * 100, label=label, lw=1.4)
    ax.set(xlabel="NME (%)", ylabel="faces with NME below (%)", xlim=(0, 7), ylim=(0, 100),
           title="Cumulative error distribution")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return _png(fig)


def pareto_plot(rows: list[dict], latency_key: str) -> bytes | None:
    """Balanced NME against p50 latency; the Pareto front joins files no other beats on both. One
    colour per model (legend), one marker per runtime; only the front's points are labelled, since
    50 labels on one plot read as none."""
    pts = [(r[latency_key], r["nme_mean"], r) for r in rows if r.get(latency_key) and r.get("nme_mean") is not None]
    hidden = 0
    if any(not r["untrained"] for _, _, r in pts):  # untrained scores (~24 %) would squash the axis
        hidden = len({r["model"] for _, _, r in pts if r["untrained"]})
        pts = [p for p in pts if not p[2]["untrained"]]
    if not pts:
        return None
    fig = _figure(7.5, 5)
    ax = fig.add_subplot()
    markers = {"torch": "s", "onnxruntime": "o", "litert": "^", "coreml": "D"}
    models = list(dict.fromkeys(r["model"] for _, _, r in pts))
    from matplotlib import colormaps

    palette = colormaps["tab10" if len(models) <= 10 else "tab20"].colors  # no colour shared by two models
    colors = {m: palette[i % len(palette)] for i, m in enumerate(models)}
    for x, y, r in pts:
        ax.scatter(x, y, marker=markers.get(r["runtime"], "o"), color=colors[r["model"]], s=36, zorder=3,
                   edgecolors="black" if r["peer"] else "none", linewidths=0.6)
    front, best = [], float("inf")
    for x, y, r in sorted(pts, key=lambda p: (p[0], p[1])):
        if y < best:
            front.append((x, y))
            best = y
            ax.annotate(f"{r['format']} {r['precision']}", (x, y), fontsize=6, xytext=(4, -9), textcoords="offset points")
    front.append((max(p[0] for p in pts), best))  # the front holds to the slowest model
    ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="tab:green", lw=1, label="Pareto front")
    peers = {r["model"] for _, _, r in pts if r["peer"]}
    for m in models:
        ax.scatter([], [], color=colors[m], marker="o", label=f"{m} (peer)" if m in peers else m)
    for rt in dict.fromkeys(r["runtime"] for _, _, r in pts):
        ax.scatter([], [], color="white", edgecolors="black", marker=markers.get(rt, "o"), label=rt)
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    xs = [p[0] for p in pts]
    log = max(xs) / min(xs) > 8  # a log axis only when latencies span an order of magnitude
    if log:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
    title = "Accuracy vs latency (one point per file; peers outlined)"
    if hidden:
        title += f"\n{hidden} untrained model(s) left out: their NME is in the table"
    ax.set(xlabel=f"latency p50 ({latency_key.split('_')[1].rstrip('t')} thread, ms{', log scale' if log else ''})",
           ylabel="balanced NME (%)", title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _png(fig)


def bins_plot(rows: list[dict]) -> bytes | None:
    rows = [r for r in rows if r.get("nme_mean") is not None]
    if not rows:
        return None
    fig = _figure(max(6, 0.55 * len(rows) + 2), 4.2)
    ax = fig.add_subplot()
    x = np.arange(len(rows))
    width = 0.27
    for k, b in enumerate(BIN_NAMES):
        ax.bar(x + (k - 1) * width, [r[b] for r in rows], width, label=f"yaw {b}")
    ax.set_xticks(x, [r["label"] for r in rows], rotation=60, ha="right", fontsize=6)
    ax.set(ylabel="NME (%)", title="NME per yaw bin")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    return _png(fig)


def overlay_sheet(entries: list[tuple[str, dict]]) -> bytes | None:
    """entries: (label, npz dict with image (3,S,S,3) BGR, pred/gt (3,68,2) crop px, nme (3,))."""
    entries = [(label, e) for label, e in entries if len(e["index"]) == 3]
    if not entries:
        return None
    fig = _figure(6, 2.1 * len(entries))
    for i, (label, e) in enumerate(entries):
        for j, what in enumerate(("best", "median", "worst")):
            ax = fig.add_subplot(len(entries), 3, 3 * i + j + 1)
            ax.imshow(e["image"][j][..., ::-1])
            gt, pred = e["gt"][j], e["pred"][j]
            if np.isfinite(gt).all():
                ax.scatter(gt[:, 0], gt[:, 1], s=3, c="red", label="ground truth")
            ax.scatter(pred[:, 0], pred[:, 1], s=3, c="lime", label="predicted")
            ax.set_title(f"{what}: NME {e['nme'][j]:.2f}%", fontsize=7)
            ax.axis("off")
            if j == 0:
                ax.text(-4, e["image"].shape[1] / 2, label, rotation=90, va="center", ha="right", fontsize=6)
    fig.suptitle("Landmark overlays (green: predicted, red: ground truth)", fontsize=9)
    return _png(fig)
