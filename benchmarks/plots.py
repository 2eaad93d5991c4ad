"""The report's figures: CED curves, accuracy-vs-latency Pareto, NME per yaw bin, landmark overlays.

Drawn to stay readable at 50 model files: the CED shows the best file of each model family (peers
always), the bins plot is a dot plot one row per file, the Pareto plot numbers only the front and the
peers and names them in a key under the plot. Colours are Okabe-Ito (colour-blind safe), repeated only
with another line style or marker fill. matplotlib's object API (Figure + Agg canvas) only: no pyplot
global state, no backend switch. Each function returns PNG bytes, or None when there is nothing to draw.
The small pure functions (ced_selection, pareto_front, y_limits, ...) decide what is drawn.
"""
from __future__ import annotations

import io

import numpy as np

from edgefa.metrics import BIN_NAMES

# Okabe & Ito (2008): blue, orange, bluish green, vermillion, sky blue, reddish purple, black, yellow
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#56B4E9", "#CC79A7", "#000000", "#F0E442")
LINE_COLORS = OKABE_ITO[:7]  # yellow is too faint for a thin line on white
LINE_STYLES = ("-", "--", "-.", ":")
RUNTIME_MARKERS = {"torch": "s", "onnxruntime": "o", "litert": "^", "coreml": "D"}
MAX_CED_CURVES = 8
MAX_BIN_ROWS = 40
MAX_NUMBERED = 12  # a Pareto plot of this few files numbers them all, else only the front and the peers
MIN_NME_SPAN = 1.0  # NME points: a narrower axis makes run-to-run noise look like a trade-off


def _figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes | None:
    if fig is None:
        return None
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def family(row: dict) -> str:
    """The model architecture a file was exported from (its formats and precisions are one family)."""
    model = row.get("model")
    return model if model and model != "?" else row.get("name", "?")


def line_style(i: int) -> tuple[str, str]:
    """(colour, line style) of the i-th series: distinct for 28 series, and not by colour alone."""
    return LINE_COLORS[i % len(LINE_COLORS)], LINE_STYLES[i % len(LINE_STYLES)]


def _scored(rows: list[dict]) -> tuple[list[dict], int]:
    """Rows with a balanced NME; untrained ones (~24 %, which squash the axis) are left out when trained
    ones exist. Returns the rows and how many untrained ones were left out."""
    rows = [r for r in rows if r.get("nme_mean") is not None]
    trained = [r for r in rows if not r.get("untrained")]
    return (trained, len(rows) - len(trained)) if trained else (rows, 0)


def ced_selection(rows: list[dict], limit: int = MAX_CED_CURVES) -> list[dict]:
    """At most ``limit`` rows, sorted by balanced NME: all of them when they fit, else the best of each
    peer family, then the best of the other families in NME order. Untrained rows only when no row is
    trained."""
    rows, _ = _scored(rows)
    if len(rows) <= limit:
        return sorted(rows, key=lambda r: r["nme_mean"])
    best: dict[tuple[bool, str], dict] = {}
    for r in sorted(rows, key=lambda r: r["nme_mean"]):
        best.setdefault((bool(r.get("peer")), family(r)), r)
    peers = [r for (peer, _), r in best.items() if peer][:limit]
    others = [r for (peer, _), r in best.items() if not peer][:limit - len(peers)]
    return sorted(peers + others, key=lambda r: r["nme_mean"])


def ced_reach(ced: dict, level: float = 0.95) -> float | None:
    """The NME at which a CED curve reaches ``level`` of the faces (None: not within its data)."""
    x, y = np.asarray(ced["nme"], float), np.asarray(ced["fraction"], float)
    hit = np.flatnonzero(y >= level)
    return float(x[hit[0]]) if len(hit) else None


def ced_xmax(ceds: list[dict], floor: float = 7.0, cap: float = 20.0) -> float:
    """x-limit of the CED: where the drawn curves reach 95 % (or where their data stop), at least
    ``floor`` (the protocol's AUC@7), at most ``cap`` and the data's end."""
    ends = [float(ced["nme"][-1]) for ced in ceds]
    reach = [ced_reach(c) or float(c["nme"][-1]) for c in ceds]
    return min(max(max(reach), floor), cap, max(ends))


def ced_plot(curves: list[tuple[dict, dict]]) -> bytes | None:
    """curves: (row, {"nme": [...], "fraction": [...]}) per file; ``row`` is the report's flat row
    (label, model, peer, untrained, nme_mean). Draws ``ced_selection`` of them."""
    return _png(ced_figure(curves))


