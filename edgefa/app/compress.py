"""The compression stages as library calls (``edgefa prune``, ``edgefa qat`` and ``edgefa pipeline``
are thin wrappers): prune -> fine-tune (distilled from the unpruned model) -> QAT -> export.

Run folder of ``run_compression(cfg, run_dir)``::

    run_dir/pruned.pt            pruned, before fine-tuning
    run_dir/finetune/best.pt     fine-tuned (trainer layout: best.pt, last.pt, summary.json)
    run_dir/qat/best.pt          fake-quant model with learned scales
    run_dir/export/              int8 ONNX / TFLite files, each through the parity gate
    run_dir/compression.json     what each stage did and measured
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from edgefa.errors import EdgefaError
from edgefa.fileio import atomic_write_json, check_writable
from edgefa.models.pretrained import pretrained_name


def _check_shipped(name: str, flag: str = "--checkpoint") -> None:
    from edgefa.errors import closest
    from edgefa.models.pretrained import list_pretrained

    shipped = list_pretrained()
    if name not in shipped:
        hint = closest(name, shipped)
        raise EdgefaError(f"{flag} {name}:pretrained: no shipped weights of that name "
                          f"({f'did you mean {hint}:pretrained? ' if hint else ''}shipped: {', '.join(shipped) or 'none'})")


def _pretrained_state(header: dict) -> dict:
    """The parts of a checkpoint compression reads, from shipped weights' header: their metrics and
    the config they were trained with, so a fine-tune uses that recipe's data and loss, as it does
    for a run's best.pt. The header records the config; weights published before it did are
    rebuilt from the recorded command (the shipped recipe plus its ``key=value`` overrides)."""
    import shlex

    from edgefa.training.config import CONFIG_DIR, load_config

    recorded = header.get("training", {}).get("config")
    if isinstance(recorded, dict) and recorded:
        return {"metrics": header.get("eval", {}), "config": recorded}
    args = shlex.split(str(header.get("training", {}).get("command", "")))
    recipe = CONFIG_DIR / Path(args[args.index("--config") + 1]).name if "--config" in args[:-1] else None
    flag_values = {args[i + 1] for i, a in enumerate(args[:-1]) if a.startswith("-")}
    overrides = [a for a in args if "=" in a and not a.startswith("-") and a not in flag_values]
    state = {"metrics": header.get("eval", {})}
    if recipe is not None and recipe.is_file():
        state["config"] = load_config(recipe, overrides)
    return state


def _load(path: str | Path):
    """(model, face model, checkpoint state) of a run's checkpoint or of ``NAME:pretrained``."""
    from edgefa.models.checkpoint import model_from_checkpoint

    name = pretrained_name(path)
    if name:
        from edgefa.models.registry import load_pretrained

        _check_shipped(name)
        model, face_model, header = load_pretrained(name)  # one read of the weights file
        return model, face_model, _pretrained_state(header)
    return model_from_checkpoint(path)


def _taylor_loss(cfg: dict, face_model, n: int):
    """loss(model) on ``n`` labelled crops of the recipe's first training set (no distillation:
    against itself the unpruned model's distillation gradient is zero)."""
    import numpy as np

    from edgefa.data.registry import create_dataset
    from edgefa.predictor import to_model_input
    from edgefa.training.data import TrainSet
    from edgefa.training.objectives import label_masks, loss_terms, weighted

    spec = cfg["data"]["train"]
    spec = spec[0] if isinstance(spec, list) else spec
    dataset = create_dataset(spec)
    own = getattr(getattr(dataset, "face_model", None), "name", face_model.name)
    data = TrainSet(dataset, None, cfg["seed"], keep_params=own == face_model.name)
    idx = np.linspace(0, len(data) - 1, min(n, len(data))).round().astype(int)
    batch = {k: torch.stack([data[int(i)][k] for i in idx]) for k in data[0]}
    # loss_terms returns each weighted term even when no sample has its label (as 0): ask the labels
    labelled = [k for k, have in label_masks(batch).items() if cfg["loss"].get(k) and bool(have.any())]
    if not labelled:
        raise EdgefaError(f"taylor pruning: data.train {spec} has no labels the loss weights use")

    def loss(model):
        model.train()  # BN in batch mode, like the trainer; torch-pruning copies are discarded after
        pred_w = model(to_model_input(batch["image"], model)).float()
        terms = loss_terms(pred_w, batch, face_model, cfg["loss"])
        model.eval()
        return sum(weighted(terms, cfg["loss"], pred_w))

    return loss


