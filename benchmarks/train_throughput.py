"""Training throughput, images per second, per model and data path (the GPU-trainer issue's measure).

    python benchmarks/train_throughput.py -o reports/train-throughput --device cpu
    python benchmarks/train_throughput.py -o $OUT/train-throughput --device cuda     # on a lent GPU

Three data paths feed the same step (``device_trainer.Student.step``: forward, the recipe's loss,
backward, AdamW, EMA), so the differences between them are where and how augmentation runs:
- ``loader``: ``edgefa train``'s pipeline, per-sample numpy/cv2 augmentation in ``--workers`` DataLoader
  worker processes;
- ``inline``: the same per-sample augmentation in the training process itself (``data.workers=0``),
  OpenCV on one thread as in a worker;
- ``batched``: ``device_trainer``'s, the crops held as one tensor and a batch augmented in one call.
Each is timed over ``--seconds`` after warm-up steps (start-up, autotuning) and reported as
batch size / mean seconds per step. The recipe is the refined one (refined labels, no teacher).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import torch

from edgefa.benchmarks.machine import machine_facts, machine_line, script_command, versions_line
from edgefa.data.workers import WorkerLoader
from edgefa.errors import EdgefaError
from edgefa.fileio import atomic_write_bytes, atomic_write_json
from edgefa.models.registry import create_model
from edgefa.training.config import load_config
from edgefa.training.data import build_train_set
from edgefa.training.device_trainer import BatchStream, Student, load_device_data
from edgefa.training.trainer import resolve_face_model

RECIPE = "training/configs/mobilenetv3-small-refined.yaml"
MODELS = ("mobilenetv3_small_100", "mobilenetv3_large_100", "mobilenetv2_100", "mobilevit_xs", "mobilevitv2_100",
          "mobile_frnet", "mobilenet_v1_3ddfa")
WARMUP = 2


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _time_steps(student: Student, batches, steps: int, seconds: float, device: str) -> float:
    """Mean seconds per step (the batch's arrival included) after WARMUP steps."""
    times = []
    t0 = time.perf_counter()
    for i, (batch, teacher_raw) in enumerate(batches):
        student.step(batch, teacher_raw, 0, i % steps, steps)
        _sync(device)
        now = time.perf_counter()
        if i >= WARMUP:
            times.append(now - t0)
            if sum(times) > seconds and len(times) >= 3:
                break
        t0 = now
    return sum(times) / len(times)


def _cycle(make):
    while True:
        yield from make()


def measure(cfg: dict, models: list[str], device: str, seconds: float, workers: int) -> list[dict]:
    fm = resolve_face_model(cfg["face_model"])
    data, size = load_device_data(cfg["data"]["train"], fm.name, workers, False, device)
    stream = BatchStream(data, size, cfg)
    train_set, _ = build_train_set(cfg["data"]["train"], cfg["augment"], cfg["seed"], True, workers, False, fm.name)
    rows = []
    for name in models:
        recipe = {**cfg, "model": {"name": name, "cfg": {}}, "init": None, "device": device}
        row = {"model": name, "batch": stream.batch_size}

        def loader_batches(workers=workers):
            loader = WorkerLoader(train_set, batch_size=stream.batch_size, shuffle=True, drop_last=True,
                                  num_workers=workers, persistent_workers=False, pin_memory=device.startswith("cuda"))
            for batch in loader:
                yield {k: v.to(device, non_blocking=True) for k, v in batch.items()}, None

        def device_batches():
            for _, batch, teacher_raw in stream.epoch(0):
                yield batch, teacher_raw

        for path, make in (("loader", loader_batches), ("inline", lambda: loader_batches(0)),
                           ("batched", device_batches)):
            student = Student(recipe, fm, device, probe=True)
            step_s = _time_steps(student, _cycle(make), stream.steps, seconds, device)
            row[path] = round(stream.batch_size / step_s, 1)
            print(f"{name} {path}: {row[path]} images/s", flush=True)
        rows.append(row)
    return rows


def report(record: dict) -> str:
    facts = record["machine"]
    lines = [
        "# Training throughput per model: loader vs batched augmentation",
        "",
        f"Command: `{record['command']}`",
        "",
        f"Machine: {facts['device']} ({machine_line(facts)}); {versions_line(facts)}.",
        "",
        f"Recipe `{RECIPE}` (refined labels, no teacher, EMA), batch {record['rows'][0]['batch']}, "
        f"{record['workers']} loader worker(s), each path timed for {record['seconds']:g} s after {WARMUP} warm-up steps. "
        "`loader` is `edgefa train`'s data path (per-sample augmentation in DataLoader worker processes), "
        "`inline` the same augmentation in the training process (`data.workers=0`), `batched` "
        "`device_trainer`'s (one tensor of crops, a batch augmented in one call); all three feed the same step.",
        "",
        "| model | loader (images/s) | inline (images/s) | batched (images/s) | batched / loader |",
        "|---|---|---|---|---|",
    ]
    for row in record["rows"]:
        lines.append(f"| {row['model']} | {row['loader']:.1f} | {row['inline']:.1f} | {row['batched']:.1f} | "
                     f"{row['batched'] / row['loader']:.2f}x |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", required=True, help="OUT: writes OUT.json and OUT.md")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--data", default="aflw-train:{shared}/data/aflw-train,split=train,n=2048,"
                                          "labels=runs/labels/aflw-train.npz",
                        help="training data spec (synthetic:seed=0,n=1024 on a machine without the shared data)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seconds", type=float, default=15.0, help="timed seconds per model and path")
    parser.add_argument("--workers", type=int, default=2, help="loader workers (the loader path; decoding)")
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args(argv)
    # OpenCV one-threaded here too, as in each loader worker: a fair inline path, and a process whose
    # OpenCV pool has run forks workers that hang in cv2.setNumThreads
    cv2.setNumThreads(1)
    face_model = "synthetic" if args.data.startswith("synthetic") else "bfm68"
    cfg = load_config(RECIPE, [f"data.train={args.data}", f"batch_size={args.batch}", f"face_model={face_model}"])
    if args.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
    try:
        for name in args.models.split(","):  # a typo is one line, before any data is loaded
            create_model(name)
        rows = measure(cfg, args.models.split(","), args.device, args.seconds, args.workers)
    except EdgefaError as exc:
        print(f"train_throughput: error: {exc}", file=sys.stderr)
        return 2
    facts = machine_facts()
    facts["device"] = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    record = {"command": script_command(argv), "machine": facts, "rows": rows, "seconds": args.seconds,
              "workers": args.workers, "data": args.data}
    out = Path(args.output)
    atomic_write_json(out.with_suffix(".json"), record)
    atomic_write_bytes(out.with_suffix(".md"), report(record).encode())
    print(f"wrote {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