def ced_figure(curves: list[tuple[dict, dict]]):
    ced_of = {id(r): c for r, c in curves}
    chosen = ced_selection([r for r, _ in curves])
    if not chosen:
        return None
    fig = _figure(9, 4.6)
    ax = fig.add_subplot()
    xmax = ced_xmax([ced_of[id(r)] for r in chosen])
    for i, r in enumerate(chosen):
        ced = ced_of[id(r)]
        x, y = np.asarray(ced["nme"], float), np.asarray(ced["fraction"], float) * 100
        colour, style = line_style(i)
        at = y[np.searchsorted(x, xmax, side="right") - 1]
        ax.plot(x, y, color=colour, ls=style, lw=2.2 if r.get("peer") else 1.6,
                label=f"{r['label']}  ({r['nme_mean']:.2f}; {at:.0f} % of faces ≤ {xmax:g})")
    scored, hidden = _scored([r for r, _ in curves])
    families = len({(bool(r.get("peer")), family(r)) for r in scored})
    title = "Cumulative error distribution" + (
        f": the best file of {len(chosen)} of {families} model families (peers always)" if len(chosen) < len(scored)
        else f" of {len(chosen)} files")
    more = len(curves) - len(chosen)
    notes = [f"{more} more file(s) in the table" + (f", {hidden} of them untrained" if hidden else "")] if more else []
    if any(ced_reach(ced_of[id(r)]) is None for r in chosen) and xmax >= max(float(ced_of[id(r)]["nme"][-1]) for r in chosen):
        notes.append(f"the curves end at {xmax:g} % NME, where the record's CED data stop")
    ax.set(xlabel="NME (%)", ylabel="faces with NME below (%)", xlim=(0, xmax), ylim=(0, 100),
           title=title + ("\n" + "; ".join(notes) if notes else ""))
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), title="file (balanced NME %)",
              title_fontsize=7, frameon=False)
    return fig


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both x and y (lower is better), by x."""
    order = sorted(range(len(points)), key=lambda i: points[i])
    front, best = [], float("inf")
    for i in order:
        if points[i][1] < best:
            front.append(i)
            best = points[i][1]
    return front


def y_limits(values: list[float], min_span: float = MIN_NME_SPAN, pad: float = 0.08) -> tuple[float, float]:
    """Axis limits around ``values``: padded, at least ``min_span`` wide, centred on the data, >= 0."""
    lo, hi = min(values), max(values)
    span = max((hi - lo) * (1 + 2 * pad), min_span)
    mid = (lo + hi) / 2
    lo = max(mid - span / 2, 0.0)
    return lo, lo + span


def place_labels(anchors: np.ndarray, sizes: list[tuple[float, float]], obstacles: np.ndarray,
                 bounds: tuple[float, float, float, float], gap: float = 4.0) -> list[tuple[float, float]]:
    """Greedy label placement in pixels: for each anchor, the first offset (of rings of candidates
    around it) whose box overlaps no label placed so far, no obstacle point and stays in ``bounds``
    (x0, y0, x1, y1); the least bad one if none is free. Returns offsets of the boxes' lower-left corners."""
    placed: list[tuple[float, float, float, float]] = []
    offsets = []
    for (ax_, ay), (w, h) in zip(anchors, sizes):
        candidates = []
        for ring in (1, 2, 3.5, 5):
            r = gap * ring
            candidates += [(r, r * 0.3), (r, -h - r * 0.3), (-w - r, r * 0.3), (-w - r, -h - r * 0.3),
                           (-w / 2, r + 1), (-w / 2, -h - r - 1)]
        best, best_cost = candidates[0], float("inf")
        for dx, dy in candidates:
            box = (ax_ + dx, ay + dy, ax_ + dx + w, ay + dy + h)
            cost = sum(_overlap(box, p) for p in placed)
            cost += sum(_overlap(box, (px - 4, py - 4, px + 4, py + 4)) for px, py in obstacles)
            cost += 1e4 * (box[0] < bounds[0] or box[1] < bounds[1] or box[2] > bounds[2] or box[3] > bounds[3])
            if cost < best_cost:
                best, best_cost = (dx, dy), cost
            if cost == 0:
                break
        placed.append((ax_ + best[0], ay + best[1], ax_ + best[0] + w, ay + best[1] + h))
        offsets.append(best)
    return offsets


def _overlap(a, b) -> float:
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def family_styles(rows: list[dict]) -> dict[str, dict]:
    """Marker face/edge per family, in order of each family's best NME: 8 Okabe-Ito colours filled,
    then the same colours hollow."""
    order = list(dict.fromkeys(family(r) for r in sorted(rows, key=lambda r: r["nme_mean"])))
    out = {}
    for i, f in enumerate(order):
        c = OKABE_ITO[i % len(OKABE_ITO)]
        out[f] = {"color": c, "edgecolors": "#333333", "linewidths": 0.5} if i < len(OKABE_ITO) else \
            {"color": "white", "edgecolors": c, "linewidths": 1.6}
    return out


