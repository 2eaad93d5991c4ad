"""Several recipes trained at once on data held on the device: the GPU path.

    python -m edgefa.training.device_trainer --config training/configs/A.yaml --config B.yaml \\
        [--budget SECONDS] [--weights-out DIR] [--resume] [key=value ...]

Why a second trainer: a GPU step of a small student takes milliseconds, so the CPU trainer's
per-sample augmentation in loader workers, its host syncs and its one model per process leave a GPU
idle (~110 ms per batch of 128 measured on an H200). Here:
- the training crops are decoded once into one uint8 tensor on the device, their labels beside them;
- each batch is gathered and augmented in one batched call (``augment_batch``: the CPU path's
  transforms and exact label warps) and labelled by one teacher forward that every student shares;
- every recipe trains its own model, optimizer, schedule, EMA and random stream on those batches,
  so a recipe trained beside others ends with the weights it gets alone;
- a step never waits for the host: losses and a non-finite flag accumulate on the device and are read
  once per epoch, where validation and checkpoints happen as in ``edgefa train`` (same files);
- on CUDA: bf16 autocast for the students (teacher and losses in fp32), channels_last, cudnn.benchmark,
  fused AdamW.
``--budget`` first times a few steps on throw-away copies of the models (a probe) and keeps the recipes
whose full schedules fit, in the order given; the first is shortened when even it does not fit alone.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from timm.utils import ModelEmaV3

from edgefa.data.registry import create_dataset
from edgefa.errors import EdgefaError
from edgefa.evaluate import evaluate, validation_metrics
from edgefa.fileio import atomic_write_json, check_writable, check_writable_dir
from edgefa.models.checkpoint import save_checkpoint
from edgefa.models.pretrained import save_weights
from edgefa.models.registry import create_model
from edgefa.paths import shell_command
from edgefa.predictor import TorchPredictor, to_model_input
from edgefa.training.augment import AugmentConfig
from edgefa.training.augment_batch import augment_batch, draw_batch
from edgefa.training.config import load_config, portable_config
from edgefa.training.data import CachedDataset, crop_pixel_labels, params_belong
from edgefa.training.objectives import loss_terms, weighted
from edgefa.training.pcgrad import PCGrad
from edgefa.training.schedule import lr_at
from edgefa.training.trainer import (
    init_weights,
    make_optimizer,
    resolve_face_model,
    restore_state,
    rng_state,
    weights_digest,
)

# what every recipe trained together must agree on: they share each batch and its augmentation
SHARED_KEYS = (("data", "train"), ("augment",), ("batch_size",), ("seed",), ("face_model",), ("device",))
DATA_KEYS = ("image", "pts68", "pts21", "pose", "params", "mirror_params", "mirror_pts68")
SAFETY = 0.9  # of the budget a plan may fill: checkpoints, the last validation and timing noise


def check_shared(cfgs: list[dict]) -> None:
    first = cfgs[0]
    for cfg in cfgs[1:]:
        for path in SHARED_KEYS:
            a, b = first, cfg
            for key in path:
                a, b = a[key], b[key]
            if a != b:
                raise EdgefaError(f"recipe {cfg['name']}: {'.'.join(path)} is {b!r} but {first['name']}'s is {a!r}; "
                                  f"recipes trained together share their batches")
    teachers = {c["teacher"] for c in cfgs if c["teacher"]}
    if len(teachers) > 1:
        raise EdgefaError(f"recipes name different teachers ({', '.join(sorted(teachers))}); one teacher labels every batch")
    names = [c["output"] for c in cfgs]
    if len(set(names)) != len(names):
        raise EdgefaError("two recipes write the same output folder; set name= or output= apart")


def load_device_data(specs, face_model_name: str, workers: int, progress: bool, device) -> tuple[dict, int]:
    """Every training sample decoded once, labels in crop pixels, as tensors on ``device``."""
    parts, sizes = [], set()
    for spec in [specs] if isinstance(specs, str) else list(specs):
        ds = create_dataset(spec)
        keep = params_belong(ds, face_model_name)
        cached = CachedDataset(ds, workers, progress, desc=f"decoding {spec.split(':')[0]}")
        parts.append(crop_pixel_labels(cached.arrays, cached.size, keep))
        sizes.add(cached.size)
    if len(sizes) != 1:
        raise EdgefaError(f"data.train: datasets have different crop sizes: {sorted(sizes)}")
    return {k: torch.from_numpy(np.concatenate([p[k] for p in parts])).to(device) for k in DATA_KEYS}, sizes.pop()


class Student:
    """One recipe's model, optimizer, EMA, schedule and random stream; its steps never sync."""

    def __init__(self, cfg: dict, fm, device: str, resume: bool = False, probe: bool = False):
        self.cfg, self.fm, self.device, self.out = cfg, fm, device, Path(cfg["output"])
        self.cuda = device.startswith("cuda")
        torch.manual_seed(cfg["seed"])  # the model starts as it does when trained alone
        self.model = create_model(cfg["model"]["name"], **cfg["model"]["cfg"]).to(device)
        self.init_digest = init_weights(self.model, cfg, fm) if cfg["init"] and not (resume or probe) else None
        if cfg["channels_last"]:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = make_optimizer(self.model, cfg, fused=self.cuda)
        state = None
        if resume and (self.out / "last.pt").is_file():
            state = restore_state(str(self.out / "last.pt"), self.model, self.optimizer, cfg)
        self.ema = ModelEmaV3(self.model, decay=cfg["ema"], use_warmup=True) if cfg["ema"] else None
        self.start_epoch, self.best, self.history = 0, float("inf"), []
        if state is not None:
            self.start_epoch, self.best, self.history = state["epoch"], float(state["best"]), list(state["history"])
            if self.ema is not None:
                self.ema.module.load_state_dict(state["ema"])
        self.eval_model = self.ema.module if self.ema is not None else self.model
        self.surgery = PCGrad(self.optimizer, seed=cfg["seed"]) if cfg["pcgrad"] else None
        self.epochs = cfg["epochs"]
        self._rng = {"cpu": torch.get_rng_state()}
        if self.cuda:
            self._rng["cuda"] = torch.cuda.get_rng_state(device)
        if state is not None and "student_rng" in state:
            self._rng = state["student_rng"]
        self.sums, self.steps_done, self.term_names = None, 0, []

    @contextlib.contextmanager
    def own_rng(self):
        """Dropout and the like draw from this recipe's own stream, whoever else trains beside it."""
        outer = {"cpu": torch.get_rng_state()}
        torch.set_rng_state(self._rng["cpu"])
        if self.cuda:
            outer["cuda"] = torch.cuda.get_rng_state(self.device)
            torch.cuda.set_rng_state(self._rng["cuda"], self.device)
        try:
            yield
        finally:
            self._rng["cpu"] = torch.get_rng_state()
            torch.set_rng_state(outer["cpu"])
            if self.cuda:
                self._rng["cuda"] = torch.cuda.get_rng_state(self.device)
                torch.cuda.set_rng_state(outer["cuda"], self.device)

    def step(self, batch: dict, teacher_raw, epoch: int, step: int, steps: int) -> None:
        cfg = self.cfg
        lr = lr_at(epoch + step / steps, cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        with self.own_rng(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.cuda):
            outputs = self.model(to_model_input(batch["image"], self.model))
        aux = outputs if isinstance(outputs, dict) else None
        pred_w = (outputs["params"] if aux is not None else outputs).float()
        terms = loss_terms(pred_w, batch, self.fm, cfg["loss"], teacher_raw, aux=aux)
        parts = weighted(terms, cfg["loss"], pred_w)
        loss = sum(parts)
        self.optimizer.zero_grad(set_to_none=True)
        if self.surgery is not None and len(parts) > 1:
            self.surgery.pc_backward(parts)
        else:
            loss.backward()
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model, step=epoch * steps + step)
        values = torch.stack([loss.detach(), *(v.detach().float() for v in terms.values())])
        self.sums = values if self.sums is None else self.sums + values
        self.term_names = list(terms)
        self.steps_done += 1

    def end_epoch(self, epoch: int, val_set, command: str | None, seconds: float) -> dict:
        """Read the epoch's sums (the one sync), validate, save best.pt / last.pt like ``edgefa train``."""
        means = (self.sums / max(1, self.steps_done)).tolist() if self.sums is not None else [float("nan")]
        self.sums, self.steps_done = None, 0
        if not math.isfinite(means[0]):
            raise EdgefaError(f"{self.cfg['name']}: loss is {means[0]} in epoch {epoch + 1}; "
                              f"last good checkpoint kept in {self.out / 'last.pt'}")
        self.eval_model.eval()
        predictor = TorchPredictor(self.eval_model, self.fm, self.cfg["name"], self.device)
        metrics = validation_metrics(evaluate(predictor, val_set, batch=256, progress=False),
                                     self.cfg["data"]["val"], "data.val")
        metric = metrics["balanced_mean"]
        self.history.append({"epoch": epoch + 1, "val_nme": round(metric, 4), "loss": round(means[0], 4),
                             "terms": {k: round(v, 4) for k, v in zip(self.term_names, means[1:])},
                             "seconds": round(seconds, 1)})
        extra = {"config": portable_config(self.cfg), "command": command, "epoch": epoch + 1,
                 "history": self.history, "metrics": metrics}
        if metric < self.best:
            self.best = metric
            save_checkpoint(self.out / "best.pt", self.eval_model, self.fm, **extra)
        if self.ema is not None:
            extra["ema"] = {k: v.detach().cpu() for k, v in self.ema.module.state_dict().items()}
        save_checkpoint(self.out / "last.pt", self.model, self.fm, optimizer=self.optimizer.state_dict(),
                        rng=rng_state(), best=self.best, student_rng=dict(self._rng), **extra)
        return self.history[-1]


