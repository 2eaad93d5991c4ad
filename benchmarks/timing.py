"""Latency statistics of one callable and the process's memory, as every bench row reports them."""
from __future__ import annotations

import platform
import resource
import time

import numpy as np


def time_calls(fn, warmup: int = 10, runs: int | None = None, min_time: float = 2.0,
               min_runs: int = 10, max_runs: int = 100_000) -> np.ndarray:
    """Milliseconds per call after ``warmup`` calls: exactly ``runs`` calls, or as many as fit in
    ``min_time`` seconds (at least ``min_runs``, so p99 of a slow model still has samples)."""
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter_ns()
        fn()
        times.append((time.perf_counter_ns() - t0) / 1e6)
        if runs:
            if len(times) >= runs:
                break
        elif (time.perf_counter() - start >= min_time and len(times) >= min_runs) or len(times) >= max_runs:
            break
    return np.asarray(times)


def latency_stats(times_ms: np.ndarray, batch: int = 1) -> dict:
    t = np.asarray(times_ms, dtype=np.float64)
    mean = float(t.mean())
    return {"runs": int(t.size), "mean_ms": mean, "std_ms": float(t.std()), "min_ms": float(t.min()),
            "p50_ms": float(np.percentile(t, 50)), "p90_ms": float(np.percentile(t, 90)),
            "p99_ms": float(np.percentile(t, 99)), "fps": 1000.0 * batch / mean if mean > 0 else float("nan")}


def rss_mb() -> float:
    """Resident memory now (Linux /proc; elsewhere the peak, the best portable figure)."""
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
        import os

        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return peak_rss_mb()


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if platform.system() == "Darwin" else peak / 2**10  # bytes on macOS, KiB on Linux
