"""The trainer behind ``edgefa train``: YAML recipe -> best.pt / last.pt, resumable, DDP-aware.

Under ``torchrun --nproc_per_node N -m edgefa train ...`` it runs DistributedDataParallel
(NCCL on GPU, gloo on CPU) with a distributed sampler; rank 0 alone evaluates, logs and saves.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from timm.utils import ModelEmaV3
from torch.utils.data import DistributedSampler
from tqdm import tqdm

from edgefa.data.registry import create_dataset
from edgefa.data.workers import WorkerLoader
from edgefa.errors import EdgefaError
from edgefa.evaluate import evaluate, validation_metrics
from edgefa.fileio import atomic_write_json, check_writable
from edgefa.models.checkpoint import load_3ddfa_v2, load_checkpoint, save_checkpoint
from edgefa.models.registry import create_model
from edgefa.paths import shell_command
from edgefa.predictor import PEER_KINDS, TorchPredictor, to_model_input
from edgefa.training.config import load_config, portable_config
from edgefa.training.data import CachedDataset, build_train_set
from edgefa.training.objectives import loss_terms, weighted
from edgefa.training.pcgrad import PCGrad
from edgefa.training.schedule import lr_at


def resolve_face_model(name: str):
    if name == "synthetic":
        from edgefa.facemodel.synthetic import synthetic_face_model

        return synthetic_face_model()
    if name.split(":")[0] == "bfm68":
        from edgefa.facemodel.bfm import load_bfm68
        from edgefa.paths import find_bfm68

        return load_bfm68(find_bfm68(name.partition(":")[2] or None))
    raise EdgefaError(f"face_model: unknown '{name}' (valid: synthetic, bfm68[:DIR])")


def make_optimizer(model, cfg: dict, fused: bool = False):
    """``fused``: one kernel per step for all parameters (CUDA), the same update."""
    opt = cfg["optimizer"]
    if opt["name"] == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=opt["lr"], weight_decay=opt["weight_decay"],
                                 fused=fused or None)
    if opt["name"] == "sgd":
        return torch.optim.SGD(model.parameters(), lr=opt["lr"], momentum=opt["momentum"],
                               weight_decay=opt["weight_decay"])
    raise EdgefaError(f"optimizer.name: unknown '{opt['name']}' (valid: adamw, sgd)")


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
            "python": torch.tensor(random.getstate()[1], dtype=torch.int64)}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), 624, 0, 0.0))
    random.setstate((3, tuple(int(v) for v in state["python"].tolist()), None))


def _field_error(resume, key: str, problem: str) -> EdgefaError:
    return EdgefaError(f"{resume}: field '{key}' {problem} (not a last.pt of this recipe?)")


def restore_state(resume: str, model, optimizer, cfg: dict) -> dict:
    """Load ``resume`` into model and optimizer after checking every field it needs, before any data
    is built: a checkpoint of another model or a damaged field is one line naming the file and the
    field, not a traceback at the first batch. Returns the state (its rng is applied by the caller)."""
    state = load_checkpoint(resume)
    for key in ("optimizer", "rng", "epoch", "best", "history"):
        if key not in state:
            raise EdgefaError(f"{resume}: no '{key}' to resume from (use a last.pt)")
    saved = state["model"].get("name") if isinstance(state["model"], dict) else None
    wanted = getattr(model, "registry_name", saved)
    if saved != wanted:
        raise EdgefaError(f"{resume}: a checkpoint of model '{saved}', but the recipe trains "
                          f"'{wanted}' (set model.name={saved} or start without --resume)")
    try:
        model.load_state_dict(state["state_dict"])
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise _field_error(resume, "state_dict", f"does not fit model '{saved}' ({str(exc).splitlines()[0][:160]})") from None
    try:
        optimizer.load_state_dict(state["optimizer"])
    except (ValueError, KeyError, TypeError, AttributeError, RuntimeError) as exc:
        raise _field_error(resume, "optimizer", f"does not fit the recipe's {cfg['optimizer']['name']} "
                           f"({type(exc).__name__}: {str(exc)[:160]})") from None
    # load_state_dict takes moment buffers of any shape; they would fail only inside optimizer.step()
    for i, (param, slots) in enumerate((p, optimizer.state.get(p, {})) for g in optimizer.param_groups
                                       for p in g["params"]):
        for name, value in slots.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != param.shape:
                raise _field_error(resume, "optimizer", f"holds {name} of shape {list(value.shape)} for parameter "
                                   f"{i} of shape {list(param.shape)}")
    rng, now = state["rng"], rng_state()
    if not isinstance(rng, dict) or any(not isinstance(rng.get(k), torch.Tensor) or rng[k].shape != v.shape
                                        for k, v in now.items()):
        raise _field_error(resume, "rng", f"is not the {', '.join(now)} generator states a last.pt saves")
    epoch, best, history = state["epoch"], state["best"], state["history"]
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise _field_error(resume, "epoch", f"is {epoch!r}, not a whole number >= 0")
    if isinstance(best, bool) or not isinstance(best, (int, float)) or math.isnan(best):
        raise _field_error(resume, "best", f"is {best!r}, not a number")
    if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
        raise _field_error(resume, "history", f"is {type(history).__name__}, not a list of epoch records")
    if cfg["ema"]:
        if "ema" not in state:
            raise EdgefaError(f"{resume}: has no EMA weights, but the recipe sets ema={cfg['ema']}")
        try:  # checked on a copy now; the EMA is built (from the restored model) later
            copy.deepcopy(model).load_state_dict(state["ema"])
        except (RuntimeError, TypeError, AttributeError) as exc:
            raise _field_error(resume, "ema", f"does not fit model '{saved}' ({str(exc).splitlines()[0][:160]})") from None
    return state


def weights_digest(model) -> str:
    h = hashlib.sha256()
    for value in model.state_dict().values():
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def init_weights(model, cfg: dict, face_model=None) -> str:
    """Load ``cfg['init']`` (a checkpoint's or weights file's tensors, or a 3DDFA-V2 peer spec such as
    ``3ddfa-v2-mb05:PATH``, whose weights fine-tune as ``mobilenet_v1_3ddfa``) into ``model``; its digest."""
    kind, colon, peer_path = str(cfg["init"]).partition(":")
    if colon and kind in PEER_KINDS:
        return _init_from_peer(model, cfg, kind, Path(peer_path), face_model)
    path = Path(cfg["init"])
    if not path.is_file():
        raise EdgefaError(f"init {path}: no such file (a run's best.pt, a .safetensors weights file "
                          f"or {'/'.join(PEER_KINDS)}:PATH)")
    if path.suffix == ".safetensors":
        from edgefa.models.pretrained import read_weights

        state, _, header = read_weights(path)
        name = header.get("model")
    else:
        ckpt = load_checkpoint(path)
        if ckpt.get("compression"):
            raise EdgefaError(f"init {path}: a pruned/QAT checkpoint; fine-tune it with the quantization commands")
        state, name = ckpt["state_dict"], ckpt["model"]["name"]
    if name != cfg["model"]["name"]:
        raise EdgefaError(f"init {path}: holds weights of '{name}', but the recipe's model is '{cfg['model']['name']}'")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise EdgefaError(f"init {path}: weights do not fit the recipe's model ({str(exc).splitlines()[0]})") from None
    return weights_digest(model)


def _init_from_peer(model, cfg: dict, kind: str, path: Path, face_model) -> str:
    widen = PEER_KINDS[kind]
    if cfg["model"]["name"] != "mobilenet_v1_3ddfa" or float(cfg["model"]["cfg"].get("widen_factor", 0.5)) != widen:
        raise EdgefaError(f"init {kind}:{path}: 3DDFA-V2 weights fit model mobilenet_v1_3ddfa with "
                          f"widen_factor={widen}, not the recipe's {cfg['model']['name']} {cfg['model']['cfg']}")
    if not path.is_file():
        raise EdgefaError(f"init {path}: no such file (the 3DDFA-V2 {kind} checkpoint)")
    peer, peer_fm = load_3ddfa_v2(path, widen_factor=widen)
    # the peer's outputs are whitened by its own parameter statistics; the student's must match
    if face_model is not None and not (np.allclose(peer_fm.param_mean, face_model.param_mean)
                                       and np.allclose(peer_fm.param_std, face_model.param_std)):
        raise EdgefaError(f"init {kind}:{path}: its parameter statistics differ from face model "
                          f"'{face_model.name}'s, so its outputs would mean other parameters")
    model.load_state_dict(peer.state_dict())
    return weights_digest(model)


def _distributed() -> tuple[int, int]:
    """(rank, world size); initialises the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def _device(cfg: dict, rank: int, world: int) -> str:
    if cfg["device"] != "auto":
        return cfg["device"]
    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', rank)) % torch.cuda.device_count()}" if world > 1 else "cuda"
    return "cpu"


