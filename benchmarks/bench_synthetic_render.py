"""How fast the synthetic renderer fills a training set: N crops with W worker processes.

    python benchmarks/bench_synthetic_render.py [--n 2000] [--workers 2] [--size 120]

Target (foundation issue): 2,000 images at 120x120 in under a minute on 2 cores.
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import time

from edgefa.data.synthetic import SyntheticFaces
from edgefa.data.workers import WorkerLoader


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--size", type=int, default=120)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    dataset = SyntheticFaces(n=args.n, seed=args.seed, size=args.size)
    loader = WorkerLoader(dataset, batch_size=50, num_workers=args.workers)
    load_before = os.getloadavg()[0]  # other work on the machine slows this down: say how much
    start = time.perf_counter()
    count = sum(len(batch["image"]) for batch in loader)
    seconds = time.perf_counter() - start
    del loader  # joins the workers, so their CPU time is counted below
    worker_cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_ms = (worker_cpu.ru_utime + worker_cpu.ru_stime) * 1000 / count
    print(f"rendered {count} synthetic {args.size}x{args.size} faces with {args.workers} workers in "
          f"{seconds:.1f} s ({count / seconds:.0f} images/s) on {os.cpu_count()} CPUs, "
          f"{platform.processor() or platform.machine()}, Python {platform.python_version()}, "
          f"1-min load average {load_before:.1f} before; workers used {cpu_ms:.1f} CPU ms per image "
          f"(start-up included), i.e. ~{count * cpu_ms / 1000 / args.workers:.0f} s on {args.workers} idle cores")


if __name__ == "__main__":
    main()