def _resume_pruned(run_dir: Path, cfg: dict, resume: str):
    """The pruned model a killed fine-tune continues from: ``run_dir/pruned.pt``, checked to be the
    pruning this call asks for (another ratio, method or allocation would mix two studies)."""
    pruned_path = run_dir / "pruned.pt"
    if not pruned_path.is_file():
        raise EdgefaError(f"--resume {resume}: {pruned_path} is missing (the pruned model the fine-tune started from)")
    model, _, state = _load(pruned_path)
    record = state.get("compression", {}).get("pruning", {})
    p = cfg["prune"]
    allocation = record.get("allocation", "uniform")  # records written before the key existed were uniform
    if record.get("requested_macs_ratio") != float(p["ratio"]) or record.get("method") != p["method"] \
            or allocation != p["allocation"]:
        raise EdgefaError(f"--resume {resume}: {pruned_path} was pruned with ratio {record.get('requested_macs_ratio')}, "
                          f"method {record.get('method')}, allocation {allocation}; this call asks ratio {p['ratio']}, "
                          f"method {p['method']}, allocation {p['allocation']}")
    return model


def _open_datasets(data: dict) -> None:
    """Open the fine-tune's datasets before the cut is saved: a missing data folder or labels file
    then fails in one line with nothing written (the datasets read their files lazily)."""
    from edgefa.data.registry import create_dataset

    train_specs = data["train"]
    for spec in [*([train_specs] if isinstance(train_specs, str) else train_specs), data["val"]]:
        create_dataset(spec)


def prune_checkpoint(source: str | Path, cfg: dict, run_dir: str | Path, progress: bool = True,
                     resume: str | None = None) -> Path:
    """Prune ``source`` by ``cfg['prune']`` (MACs ratio), save ``pruned.pt``, then fine-tune for
    ``cfg['finetune']['epochs']`` distilled from ``source``. Returns the checkpoint to use next.
    ``resume``: the fine-tune's last.pt; the saved ``pruned.pt`` is reused, not pruned again."""
    from edgefa.models.checkpoint import save_checkpoint
    from edgefa.quantization.config import stage_config
    from edgefa.quantization.prune import check_allocation, check_method, check_ratio, check_round_to, prune_model
    from edgefa.training.trainer import train

    run_dir = Path(run_dir)
    p = cfg["prune"]
    check_ratio(p["ratio"]), check_method(p["method"]), check_round_to(p["round_to"]), check_allocation(p["allocation"])
    if resume:
        if int(cfg["finetune"]["epochs"]) <= 0:
            raise EdgefaError(f"--resume {resume}: there is no fine-tune to continue (--finetune-epochs is 0)")
        model = _resume_pruned(run_dir, cfg, resume)
        _, face_model, _ = _load(source)
        ft = stage_config(cfg, "finetune", run_dir / "finetune", teacher=str(source))
        train(ft, resume=resume, progress=progress, command=f"finetune after pruning {source}", model=model,
              face_model=face_model)
        return run_dir / "finetune" / "best.pt"
    check_writable(run_dir / "pruned.pt", "run")
    model, face_model, state = _load(source)
    ft = stage_config(cfg, "finetune", run_dir / "finetune", teacher=str(source))
    if int(cfg["finetune"]["epochs"]) > 0:
        _open_datasets(ft["data"])
    if "qat" in state.get("compression", {}):
        raise EdgefaError(f"{source}: a QAT checkpoint; prune the float model, then run QAT")
    taylor = _taylor_loss(cfg, face_model, int(p["taylor_crops"])) if p["method"] == "taylor" else None
    t0 = time.perf_counter()
    result = prune_model(model, p["ratio"], p["method"], taylor_loss=taylor, tolerance=float(p["tolerance"]),
                         round_to=p["round_to"], allocation=p["allocation"])
    record = result.record
    record["source"] = str(source)
    record["seconds"] = round(time.perf_counter() - t0, 1)
    print(f"pruned {model.registry_name}: MACs {record['macs_before'] / 1e6:.1f} M -> {record['macs_after'] / 1e6:.1f} M "
          f"(-{100 * record['macs_ratio']:.1f} %, asked -{100 * p['ratio']:.0f} %), params "
          f"{record['params_before'] / 1e6:.2f} M -> {record['params_after'] / 1e6:.2f} M, channel ratio "
          f"{record['channel_ratio']:.3f} ({record['search_evals']} tries, {record['seconds']:.0f} s)", flush=True)
    pruned_path = run_dir / "pruned.pt"
    extra = {k: state[k] for k in ("config", "metrics") if k in state}  # metrics: of the unpruned source
    save_checkpoint(pruned_path, result.model, face_model, command=f"prune {source}", **extra)
    if int(cfg["finetune"]["epochs"]) <= 0:
        return pruned_path
    train(ft, progress=progress, command=f"finetune after pruning {source}", model=result.model,
          face_model=face_model)
    return run_dir / "finetune" / "best.pt"