def _log_progress(epoch: int, epochs: int, step: int, steps: int, loss: float, lr: float, t0: float) -> None:
    every = max(1, steps // 10)
    if (step + 1) % every and step + 1 != steps:
        return
    per_step = (time.perf_counter() - t0) / (step + 1)
    print(f"epoch {epoch + 1}/{epochs} batch {step + 1}/{steps}: loss {loss:.3f}, lr {lr:.2e}, "
          f"{per_step:.2f} s/batch, epoch ETA {per_step * (steps - step - 1) / 60:.1f} min", flush=True)


def train(cfg: dict, resume: str | None = None, progress: bool = True, command: str | None = None,
          model=None, face_model=None, epoch_hook=None) -> dict:
    """``model`` / ``face_model``: start from these instead of the recipe's (pruned or QAT models
    from ``quantization``); ``epoch_hook(model, epoch)`` runs before each epoch (QAT freezing)."""
    rank, world = _distributed()
    main_rank = rank == 0
    out = Path(cfg["output"])
    if main_rank:
        check_writable(out / "last.pt", "run")  # fail before any work
    torch.manual_seed(cfg["seed"])
    np.random.seed(cfg["seed"])
    random.seed(cfg["seed"])
    if cfg["threads"]:
        torch.set_num_threads(cfg["threads"])
    device = _device(cfg, rank, world)
    fm = face_model if face_model is not None else resolve_face_model(cfg["face_model"])
    model = (model if model is not None else create_model(cfg["model"]["name"], **cfg["model"]["cfg"])).to(device)
    own = getattr(model, "face_model", None)  # models tied to one face model's mesh (dense regressor)
    if own is not None and getattr(own, "name", fm.name) != fm.name:
        raise EdgefaError(f"model {cfg['model']['name']}: predicts points of face model '{own.name}', but the "
                          f"recipe's face_model is '{fm.name}' (set face_model: {own.name})")
    init_digest = init_weights(model, cfg, fm) if cfg["init"] and not resume else None
    if cfg["channels_last"]:  # the uint8 NHWC crops already arrive as channels-last NCHW views
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, cfg)
    state = restore_state(resume, model, optimizer, cfg) if resume else None
    teacher = None
    if cfg["teacher"]:
        from edgefa.training.distill import Teacher

        teacher = Teacher(cfg["teacher"], fm, device)
    show = progress and main_rank
    train_set, parts = build_train_set(cfg["data"]["train"], cfg["augment"], cfg["seed"], cfg["data"]["cache"],
                                       cfg["data"]["workers"], show, fm.name)
    val_set = create_dataset(cfg["data"]["val"]) if main_rank else None
    if val_set is not None and cfg["data"]["cache"]:  # evaluated every epoch: render/decode it once
        val_set = CachedDataset(val_set, cfg["data"]["workers"], show, desc="caching val")
    start_epoch, best, history = 0, float("inf"), []
    if state is not None:  # after the data sets, as before: building them must not draw from the restored rng
        _set_rng_state(state["rng"])
        start_epoch, best, history = state["epoch"], float(state["best"]), list(state["history"])
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if "cuda" in device else None)
    # an exponential moving average of the weights is what gets validated and saved as best.pt
    ema = ModelEmaV3(model, decay=cfg["ema"], use_warmup=True) if cfg["ema"] else None
    if ema is not None and state is not None:
        ema.module.load_state_dict(state["ema"])  # checked by restore_state
    eval_model = ema.module if ema is not None else model
    surgery = PCGrad(optimizer, seed=cfg["seed"]) if cfg["pcgrad"] else None
    sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True, seed=cfg["seed"],
                                 drop_last=True) if world > 1 else None
    generator = torch.Generator()
    per_rank = cfg["batch_size"] // world if world > 1 else cfg["batch_size"]
    steps_per_epoch = max(1, math.ceil(len(train_set) / world / per_rank))
    predictor = TorchPredictor(eval_model, fm, cfg["name"], device)
    # built once: persistent workers keep their decoded state between epochs; the epoch reaches them
    # through TrainSet's shared-memory counter, the order through the generator reseeded below
    workers = cfg["data"]["workers"]
    loader = WorkerLoader(train_set, batch_size=per_rank, shuffle=sampler is None, sampler=sampler,
                          generator=generator, num_workers=workers, drop_last=len(train_set) > per_rank,
                          persistent_workers=workers > 0, pin_memory="cuda" in device)
    t0 = time.perf_counter()
    for epoch in range(start_epoch, cfg["epochs"]):
        for part in parts:
            part.set_epoch(epoch)
        generator.manual_seed(cfg["seed"] * 1000 + epoch)  # the epoch's order does not depend on resuming
        if sampler is not None:
            sampler.set_epoch(epoch)
        if epoch_hook is not None:
            epoch_hook(model, epoch)
        net.train()
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg['epochs']}", unit="batch", disable=None if show else True)
        epoch_t0 = time.perf_counter()
        for step, batch in enumerate(bar):
            lr = lr_at(epoch + step / steps_per_epoch, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            images = batch["image"].to(device, non_blocking=True)
            teacher_raw = teacher(images) if teacher is not None else None
            outputs = net(to_model_input(images, model))
            aux = outputs if isinstance(outputs, dict) else None  # training-only outputs (query decoder, dense)
            pred_w = (outputs["params"] if aux is not None else outputs).float()
            terms = loss_terms(pred_w, batch, fm, cfg["loss"], teacher_raw, aux=aux)
            loss_parts = weighted(terms, cfg["loss"], pred_w)
            loss = sum(loss_parts)
            if not torch.isfinite(loss):
                raise EdgefaError(f"loss is {loss.item()} at epoch {epoch + 1}, batch {step}; "
                                  f"last good checkpoint kept in {out / 'last.pt'}")
            optimizer.zero_grad(set_to_none=True)
            if surgery is not None and len(loss_parts) > 1:
                surgery.pc_backward(loss_parts)
            else:
                loss.backward()
            terms = {k: float(v.detach()) for k, v in terms.items()}
            optimizer.step()
            if ema is not None:
                ema.update(model, step=epoch * steps_per_epoch + step)
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.2e}")
            if show and bar.disable:  # no TTY (a log file): a plain line every ~10 % of the epoch
                _log_progress(epoch, cfg["epochs"], step, steps_per_epoch, loss.item(), lr, epoch_t0)
        if world > 1:
            # DDP syncs buffers at each forward; after the last one BN statistics drift per rank
            for buf in model.buffers():
                dist.broadcast(buf, src=0)
        if main_rank:
            eval_model.eval()
            result = evaluate(predictor, val_set, batch=128, progress=False)
            metrics = validation_metrics(result, cfg["data"]["val"], "data.val")
            metric = metrics["balanced_mean"]
            history.append({"epoch": epoch + 1, "val_nme": round(metric, 4), "loss": round(loss.item(), 4),
                            "terms": {k: round(v, 4) for k, v in terms.items()},
                            "seconds": round(time.perf_counter() - t0, 1)})
            print(f"epoch {epoch + 1}: val NME {metric:.3f} % (balanced), "
                  + " ".join(f"{b} {v:.3f}" for b, v in metrics["bins"].items()), flush=True)
            extra = {"config": portable_config(cfg), "command": command, "epoch": epoch + 1, "history": history,
                     "metrics": metrics}
            if metric < best:
                best = metric
                save_checkpoint(out / "best.pt", eval_model, fm, **extra)
            if ema is not None:
                extra["ema"] = {k: v.detach().cpu() for k, v in ema.module.state_dict().items()}
            save_checkpoint(out / "last.pt", model, fm, optimizer=optimizer.state_dict(), rng=rng_state(),
                            best=best, **extra)
    summary = {"best_val_nme": best, "history": history, "output": str(out), "world_size": world}
    if init_digest:
        summary["init"] = {"path": cfg["init"], "weights_digest": init_digest}
    if world > 1:
        digests = [None] * world
        dist.all_gather_object(digests, weights_digest(model))
        summary["rank_weight_digests"] = digests
        dist.destroy_process_group()
    if main_rank:
        atomic_write_json(out / "summary.json", summary)
    return summary


def train_from_cli(config_path: str, overrides: list[str], resume: str | None = None, quiet: bool = False) -> int:
    cfg = load_config(config_path, overrides)
    # shell-quoted, so the recorded command pastes back as it ran (overrides may hold quotes and brackets)
    command = shell_command(["edgefa", "train", "--config", config_path, *overrides] + (["--resume", resume] if resume else []))
    summary = train(cfg, resume=resume, progress=not quiet, command=command)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({"best_val_nme": round(summary["best_val_nme"], 4), "output": summary["output"]}))
    return 0
