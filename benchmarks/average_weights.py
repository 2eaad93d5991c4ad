"""Average the weights of checkpoints of one architecture (a uniform "model soup", Wortsman et al. 2022).

    python benchmarks/average_weights.py A/best.pt B/best.pt [C/best.pt ...] -o OUT/best.pt

Every floating-point tensor of the state dicts is averaged (BatchNorm running statistics included);
integer tensors (BN's batch counters) and everything else (settings, config, compression record) come
from the last checkpoint. The result is a checkpoint like the inputs, so `edgefa eval` / `export` read
it. Averaging helps only when the runs sit in one basin of the loss (e.g. fine-tunes of one start);
evaluate the result on the validation split before using it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edgefa.errors import EdgefaError
from edgefa.fileio import check_writable


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
    return {**base, "state_dict": averaged, "averaged_from": [str(p) for p in paths]}


def main(argv=None) -> int:
    from edgefa.models.checkpoint import save_state

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", help="edgefa checkpoints of one architecture")
    parser.add_argument("-o", "--output", required=True, help="the averaged checkpoint (.pt)")
    parser.add_argument("--debug", action="store_true", help="full tracebacks")
    args = parser.parse_args(argv)
    try:
        out = check_writable(Path(args.output), "--output")
        save_state(out, average_checkpoints(args.checkpoints))
    except EdgefaError as exc:
        if args.debug:
            raise
        print(f"average_weights: error: {exc}", file=sys.stderr)
        return 2
    print(f"{out}: mean of {len(args.checkpoints)} checkpoints")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
