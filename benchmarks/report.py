"""``edgefa report RUN_DIR... -o reports/NAME``: Markdown, CSV, JSON and a self-contained HTML page
from one or more ``edgefa bench`` runs. The first run is the baseline the others are compared with where
they bench the same files; the figures draw every run's rows (a run of new models joins the old ones).
"""
from __future__ import annotations

import base64
import csv
import io
import json
from pathlib import Path

import numpy as np

from edgefa.benchmarks import plots
from edgefa.benchmarks.bench import slug
from edgefa.benchmarks.cards import model_cards
from edgefa.benchmarks.tables import bench_markdown, command_line, display_name, flat_rows, settings_lines, table_cells
from edgefa.errors import EdgefaError
from edgefa.fileio import check_writable, check_writable_dir, json_bytes, with_ext, write_file_set
from edgefa.metrics import BIN_NAMES
from edgefa.paths import portable

MAX_OVERLAY_ROWS = 8


def load_run(run_dir: str | Path) -> dict:
    path = Path(run_dir)
    path = path / "bench.json" if path.is_dir() else path
    if not path.is_file():
        raise EdgefaError(f"{run_dir}: no bench.json (run `edgefa bench ... -o {run_dir}` first)")
    try:
        record = json.loads(path.read_text())
        flat_rows(record)  # every row the report reads, read once here: a malformed record is one line
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError, IndexError) as exc:
        detail = f"missing {exc}" if isinstance(exc, KeyError) else type(exc).__name__
        raise EdgefaError(f"{path}: not an edgefa bench record ({detail})") from None
    record["dir"] = str(path.parent)
    return record


def _key(r: dict) -> tuple:
    return (r["name"], r["format"], r["precision"], r["runtime"])


def compare(base: dict, other: dict) -> list[dict]:
    """Rows of ``other`` matched to ``base`` by file name, format, precision and runtime: deltas."""
    t_base, t_other = base["settings"]["threads"][0], other["settings"]["threads"][0]
    lookup = {_key(r): r for r in flat_rows(base)}
    out = []
    for r in flat_rows(other):
        b = lookup.get(_key(r))
        if b is None:
            continue
        d = {"name": r["name"], "runtime": r["runtime"], "p50_base": b.get(f"p50_{t_base}t"),
             "p50_new": r.get(f"p50_{t_other}t"), "nme_base": b.get("nme_mean"), "nme_new": r.get("nme_mean")}
        d["p50_delta_pct"] = (100 * (d["p50_new"] / d["p50_base"] - 1)) if d["p50_base"] and d["p50_new"] else None
        d["nme_delta"] = (d["nme_new"] - d["nme_base"]) if None not in (d["nme_new"], d["nme_base"]) else None
        out.append(d)
    return out


def _labelled(rows: list[dict]) -> list[dict]:
    for r in rows:
        r["label"] = display_name(r).replace(" — untrained", " (untrained)")
    return rows


def figures(runs: list[dict], rows_by_run: list[tuple[str, list[dict]]]) -> dict[str, bytes]:
    """Figures over every run's rows; a label benched in several runs (the peers) is drawn once, from
    the newest run, so a report that adds a run of new models keeps the earlier models in its plots."""
    threads = runs[-1]["settings"]["threads"]
    picked: dict[str, tuple[dict, dict, dict]] = {}
    for record, (_, rows) in zip(runs, rows_by_run):
        for t, r in zip(record["targets"], rows):
            picked.pop(r["label"], None)  # re-insert: the newest run's row, in its run's order
            picked[r["label"]] = (record, t, r)
    curves, overlay_paths = [], {}
    for record, t, r in picked.values():
        acc = t.get("accuracy") or {}
        block = acc.get("nme") if acc.get("status") == "ok" else None
        if block and "ced" in block:
            curves.append((r, block["ced"]))
        path = Path(record["dir"]) / "overlays" / f"{slug(t['name'])}.npz"
        if r.get("nme_mean") is not None and path.is_file():
            overlay_paths[id(r)] = (r, path)
    overlays = []  # as the CED picks: every file when they fit, else the best of each family, peers always
    for r in plots.ced_selection([r for r, _ in overlay_paths.values()], MAX_OVERLAY_ROWS):
        with np.load(overlay_paths[id(r)][1], allow_pickle=False) as z:  # arrays only: never unpickle
            overlays.append((r["label"], {k: z[k] for k in z.files}))
    rows = [r for _, _, r in picked.values()]
    figs = {"ced": plots.ced_plot(curves), "pareto": plots.pareto_plot(rows, f"p50_{threads[0]}t"),
            "bins": plots.bins_plot(rows), "overlays": plots.overlay_sheet(overlays)}
    return {k: v for k, v in figs.items() if v}


