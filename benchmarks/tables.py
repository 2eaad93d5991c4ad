"""Bench records -> one flat row per model file (the papers' table), shared by bench.md and the report."""
from __future__ import annotations

import math

from edgefa.benchmarks.machine import machine_line, versions_line
from edgefa.metrics import BIN_NAMES

PEER_REF = "3ddfa-v2-mb05"


def fmt(value, spec: str, missing: str = "–") -> str:
    """A table cell: ``value`` formatted, ``missing`` for None or NaN (an empty yaw bin)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    return format(value, spec)


def accuracy_block(target: dict) -> dict | None:
    acc = target.get("accuracy") or {}
    return acc.get("nme") or acc.get("nme21") if acc.get("status") == "ok" else None


def is_untrained(target: dict) -> bool:
    return str(target.get("info", {}).get("training_data", "")).startswith("none")


def flat_rows(record: dict) -> list[dict]:
    """One dict per target: identity, size, compute, latency per thread count, memory, accuracy,
    and p50 relative to the mb05 peer's file of the same format/precision (1 thread)."""
    threads = record["settings"]["threads"]
    rows = []
    for t in record["targets"]:
        info = t.get("info", {})
        lat = {r["threads"]: r.get("latency") for r in t.get("rows", [])}
        block = accuracy_block(t)
        pose = (t.get("accuracy") or {}).get("pose_mae") or {}
        row = {
            "name": t["name"], "peer": t.get("peer", False), "untrained": is_untrained(t),
            "model": info.get("model", "?"), "format": info.get("format", "?"), "precision": info.get("precision", "?"),
            "postprocess": info.get("postprocess"), "runtime": t["runtime"], "status": t["status"], "note": t.get("note", ""),
            "params_m": info["params"] / 1e6 if info.get("params") else None,
            "gflops": 2 * info["macs"] / 1e9 if info.get("macs") else None,
            "macs_m": info["macs"] / 1e6 if info.get("macs") else None,
            "size_mb": info.get("size_mb"), "size_of": info.get("size_of"),
            "peak_rss_mb": (info.get("memory") or {}).get("peak_rss_mb"),
            "model_mem_mb": (info.get("memory") or {}).get("model_mb"),
        }
        for n in threads:
            stats = lat.get(n) or {}
            for key in ("mean_ms", "p50_ms", "p90_ms", "p99_ms", "std_ms", "fps"):
                row[f"{key[:-3] if key.endswith('_ms') else key}_{n}t"] = stats.get(key)
        if block:
            for b in BIN_NAMES:
                row[b] = block["bins"][b]
            row.update(nme_mean=block["balanced_mean"], nme_plain=block["plain_mean"],
                       nme_kind="68" if "nme" in (t.get("accuracy") or {}) else "aflw21",
                       auc7=block.get("auc7"), pose_mae=pose.get("mean"))
        else:
            acc = t.get("accuracy") or {}
            row["accuracy_note"] = (t.get("note") if t["kind"] == "foreign-tflite" else acc.get("note")) or ""
        rows.append(row)
    _peer_ratio(rows, threads[0])
    return rows


def _peer_ratio(rows: list[dict], threads: int) -> None:
    key = f"p50_{threads}t"
    peers = {(r["format"], r["precision"], r["postprocess"]): r[key] for r in rows
             if r["peer"] and r["name"].startswith(PEER_REF) and r.get(key)}
    for r in rows:
        ref = peers.get((r["format"], r["precision"], r["postprocess"])) or peers.get((r["format"], "fp32", r["postprocess"]))
        r["vs_peer"] = r[key] / ref if ref and r.get(key) else None


def command_line(record: dict, what: str = "Command") -> str:
    """``Command: `...` `` with only the pasteable command inside the code span; a pipeline's stage
    is said outside it."""
    stage = f" (its {record['stage']} stage)" if record.get("stage") else ""
    return f"{what}: `{record.get('command') or '?'}`{stage}  "


def settings_lines(record: dict, with_command: bool = True) -> list[str]:
    s = record["settings"]
    timing = f"{s['runs']} runs" if s.get("runs") else f"at least {s['min_time']} s"
    lines = [command_line(record)] * with_command + [
             f"Machine: {machine_line(record['machine'])}  ",
             f"Versions: {versions_line(record['machine'])}  ",
             f"Latency: batch {s['batch']}, {s['warmup']} warm-up calls, then {timing} per row; one call of the "
             f"runtime's run API on a prepared input (copies in/out included); threads pinned by the runtime's own "
             f"option. mem MB: resident memory added by loading the model and running it once timed (process RSS "
             f"after minus before; each model runs in its own process). Accuracy: `{s.get('data') or 'none'}`"
             + (f" — **data error: {s['data_error']}**" if s.get("data_error") else "") + f". Took {record['seconds']} s."]
    return lines


def bench_markdown(record: dict, with_command: bool = True) -> str:
    threads = record["settings"]["threads"]
    rows = flat_rows(record)
    head = (["model", "file", "runtime", "params M", "GFLOPs", "size MB"] + [f"p50 ms {n}t" for n in threads]
            + [f"FPS {threads[0]}t", "mem MB"] + list(BIN_NAMES) + ["mean", "plain", "pose MAE", "p50/mb05", "status"])
    lines = ["# edgefa bench", ""] + settings_lines(record, with_command) + ["", "| " + " | ".join(head) + " |",
                                                             "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join(table_cells(r, threads)) + " |")
    return "\n".join(lines) + "\n"


def display_name(r: dict) -> str:
    return r["name"] + (" (peer)" if r["peer"] and "peer" not in r["name"] else "") + (" — untrained" if r["untrained"] else "")


def table_cells(r: dict, threads: list[int]) -> list[str]:
    acc = [fmt(r.get(b), ".3f") for b in BIN_NAMES] + [
        (f"**{fmt(r.get('nme_mean'), '.3f')}**" if r.get("nme_mean") is not None else "–"),
        fmt(r.get("nme_plain"), ".3f"), fmt(r.get("pose_mae"), ".2f")]
    if r.get("nme_mean") is None and r.get("accuracy_note"):
        acc = [r["accuracy_note"].replace("|", "/")] + [""] * 5
    # words, not emoji: an emoji cell is an empty box without an emoji font
    note = r["note"].replace("|", "/") if r["status"] != "ok" else ""
    if r["status"] == "needs macOS":
        note = "spec loaded; latency and accuracy need macOS"
    return ([display_name(r), f"{r['format']} {r['precision']}", r["runtime"], fmt(r["params_m"], ".2f"),
             fmt(r["gflops"], ".3f"), fmt(r["size_mb"], ".2f")]
            + [fmt(r.get(f"p50_{n}t"), ".2f") for n in threads]
            + [fmt(r.get(f"fps_{threads[0]}t"), ".0f"), fmt(r["model_mem_mb"], ".1f")] + acc
            + [fmt(r.get("vs_peer"), ".2f") + ("×" if r.get("vs_peer") else ""), r["status"] + (f": {note}" if note else "")])
