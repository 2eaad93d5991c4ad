"""Average the weights of checkpoints of one architecture (a uniform "model soup", Wortsman et al. 2022).

    python benchmarks/average_weights.py A/best.pt B/best.pt [C/best.pt ...] -o OUT/best.pt

Every floating-point tensor of the state dicts is averaged (BatchNorm running statistics included);
integer tensors (BN's batch counters) and everything else (settings, config, compression record) come
from the last checkpoint, except its training-time record: the average has no epoch or history, and
its ``metrics`` are its own score on the validation split (``--val-data``, default the last
checkpoint's ``data.val``), which `edgefa export` writes into the files as ``edgefa.val``. The result
is a checkpoint like the inputs, so `edgefa eval` / `export` read it. Averaging helps only when the
runs sit in one basin of the loss (e.g. a fine-tune and its warm restart); compare the printed
validation NME with the inputs' before using it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edgefa.errors import EdgefaError
from edgefa.fileio import check_writable
from edgefa.paths import fill_shared


def average_checkpoints(paths: list[str | Path]) -> dict:
    """The last checkpoint's state with every floating-point tensor the mean over ``paths``."""
    from edgefa.models.checkpoint import load_checkpoint

    if len(paths) < 2:
        raise EdgefaError("average_weights: give at least two checkpoints")
    states = [load_checkpoint(p) for p in paths]
    base = states[-1]
    shapes = {k: tuple(v.shape) for k, v in base["state_dict"].items()}
    for path, state in zip(paths, states):
        theirs = {k: tuple(v.shape) for k, v in state["state_dict"].items()}
        if state["model"] != base["model"] or theirs != shapes:
            raise EdgefaError(f"{path}: not the same architecture as {paths[-1]} (model or tensor shapes differ)")
    averaged = {}
    for key, value in base["state_dict"].items():
        if value.is_floating_point():
            averaged[key] = sum(s["state_dict"][key].double() for s in states).div(len(states)).to(value.dtype)
        else:
            averaged[key] = value
    record = {k: v for k, v in base.items() if k not in ("metrics", "history")}
    return {**record, "state_dict": averaged, "epoch": None, "averaged_from": [str(p) for p in paths]}


def validate(state: dict, data: str) -> dict:
    """The averaged model's validation block (balanced NME, bins), as training stores it."""
    from edgefa.data.registry import create_dataset
    from edgefa.evaluate import evaluate, validation_metrics
    from edgefa.models.checkpoint import model_from_state
    from edgefa.predictor import TorchPredictor

    model, face_model = model_from_state(state, "the average")
    predictor = TorchPredictor(model, face_model, state["model"]["name"])
    return validation_metrics(evaluate(predictor, create_dataset(data), progress=False), data, "--val-data")


def main(argv=None) -> int:
    from edgefa.models.checkpoint import save_state

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", help="edgefa checkpoints of one architecture")
    parser.add_argument("-o", "--output", required=True, help="the averaged checkpoint (.pt)")
    parser.add_argument("--val-data", help="validation data spec (default: the last checkpoint's data.val)")
    parser.add_argument("--debug", action="store_true", help="full tracebacks")
    args = parser.parse_args(argv)
    try:
        out = check_writable(Path(args.output), "--output")
        state = average_checkpoints(args.checkpoints)
        val = args.val_data or fill_shared((state.get("config") or {}).get("data", {}).get("val"))
        if val:
            state["metrics"] = validate(state, val)
            print(f"validation NME of the average: {state['metrics']['balanced_mean']:.3f} % (balanced) on {val}")
        save_state(out, state)
    except EdgefaError as exc:
        if args.debug:
            raise
        print(f"average_weights: error: {exc}", file=sys.stderr)
        return 2
    print(f"{out}: mean of {len(args.checkpoints)} checkpoints")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
