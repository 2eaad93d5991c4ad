"""Ship a trained checkpoint as pretrained weights (``python -m edgefa.training.publish runs/NAME/best.pt``).

Writes ``edgefa/weights/MODEL.safetensors`` (tensors only, fp16 weights, the face model and a JSON
header) and its model card ``MODEL.md``, with accuracy measured by loading the written file back
and running it on ``--data`` (AFLW2000-3D by default). ``--model MODEL:pretrained`` then loads it.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from edgefa.errors import EdgefaError
from edgefa.evaluate import evaluate
from edgefa.fileio import atomic_write_bytes, check_writable
from edgefa.models.checkpoint import model_from_checkpoint
from edgefa.models.pretrained import WEIGHTS_DIR, read_weights, save_weights
from edgefa.paths import fill_shared, unfill_shared
from edgefa.predictor import TorchPredictor

LICENCE = ("Research and non-commercial use only: the weights were trained on AFLW crops (research "
           "licence) with labels derived from the 3DDFA-V2 mb05 model, and they carry the 68-landmark "
           "slice of the Basel Face Model (academic use). The edgefa code is MIT.")


def _metrics(block: dict) -> dict:
    return {"balanced_nme": round(block["balanced_mean"], 3), "plain_nme": round(block["plain_mean"], 3),
            "bins": {k: round(v, 3) for k, v in block["bins"].items()}}


def publish(checkpoint: str | Path, data: str = "aflw2000-3d", folder: Path = WEIGHTS_DIR,
            notes: str = "") -> dict:
    checkpoint = Path(checkpoint)
    model, fm, state = model_from_checkpoint(checkpoint)
    if state.get("compression"):
        raise EdgefaError(f"{checkpoint}: pruned / QAT checkpoints are shipped as device files, not weights")
    name = model.registry_name
    cfg = state.get("config", {})
    header = {"model": name, "model_cfg": dict(model.registry_cfg),
              "training": {"command": state.get("command"), "epochs": state.get("epoch"),
                           "of_epochs": cfg.get("epochs"), "data": cfg.get("data", {}).get("train"),
                           "loss": cfg.get("loss"), "augment": cfg.get("augment"), "ema": cfg.get("ema"),
                           "seed": cfg.get("seed"), "git_commit": state.get("git_commit"), "init": cfg.get("init"),
                           "val": state.get("metrics", {}).get("balanced_mean", float("nan")),
                           # the whole recipe as trained, so pruning / QAT of NAME:pretrained fine-tune with it
                           "config": cfg},
              "licence": LICENCE,
              "published_with": f"python -m edgefa.training.publish {checkpoint} --data {unfill_shared(data)}"
                                + (" --notes '...' (the paragraph below)" if notes else "")}
    from edgefa.data.registry import create_dataset

    dataset = create_dataset(fill_shared(data))  # a bad --data fails before anything is written
    check_writable(folder / f"{name}.safetensors", "weights")
    path = folder / f"{name}.safetensors"
    with tempfile.TemporaryDirectory() as tmp:  # measured on the file as shipped: fp16 weights, loaded back
        draft = Path(tmp) / path.name
        save_weights(draft, model.state_dict(), fm, header)
        weights, file_fm, _ = read_weights(draft)
    model.load_state_dict(weights)
    result = evaluate(TorchPredictor(model.eval(), file_fm, name), dataset, batch=128, progress=False)
    header["eval"] = {"data": unfill_shared(data), "faces": result["faces"], "nme": _metrics(result["nme"]),
                      "pose_mae": {k: round(v, 2) for k, v in result.get("pose_mae", {}).items()},
                      "measured": time.strftime("%Y-%m-%d")}
    if "nme_reannotated" in result:
        header["eval"]["nme_reannotated"] = _metrics(result["nme_reannotated"])
    save_weights(path, model.state_dict(), file_fm, header)
    card = folder / f"{name}.md"
    atomic_write_bytes(card, model_card(header, path, notes).encode())
    return header


def model_card(header: dict, path: Path, notes: str) -> str:
    t, e = header["training"], header["eval"]
    bins = " / ".join(f"{v:.3f}" for v in e["nme"]["bins"].values())
    lines = [f"# {header['model']} (edgefa pretrained weights)", "",
             f"`{path.name}`: {path.stat().st_size / 1e6:.2f} MB, fp16 tensors (safetensors). Load it with "
             f"`edgefa eval --model {header['model']}:pretrained --data ...` or "
             f"`create_model(\"{header['model']}\", pretrained=True)`.", "",
             "## Accuracy (measured on this file)", "",
             f"{e['data']}, {e['faces']} faces: balanced NME **{e['nme']['balanced_nme']:.3f} %** "
             f"(bins [0,30] / (30,60] / (60,90]: {bins}; plain mean {e['nme']['plain_nme']:.3f})."]
    if "nme_reannotated" in e:
        lines.append(f"Against the re-annotated landmarks: {e['nme_reannotated']['balanced_nme']:.3f} %.")
    if e.get("pose_mae"):
        lines.append("Pose MAE (degrees): " + ", ".join(f"{k} {v}" for k, v in e["pose_mae"].items()) + ".")
    lines += ["", "## Training", "",
              f"- command: `{t['command']}` (the best-validation checkpoint: epoch {t['epochs']} of a "
              f"{t['of_epochs']}-epoch run; seed {t['seed']}; edgefa commit {t['git_commit']} when saved)",
              *([f"- started from: `{t['init']}` (the recipe's `init`)"] if t.get("init") else []),
              f"- data: {json.dumps(t['data'])}",
              f"- loss: {json.dumps(t['loss'])}; EMA {t['ema']}; augment {json.dumps(t['augment'])}",
              f"- validation NME (aflw-train val split, AFLW-21 points): {t['val']:.3f} %"]
    if header.get("published_with"):
        lines.append(f"- published (evaluated on the fp16 file, card written) with: `{header['published_with']}`")
    lines.append("")
    if notes:
        lines += [notes, ""]
    lines += ["## Licence", "", header["licence"], ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgefa.training.publish", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a trained edgefa checkpoint (best.pt)")
    parser.add_argument("--data", default="aflw2000-3d", help="dataset the card's accuracy is measured on")
    parser.add_argument("--folder", default=str(WEIGHTS_DIR), help="where the weights go")
    parser.add_argument("--notes", default="", help="a paragraph for the model card")
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    try:
        header = publish(args.checkpoint, args.data, Path(args.folder), args.notes)
    except EdgefaError as exc:
        if args.debug:
            raise
        print(f"python -m edgefa.training.publish: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"model": header["model"], "eval": header["eval"]["nme"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