def write_csv(rows_by_run: list[tuple[str, list[dict]]]) -> bytes:
    keys: list[str] = ["run"]
    for _, rows in rows_by_run:
        for r in rows:
            keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
    writer.writeheader()
    for run, rows in rows_by_run:
        for r in rows:
            writer.writerow({"run": run, **{k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()}})
    return buf.getvalue().encode()


def comparison_markdown(name: str, deltas: list[dict]) -> list[str]:
    lines = [f"## Compared with the baseline run: {name}", "",
             "| model | runtime | p50 ms base | p50 ms new | Δ p50 | NME base | NME new | Δ NME |", "|---|---|---|---|---|---|---|---|"]
    f = (lambda v, s: "–" if v is None else format(v, s))
    for d in deltas:
        lines.append(f"| {d['name']} | {d['runtime']} | {f(d['p50_base'], '.2f')} | {f(d['p50_new'], '.2f')} | "
                     f"{f(d['p50_delta_pct'], '+.1f')}% | {f(d['nme_base'], '.3f')} | {f(d['nme_new'], '.3f')} | "
                     f"{f(d['nme_delta'], '+.3f')} |")
    return lines + [""]


COLUMNS_NOTE = ("Columns: params and GFLOPs (2 x MACs, torch.utils.flop_counter; conv/linear/matmul only) of the "
                "network; size of the file (torch rows: fp32 state_dict); p50 = median latency; NME % on the "
                "data named above by yaw bin, balanced mean over the bins (**bold**), plain mean over faces; pose "
                "MAE = mean of yaw/pitch/roll absolute errors in degrees; p50/mb05 = this row's first-thread-count "
                "p50 over the 3DDFA-V2 mb05 peer's file of the same format and precision (fp32 when that precision "
                "is missing) in the same run.")
FIGURE_CAPTIONS = (("pareto", "Accuracy vs latency"), ("ced", "CED curves"), ("bins", "NME per yaw bin"),
                   ("overlays", "Landmark overlays (best, median, worst face per model)"))


def markdown(title: str, runs: list[dict], figs: dict[str, str], deltas: list[tuple[str, list[dict]]],
             preface: list[str]) -> str:
    lines = [f"# {title}", "", *preface]
    for i, rec in enumerate(runs):
        body = bench_markdown(rec, with_command=False).split("\n", 2)[2]  # title and command are in the preface
        lines += ([f"## Run {i + 1}: `{rec['dir']}`", ""] if len(runs) > 1 else []) + [body]
    lines += [COLUMNS_NOTE, ""]
    for name, d in deltas:
        lines += comparison_markdown(name, d) if d else []  # runs of different files: nothing to compare
    for key, caption in FIGURE_CAPTIONS:
        if key in figs:
            lines += [f"![{caption}]({figs[key]})", ""]
    return "\n".join(lines)