class BatchStream:
    """The batches every student shares: a seeded order and seeded augmentation draws per epoch."""

    def __init__(self, data: dict, size: int, cfg: dict, teacher=None):
        self.data, self.size, self.teacher = data, size, teacher
        self.n = len(data["image"])
        self.batch_size = min(cfg["batch_size"], self.n)
        self.augment = AugmentConfig(**cfg["augment"]) if cfg["augment"] else None
        self.seed = cfg["seed"]
        self.steps = max(1, self.n // self.batch_size)  # the last partial batch is dropped, as on CPU
        self.device = data["image"].device

    def epoch(self, epoch: int):
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 1000 + epoch))
        order = order.to(self.device)
        draws = torch.Generator(self.device).manual_seed(self.seed * 1000 + epoch)
        for step in range(self.steps):
            index = order[step * self.batch_size:(step + 1) * self.batch_size]
            batch = {k: v.index_select(0, index) for k, v in self.data.items()}
            if self.augment is not None:
                draw = draw_batch(len(index), self.augment, self.size, draws, self.device)
                batch = augment_batch(batch, self.size, self.augment, draw)
            teacher_raw = self.teacher(batch["image"]) if self.teacher is not None else None
            yield step, batch, teacher_raw


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def probe(cfgs: list[dict], fm, stream: BatchStream, val_set, seconds: float = 20.0) -> dict:
    """Seconds per step of the shared part and of each recipe, on throw-away copies of the models,
    and of one validation pass; the first steps (CUDA start-up, cudnn autotuning) are not counted."""
    device = str(stream.device)
    students = [Student(c, fm, device, probe=True) for c in cfgs]
    shared, own, counted = 0.0, [0.0] * len(students), 0
    start = time.perf_counter()
    batches = stream.epoch(0)
    for i in range(max(4, stream.steps)):
        if i >= 3 and time.perf_counter() - start > seconds:
            break
        _sync(device)
        t0 = time.perf_counter()
        try:
            step, batch, teacher_raw = next(batches)
        except StopIteration:
            batches = stream.epoch(i)
            step, batch, teacher_raw = next(batches)
        _sync(device)
        t1 = time.perf_counter()
        times = []
        for s in students:
            s.step(batch, teacher_raw, 0, step, stream.steps)
            _sync(device)
            times.append(time.perf_counter() - t1)
            t1 = time.perf_counter()
        if i >= 2:
            counted += 1
            shared += t1 - t0 - sum(times)
            own = [a + b for a, b in zip(own, times)]
    t0 = time.perf_counter()
    evaluate(TorchPredictor(students[0].eval_model.eval(), fm, "probe", device), val_set, batch=256, progress=False)
    return {"shared_s": shared / max(1, counted), "step_s": {c["name"]: t / max(1, counted) for c, t in zip(cfgs, own)},
            "val_s": time.perf_counter() - t0, "steps_timed": counted, "batch_size": stream.batch_size}