def qat_checkpoint(source: str | Path, cfg: dict, output: str | Path, progress: bool = True,
                   resume: str | None = None) -> Path:
    """QAT of ``source`` (float, possibly pruned) for ``cfg['qat']['epochs']``, distilled from it;
    best.pt / last.pt in ``output`` like training's. Returns ``output/best.pt``."""
    from edgefa.quantization.config import stage_config
    from edgefa.quantization.float_parts import parse_float_parts
    from edgefa.quantization.qat import prepare_qat, stage_hook
    from edgefa.training.trainer import train

    q = cfg["qat"]
    for key in ("epochs", "freeze_bn_after", "freeze_observers_after"):
        value = q[key]
        if (value is None and key != "epochs") or (isinstance(value, int) and not isinstance(value, bool)):
            continue
        raise EdgefaError(f"qat.{key}: expected a whole number of epochs" + (" or null" if key != "epochs" else "")
                          + f", not {value!r}")
    float_parts = parse_float_parts(q["float_parts"], what="qat.float_parts")
    if not isinstance(q["xnnpack_int8"], bool):
        raise EdgefaError(f"qat.xnnpack_int8: expected true or false, not {q['xnnpack_int8']!r}")
    if int(q["epochs"]) < 1:
        raise EdgefaError(f"qat.epochs: {q['epochs']}: QAT needs at least one epoch")
    if q["freeze_observers_after"] is not None and int(q["freeze_observers_after"]) < 1:
        raise EdgefaError(f"qat.freeze_observers_after: {q['freeze_observers_after']}: observers must see at least "
                          "one epoch of data before their ranges freeze (>= 1, or null for never)")
    model, face_model, state = _load(source)
    if "qat" in state.get("compression", {}):
        raise EdgefaError(f"{source}: already a QAT checkpoint; start QAT from the float model")
    qat_model = prepare_qat(model, {"source": str(source), "epochs": int(q["epochs"]),
                                    "freeze_bn_after": q["freeze_bn_after"],
                                    "freeze_observers_after": q["freeze_observers_after"],
                                    "xnnpack_int8": q["xnnpack_int8"], "float_parts": list(float_parts)})
    stage = stage_config(cfg, "qat", Path(output), teacher=str(source))
    train(stage, resume=resume, progress=progress, command=f"qat {source}", model=qat_model,
          face_model=face_model, epoch_hook=stage_hook(q["freeze_bn_after"], q["freeze_observers_after"]))
    return Path(output) / "best.pt"


def export_checkpoint(checkpoint: str | Path, cfg: dict, out_dir: str | Path) -> list[dict]:
    """int8 files of a QAT checkpoint (its learned scales; no calibration) or a float one (PTQ)."""
    from dataclasses import asdict

    from edgefa.converters.export import run_export

    e = cfg["export"]
    rows, _ = run_export(str(checkpoint), e["formats"], "int8", out_dir, calib_data=e["calib_data"],
                         calib_n=int(e["calib_n"]), parity_data=e["parity_data"], parity_n=int(e["parity_n"]),
                         postprocess=bool(e["postprocess"]), name=cfg["name"])
    return [asdict(r) for r in rows]


def run_compression(cfg: dict, run_dir: str | Path, progress: bool = True) -> Path:
    """prune -> fine-tune -> QAT -> int8 export, per ``cfg`` (``edgefa.quantization.config``); the
    QAT checkpoint's path is returned, the exported files are in ``run_dir/export``.
    ``prune.ratio: 0`` or ``null`` skips pruning (QAT of the source as is)."""
    run_dir = Path(run_dir)
    check_writable(run_dir / "compression.json", "run")
    if not cfg.get("source"):
        raise EdgefaError("source: the recipe needs a source checkpoint (source: runs/x/best.pt or --checkpoint)")
    summary = {"source": cfg["source"], "stages": {}}
    current = Path(cfg["source"])
    if cfg["prune"]["ratio"]:
        current = prune_checkpoint(current, cfg, run_dir, progress)
        summary["stages"]["prune"] = str(current)
    current = qat_checkpoint(current, cfg, run_dir / "qat", progress)
    summary["stages"]["qat"] = str(current)
    summary["export"] = export_checkpoint(current, cfg, run_dir / "export")
    failed = [f"{r['format']} {r['precision']}: {r['reason']}" for r in summary["export"] if r["status"] == "failed"]
    summary["config"] = cfg
    atomic_write_json(run_dir / "compression.json", summary)
    if failed:
        raise EdgefaError(f"{run_dir}: QAT model saved, but export failed ({'; '.join(failed)})")
    return current