def html_page(title: str, runs: list[dict], rows_by_run, pngs: dict[str, bytes], deltas, preface: list[str]) -> str:
    """The HTML twin of the Markdown report (which stays the source of truth): a jinja2 template, the
    notes rendered as Markdown, sortable tables, status as text and colour, figures embedded."""
    import jinja2
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark").enable("table")
    tables = []
    for rec, (_, rows) in zip(runs, rows_by_run):
        threads = rec["settings"]["threads"]
        head = (["model", "file", "runtime", "params M", "GFLOPs", "size MB"] + [f"p50 ms {n}t" for n in threads]
                + [f"FPS {threads[0]}t", "mem MB"] + list(BIN_NAMES) + ["mean", "plain", "pose MAE", "p50/mb05", "status"])
        body = []
        for r in rows:
            *cells, status = table_cells(r, threads)
            body.append({"cells": [c.replace("**", "") for c in cells], "status": status,
                         "status_class": r["status"].replace(" ", "-").lower()})
        tables.append({"dir": rec["dir"], "settings": [ln.rstrip(" ") for ln in settings_lines(rec, False)],
                       "head": head, "rows": body})
    captions = dict(FIGURE_CAPTIONS)
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]))
    return env.get_template("report.html.j2").render(
        title=title, preface_html=md.render("\n".join(preface)), runs=tables, columns_html=md.render(COLUMNS_NOTE),
        comparisons=[(name, md.render("\n".join(comparison_markdown(name, d)[2:]))) for name, d in deltas if d],
        figures=[(captions.get(key, key), base64.b64encode(png).decode()) for key, png in pngs.items()])


def write_report(run_dirs: list[str], output: str | Path, title: str | None = None, notes: str | None = None,
                 command: str = "", stage: str = "", cards: str | Path | None = None) -> list[Path]:
    """Write OUTPUT.md/.csv/.json/.html (+ OUTPUT-*.png); returns the paths written. ``notes``: a
    Markdown file whose text goes under the title (context the runs cannot know). ``command`` is
    what a reader pastes to redo the report; ``stage`` names the pipeline stage that wrote it.
    ``cards``: a folder for one model card per trained edgefa model (``benchmarks/cards.py``)."""
    out = Path(output)
    out = out.with_suffix("") if out.suffix in (".md", ".html", ".json", ".csv") else out
    if cards:
        check_writable_dir(cards, "--cards")
    check_writable(with_ext(out, ".md"), "-o")
    runs = [load_run(d) for d in run_dirs]
    preface = [command_line({"command": command, "stage": stage}, "Report")] if command else []
    preface += [command_line(rec, "Bench") for rec in runs] + [""]  # the exact commands first, pasteable
    if notes:
        if not Path(notes).is_file():
            raise EdgefaError(f"--notes {notes}: file not found")
        preface += [*Path(notes).read_text().strip().splitlines(), ""]
    rows_by_run = [(rec["dir"], _labelled(flat_rows(rec))) for rec in runs]
    pngs = figures(runs, rows_by_run)  # reads the runs' overlay files: before their folders are shortened
    for rec in runs:  # what the report shows names no machine path (runs benched by older versions too)
        rec["dir"] = portable(rec["dir"])
        for t in rec.get("targets", []):
            t["ref"], t["note"] = portable(t.get("ref", "")), portable(t.get("note", ""))
    rows_by_run = [(rec["dir"], rows) for rec, (_, rows) in zip(runs, rows_by_run)]
    deltas = [(rec["dir"], compare(runs[0], rec)) for rec in runs[1:]]
    fig_paths = {key: out.parent / f"{out.name}-{key}.png" for key in pngs}
    title = title or f"edgefa benchmark: {out.name}"
    record = {"title": title, "runs": runs, "rows": {run: rows for run, rows in rows_by_run},
              "comparisons": {name: d for name, d in deltas}}
    files = {fig_paths[key]: png for key, png in pngs.items()}
    files[with_ext(out, ".md")] = markdown(title, runs, {k: p.name for k, p in fig_paths.items()}, deltas,
                                           preface).encode()
    files[with_ext(out, ".csv")] = write_csv(rows_by_run)
    files[with_ext(out, ".html")] = html_page(title, runs, rows_by_run, pngs, deltas, preface).encode()
    files[with_ext(out, ".json")] = json_bytes(record)
    for rec in runs if cards else []:  # a model benched in several runs: the newest run's card
        files.update(model_cards(rec, cards, source=f"{rec['dir']}/bench.json"))
    # all or nothing: a full disk used to leave the PNGs, .md and .csv without the .html and .json
    return write_file_set(files)