def plan(cfgs: list[dict], timing: dict, steps: int, budget_s: float) -> tuple[list[dict], list[str]]:
    """The recipes whose full schedules fit ``budget_s``, in order; the first shortened if even it does not.
    Returns (kept configs, a line per recipe saying what was decided)."""
    kept, notes = [], []

    def cost(group):
        longest = max(c["epochs"] for c in group)
        return longest * steps * timing["shared_s"] + sum(
            c["epochs"] * (steps * timing["step_s"][c["name"]] + timing["val_s"]) for c in group)

    for cfg in cfgs:
        need = cost(kept + [cfg])
        if need <= SAFETY * budget_s:
            kept.append(cfg)
            notes.append(f"{cfg['name']}: {cfg['epochs']} epochs (all together ~{need:.0f} s)")
        else:
            notes.append(f"{cfg['name']}: left out, the group would need ~{need:.0f} s of {budget_s:.0f}")
    if not kept and budget_s <= 0:
        raise EdgefaError(f"--budget: nothing left to train with after loading the data and the probe "
                          f"({budget_s:.0f} s left); give a larger budget")
    if not kept:
        first = dict(cfgs[0])
        per_epoch = steps * (timing["shared_s"] + timing["step_s"][first["name"]]) + timing["val_s"]
        epochs = max(1, int(SAFETY * budget_s // per_epoch))
        notes[0] = f"{first['name']}: shortened from {first['epochs']} to {epochs} epochs to fit {budget_s:.0f} s"
        first["epochs"] = epochs
        kept = [first]
    return kept, notes


def train_together(cfgs: list[dict], resume: bool = False, budget_s: float | None = None, progress: bool = True,
                   command: str | None = None) -> dict:
    """Train every recipe of ``cfgs`` on shared batches; a summary per recipe (and the plan and timings)."""
    t_start = time.perf_counter()
    check_shared(cfgs)
    first = cfgs[0]
    for cfg in cfgs:
        check_writable(Path(cfg["output"]) / "last.pt", "run")  # fail before any work
    device = first["device"] if first["device"] != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if first["threads"]:
        torch.set_num_threads(first["threads"])
    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True  # fixed shapes: autotune each convolution once
    fm = resolve_face_model(first["face_model"])
    teacher = None
    spec = next((c["teacher"] for c in cfgs if c["teacher"]), None)
    if spec:
        from edgefa.training.distill import Teacher

        teacher = Teacher(spec, fm, device)
    data, size = load_device_data(first["data"]["train"], fm.name, first["data"]["workers"], progress, device)
    val_set = CachedDataset(create_dataset(first["data"]["val"]), first["data"]["workers"], progress, desc="caching val")
    stream = BatchStream(data, size, first, teacher)
    timing, notes = None, []
    if budget_s is not None:
        timing = probe(cfgs, fm, stream, val_set)
        left = budget_s - (time.perf_counter() - t_start)
        cfgs, notes = plan(cfgs, timing, stream.steps, left)
        for line in notes:
            print(f"plan: {line}", flush=True)
    students = [Student(c, fm, device, resume=resume) for c in cfgs]
    t0 = time.perf_counter()
    for epoch in range(min(s.start_epoch for s in students), max(s.epochs for s in students)):
        active = [s for s in students if s.start_epoch <= epoch < s.epochs]
        epoch_t0 = time.perf_counter()
        for step, batch, teacher_raw in stream.epoch(epoch):
            for s in active:
                s.step(batch, teacher_raw, epoch, step, stream.steps)
            if progress and (step + 1) % max(1, stream.steps // 4) == 0:
                print(f"epoch {epoch + 1} batch {step + 1}/{stream.steps}: {time.perf_counter() - epoch_t0:.1f} s",
                      flush=True)
        for s in active:
            row = s.end_epoch(epoch, val_set, command, time.perf_counter() - t0)
            print(f"{s.cfg['name']} epoch {epoch + 1}/{s.epochs}: val NME {row['val_nme']:.3f} % (balanced), "
                  f"loss {row['loss']:.4f}", flush=True)
    summaries = {}
    for s in students:
        summary = {"best_val_nme": s.best, "history": s.history, "output": str(s.out), "world_size": 1,
                   "trainer": "device_trainer", "device": device, "epochs": s.epochs}
        if s.init_digest:
            summary["init"] = {"path": s.cfg["init"], "weights_digest": s.init_digest}
        atomic_write_json(s.out / "summary.json", summary)
        summaries[s.cfg["name"]] = summary
    return {"recipes": summaries, "plan": notes, "timing": timing, "device": device,
            "seconds": round(time.perf_counter() - t_start, 1)}


def export_fp16(summaries: dict, folder: Path) -> list[Path]:
    """Each recipe's best.pt as a tensors-only fp16 weights file (what comes back from a rented GPU)."""
    from edgefa.models.checkpoint import model_from_checkpoint

    written = []
    for name, summary in summaries.items():
        best = Path(summary["output"]) / "best.pt"
        model, fm, state = model_from_checkpoint(best)
        header = {"model": state["model"]["name"], "cfg": state["model"]["cfg"], "recipe": name,
                  "val_nme": round(summary["best_val_nme"], 4), "epochs": summary["epochs"],
                  "config": state.get("config"), "weights_digest": weights_digest(model)}
        path = folder / f"{name}.safetensors"
        save_weights(path, model.state_dict(), fm, header)
        written.append(path)
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", action="append", required=True,
                        help="a recipe, optionally with its own overrides in the same argument: "
                             "'PATH key=value ...' (repeat for several recipes)")
    parser.add_argument("overrides", nargs="*", help="key=value for every recipe")
    parser.add_argument("--budget", type=float, help="seconds this call may take: plan the recipes to fit")
    parser.add_argument("--weights-out", help="folder for each recipe's best weights as fp16 .safetensors")
    parser.add_argument("--resume", action="store_true", help="continue each recipe from its output's last.pt")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--debug", action="store_true", help="tracebacks instead of one-line errors")
    args = parser.parse_intermixed_args(argv)  # overrides may come before or after the options
    try:
        recipes = [shlex.split(arg) for arg in args.config]
        cfgs = [load_config(path, [*args.overrides, *own]) for path, *own in recipes]
        if args.budget is not None and args.budget <= 0:
            raise EdgefaError(f"--budget {args.budget}: expected seconds > 0")
        if args.weights_out:
            check_writable_dir(Path(args.weights_out), "--weights-out")
        command = shell_command(["python", "-m", "edgefa.training.device_trainer", *sum((["--config", c] for c in args.config), []),
                                 *args.overrides] + (["--resume"] if args.resume else []))
        result = train_together(cfgs, resume=args.resume, budget_s=args.budget, progress=not args.quiet, command=command)
        if args.weights_out:
            folder = Path(args.weights_out)
            export_fp16(result["recipes"], folder)
            atomic_write_json(folder / "device-train.json", result)
    except EdgefaError as exc:
        if args.debug:
            raise
        print(f"device_trainer: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({k: round(v["best_val_nme"], 4) for k, v in result["recipes"].items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