def source_state(checkpoint: str | Path, flag: str = "--checkpoint") -> dict:
    """What compression reads of a source (``runs/x/best.pt`` or ``NAME:pretrained``): metrics and
    training config; one-line errors for a missing file or an unknown shipped name (``flag``: the
    argument that named it)."""
    from edgefa.models.checkpoint import load_checkpoint

    name = pretrained_name(checkpoint)
    if name:
        from edgefa.models.pretrained import pretrained_path, read_weights

        _check_shipped(name, flag)
        return _pretrained_state(read_weights(pretrained_path(name))[2])
    return load_checkpoint(checkpoint)  # fails early and in one line: missing / not a checkpoint


def prune_from_cli(checkpoint: str, ratio: float, method: str, finetune_epochs: int, output: str,
                   config: str | None = None, overrides: list[str] = (), quiet: bool = False,
                   round_to: int | None = None, resume: str | None = None) -> int:
    from edgefa.quantization.config import load_compression_config
    from edgefa.quantization.prune import check_method, check_ratio, check_round_to

    check_ratio(ratio), check_method(method)
    if round_to is not None:
        try:
            check_round_to(round_to)
        except EdgefaError as exc:
            raise EdgefaError(str(exc).replace("prune.round_to", "--round-to")) from None
        overrides = [*overrides, f"prune.round_to={round_to}"]
    if finetune_epochs < 0:
        raise EdgefaError(f"--finetune-epochs {finetune_epochs}: must be >= 0")
    state = source_state(checkpoint)
    cfg = load_compression_config(config, [*overrides, f"prune.ratio={ratio}", f"prune.method={method}",
                                           f"finetune.epochs={finetune_epochs}"],
                                  source=checkpoint, source_config=state.get("config"))
    path = prune_checkpoint(checkpoint, cfg, output, progress=not quiet, resume=resume)
    print(f"wrote {path}")
    return 0


def qat_from_cli(checkpoint: str, config: str, overrides: list[str] = (), output: str | None = None,
                 resume: str | None = None, quiet: bool = False) -> int:
    from edgefa.quantization.config import load_compression_config

    state = source_state(checkpoint)
    cfg = load_compression_config(config, overrides, source=checkpoint, source_config=state.get("config"))
    path = qat_checkpoint(checkpoint, cfg, output or cfg["output"], progress=not quiet, resume=resume)
    print(f"wrote {path} (export: edgefa export --model {path} --formats onnx,tflite --precision int8 -o DIR)")
    return 0


def compress(config: str | Path, overrides: list[str] = (), source: str | None = None,
             run_dir: str | Path | None = None, progress: bool = True) -> Path:
    """``run_compression`` from a recipe file: the source checkpoint (``source`` or the recipe's
    ``source:``) supplies the unset training keys; ``run_dir`` defaults to the recipe's output."""
    from edgefa.quantization.config import load_compression_config

    cfg = load_compression_config(config, overrides, source=source)
    if not cfg.get("source"):
        raise EdgefaError(f"{config}: no source checkpoint (set source: or pass one)")
    state = source_state(cfg["source"])
    cfg = load_compression_config(config, overrides, source=cfg["source"], source_config=state.get("config"))
    return run_compression(cfg, run_dir or cfg["output"], progress)


def run_stage(stage: str, checkpoint: str | Path, stage_cfg: dict, out_dir: str | Path, seed: int = 0,
              progress: bool = True) -> Path:
    """One compression stage of ``edgefa pipeline`` on ``checkpoint``; returns the checkpoint to use next.

    - ``prune``: ``{ratio, method, finetune_epochs}`` -> ``out_dir/pruned.pt`` (+ ``finetune/best.pt``);
    - ``qat``: ``{config, overrides}``, a QAT recipe (default ``training/configs/qat.yaml``) -> ``out_dir/best.pt``.
    Unset training keys come from the checkpoint's own config, as for ``edgefa prune`` / ``edgefa qat``."""
    from edgefa.quantization.config import load_compression_config

    state = source_state(checkpoint)
    if stage == "prune":
        overrides = [f"seed={seed}", f"prune.ratio={stage_cfg['ratio']}", f"prune.method={stage_cfg['method']}",
                     f"finetune.epochs={stage_cfg['finetune_epochs']}"]
        cfg = load_compression_config(None, overrides, source=str(checkpoint), source_config=state.get("config"))
        return prune_checkpoint(checkpoint, cfg, out_dir, progress)
    if stage == "qat":
        from edgefa.training.config import CONFIG_DIR

        recipe = stage_cfg.get("config") or CONFIG_DIR / "qat.yaml"
        cfg = load_compression_config(recipe, [f"seed={seed}", *stage_cfg.get("overrides", [])], source=str(checkpoint),
                                      source_config=state.get("config"))
        return qat_checkpoint(checkpoint, cfg, out_dir, progress)
    raise EdgefaError(f"unknown compression stage '{stage}' (prune, qat)")