def pareto_plot(rows: list[dict], latency_key: str) -> bytes | None:
    """Balanced NME against p50 latency, one point per file: colour = model family, marker = runtime,
    peers ringed. The Pareto front joins files no other beats on both; its points and the peers are
    numbered and named in a key under the plot (50 names on one plot read as none)."""
    return _png(pareto_figure(rows, latency_key))


def pareto_figure(rows: list[dict], latency_key: str):
    scored, hidden = _scored([r for r in rows if r.get(latency_key)])
    if not scored:
        return None
    pts = [(r[latency_key], r["nme_mean"]) for r in scored]
    front = pareto_front(pts)
    numbered = list(range(len(pts))) if len(pts) <= MAX_NUMBERED else (
        front + [i for i, r in enumerate(scored) if r.get("peer") and i not in front])
    numbered.sort(key=lambda i: pts[i])
    styles = family_styles(scored)
    key_lines = [f"{n + 1}  {scored[i]['label']}: {scored[i]['runtime']}, NME {pts[i][1]:.2f}, {pts[i][0]:.2f} ms"
                 for n, i in enumerate(numbered)]
    ncol = 1 if len(key_lines) <= 8 else 2
    key_h = 0.155 * -(-len(key_lines) // ncol) + 0.05
    fig = _figure(9.5, 4.6 + key_h)
    grid = fig.add_gridspec(2, 1, height_ratios=(4.6, key_h))
    ax, key_ax = fig.add_subplot(grid[0]), fig.add_subplot(grid[1])
    for (x, y), r in zip(pts, scored):
        ax.scatter(x, y, marker=RUNTIME_MARKERS.get(r["runtime"], "o"), s=34, zorder=3, **styles[family(r)])
        if r.get("peer"):
            ax.scatter(x, y, marker="o", s=150, facecolors="none", edgecolors="black", linewidths=0.9, zorder=2)
    fx = [pts[i][0] for i in front] + [max(p[0] for p in pts)]  # the front holds to the slowest file
    fy = [pts[i][1] for i in front] + [pts[front[-1]][1]]
    ax.step(fx, fy, where="post", color="#555555", lw=1, ls="--", zorder=1, label="Pareto front")
    peers = {family(r) for r in scored if r.get("peer")}
    for f, st in styles.items():
        ax.scatter([], [], marker="o", s=34, label=f + (" (peer)" if f in peers else ""), **st)
    for rt in dict.fromkeys(r["runtime"] for r in scored):
        ax.scatter([], [], color="white", edgecolors="black", marker=RUNTIME_MARKERS.get(rt, "o"), label=rt)
    if peers:
        ax.scatter([], [], marker="o", s=150, facecolors="none", edgecolors="black", linewidths=0.9, label="peer file")
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    xs = [p[0] for p in pts]
    log = max(xs) / min(xs) > 8  # a log axis only when latencies span an order of magnitude
    if log:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlim(min(xs) / 1.25, max(xs) * 1.25)
    else:
        ax.set_xlim(*y_limits(xs, min_span=0.2 * max(xs), pad=0.1))  # one file: +-10 % around it
    ax.set_ylim(*y_limits([p[1] for p in pts]))
    title = f"Accuracy vs latency: {len(pts)} files; " + ("numbered: all" if len(numbered) == len(pts) else
                                                          "numbered: the Pareto front" + (" and the peers" if peers else ""))
    if hidden:
        title += f"\n{hidden} untrained file(s) left out: their NME is in the table"
    ax.set(xlabel=f"latency p50 ({latency_key.split('_')[1].rstrip('t')} thread, ms{', log scale' if log else ''})",
           ylabel="balanced NME (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False, title="model family / runtime",
              title_fontsize=7)
    key_ax.axis("off")
    per = -(-len(key_lines) // ncol)
    for c in range(ncol):
        key_ax.text(c / ncol, 1, "\n".join(key_lines[c * per:(c + 1) * per]), fontsize=7, va="top", ha="left",
                    transform=key_ax.transAxes, linespacing=1.35)
    fig.draw_without_rendering()  # the layout is final: place the numbers in pixels
    anchors = ax.transData.transform(np.array([pts[i] for i in numbered], float))
    scale = fig.dpi / 72
    sizes = [(8 * 0.62 * len(str(n + 1)) * scale + 4, 8 * scale + 3) for n in range(len(numbered))]
    box = ax.get_window_extent()
    offsets = place_labels(anchors, sizes, ax.transData.transform(np.array(pts, float)),
                           (box.x0, box.y0, box.x1, box.y1))
    for n, (i, (dx, dy)) in enumerate(zip(numbered, offsets)):
        ax.annotate(str(n + 1), pts[i], xytext=((dx + 2) / scale, (dy + 2) / scale), textcoords="offset points",
                    fontsize=8, fontweight="bold", va="bottom", ha="left", zorder=4,
                    bbox={"boxstyle": "square,pad=0.05", "fc": "white", "ec": "none", "alpha": 0.75},
                    arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "#555555", "shrinkA": 0, "shrinkB": 3}
                    if abs(dx) > 12 * scale or abs(dy) > 12 * scale else None)
    return fig


def bins_selection(rows: list[dict], limit: int = MAX_BIN_ROWS) -> list[dict]:
    """The first ``limit`` rows in balanced-NME order, every peer row among them."""
    rows = sorted(rows, key=lambda r: r["nme_mean"])
    peers = [r for r in rows if r.get("peer")][:limit]
    keep = {id(r) for r in peers} | {id(r) for r in [r for r in rows if not r.get("peer")][:limit - len(peers)]}
    return [r for r in rows if id(r) in keep]


def bins_plot(rows: list[dict]) -> bytes | None:
    """A dot plot: one row per file (best balanced NME on top), a marker per yaw bin and the balanced
    mean; the first MAX_BIN_ROWS rows (peers always), the rest named as a count."""
    return _png(bins_figure(rows))


def bins_figure(rows: list[dict]):
    scored, hidden = _scored(rows)
    if not scored:
        return None
    scored = sorted(scored, key=lambda r: r["nme_mean"])
    shown = bins_selection(scored)
    fig = _figure(8, 1.5 + 0.2 * len(shown))
    ax = fig.add_subplot()
    y = np.arange(len(shown))
    for k in range(0, len(shown), 2):
        ax.axhspan(k - 0.5, k + 0.5, color="#f2f2f2", zorder=0, lw=0)
    values = np.array([[r[b] for b in BIN_NAMES] for r in shown], float)
    ax.hlines(y, np.nanmin(values, axis=1), np.nanmax(values, axis=1), color="#999999", lw=0.8, zorder=1)
    for b, col, colour, marker in zip(BIN_NAMES, values.T, (OKABE_ITO[4], OKABE_ITO[0], OKABE_ITO[3]), "os^"):
        ax.scatter(col, y, marker=marker, color=colour, s=22, zorder=3, label=f"yaw {b}°", edgecolors="none")
    ax.scatter([r["nme_mean"] for r in shown], y, marker="|", color="black", s=90, lw=1.6, zorder=4,
               label="balanced mean")
    labels = [r["label"] + ("" if [s["label"] for s in shown].count(r["label"]) == 1 else f" [{r['runtime']}]")
              for r in shown]
    ax.set_yticks(y, labels, fontsize=7)
    for tick, r in zip(ax.get_yticklabels(), shown):
        tick.set_fontweight("bold" if r.get("peer") else "normal")
    ax.set_ylim(len(shown) - 0.5, -0.5)
    ax.set_xlim(*y_limits(values[np.isfinite(values)].tolist() + [r["nme_mean"] for r in shown]))
    ax.set_xlabel("NME (%)")
    notes = ([f"{len(scored) - len(shown)} more file(s) in the table"] if len(scored) > len(shown) else []) + (
        [f"{hidden} untrained file(s) left out"] if hidden else [])
    ax.set_title("NME per yaw bin, best balanced NME on top (peers in bold)" + ("\n" + "; ".join(notes) if notes else ""),
                 fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    fig.legend(*ax.get_legend_handles_labels(), fontsize=7, loc="outside lower center", ncol=4, frameon=False)
    return fig


GT_COLOUR, PRED_COLOUR = OKABE_ITO[0], OKABE_ITO[3]  # blue / vermillion: apart for every colour vision


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
                ax.scatter(gt[:, 0], gt[:, 1], s=8, c=GT_COLOUR, marker="o", edgecolors="white", linewidths=0.3,
                           label="ground truth")
            ax.scatter(pred[:, 0], pred[:, 1], s=9, c=PRED_COLOUR, marker="x", linewidths=0.8, label="predicted")
            ax.set_title(f"{what}: NME {e['nme'][j]:.2f}%", fontsize=7)
            ax.axis("off")
            if j == 0:
                ax.text(-4, e["image"].shape[1] / 2, label, rotation=90, va="center", ha="right", fontsize=6)
    fig.suptitle("Landmark overlays (blue dots: ground truth; vermillion crosses: predicted)", fontsize=9)
    return _png(fig)
