"""One predictor interface over model backends: uint8 BGR crops in, raw 62 parameters out.

torch is imported only where a PyTorch model is involved, so ``load_predictor("face.onnx")`` runs an
exported file with the runtime install (``pip install edgefa[runtime]``: no torch)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgefa.errors import EdgefaError, unknown_name_error
from edgefa.facemodel.base import FaceModel
from edgefa.facemodel.geometry import dewhiten
from edgefa.runtime.artifact import ArtifactPredictor
from edgefa.runtime.formats import format_of_path
from edgefa.runtime.predictor import Predictor
from edgefa.specs import parse_spec

PEER_KINDS = {"3ddfa-v2-mb05": 0.5, "3ddfa-v2-mb1": 1.0}
MEDIAPIPE_KIND = "mediapipe-face"  # MediaPipe Face Mesh (468 points -> 68): edgefa.peers.mediapipe_face


def to_model_input(images, model):
    """(B, S, S, 3) uint8 BGR tensor -> normalised float NCHW at the model's input size and colour order."""
    from edgefa.models.inputs import prepare_tensor

    return prepare_tensor(images, model.input_spec())


class TorchPredictor(Predictor):
    def __init__(self, model, face_model: FaceModel, name: str, device: str = "cpu"):
        self.model = model.eval().to(device)
        self.face_model = face_model
        self.name = name
        self.device = device
        self.input_size = int(model.input_size)

    def predict(self, images: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            x = to_model_input(torch.from_numpy(np.ascontiguousarray(images)).to(self.device), self.model)
            params_w = self.model(x).float().cpu().numpy()
        return dewhiten(params_w, self.face_model)


def load_predictor(text: str, device: str = "cpu", threads: int | None = None) -> Predictor:
    """``3ddfa-v2-mb05:PATH[,bfm=DIR]``, ``mediapipe-face[:PATH][,mapping=FILE]``, an edgefa ``.pt`` checkpoint, an exported file
    (``.onnx``, ``.tflite``, ``.mlpackage``: run in its own runtime), ``MODEL_NAME:pretrained``
    (weights shipped in the package) or ``MODEL_NAME[:k=v]`` (untrained)."""
    mediapipe = parse_spec(text, {MEDIAPIPE_KIND})  # before the suffix test: its path ends in .tflite
    if mediapipe is not None:  # numpy + LiteRT: no torch
        return _mediapipe_predictor(mediapipe, text, threads)
    if format_of_path(text) is not None:  # run in its own runtime: no torch
        return ArtifactPredictor(text, threads=threads)
    from edgefa.models.checkpoint import load_3ddfa_v2, model_from_checkpoint
    from edgefa.models.registry import create_model, list_models

    spec = parse_spec(text, set(PEER_KINDS) | set(list_models()))
    if spec is not None and spec.kind in PEER_KINDS:
        if not spec.path:
            raise EdgefaError(f"--model {text}: give the checkpoint path, e.g. {spec.kind}:PATH")
        unknown = set(spec.options) - {"bfm"}
        if unknown:
            raise EdgefaError(f"--model {text}: unknown option '{sorted(unknown)[0]}' (valid: bfm)")
        model, fm = load_3ddfa_v2(spec.path, bfm=spec.options.get("bfm"), widen_factor=PEER_KINDS[spec.kind])
        return TorchPredictor(model, fm, spec.kind, device)
    if spec is not None and spec.path == "pretrained":  # weights shipped in the package
        from edgefa.models.registry import load_pretrained

        if spec.options:
            raise EdgefaError(f"--model {text}: pretrained models take no options")
        model, fm, _ = load_pretrained(spec.kind)
        return TorchPredictor(model, fm, f"{spec.kind} (pretrained)", device)
    if spec is not None:  # a registered architecture with random weights: for smoke tests and timing
        if spec.path:
            raise EdgefaError(f"--model {text}: a model name takes key=value options; "
                              "for trained weights pass the .pt checkpoint path")
        from edgefa.facemodel.synthetic import synthetic_face_model

        if "pretrained" in spec.options:  # the shipped weights come with their own face model
            raise EdgefaError(f"--model {text}: write {spec.kind}:pretrained for the shipped weights")
        model = create_model(spec.kind, **spec.options)
        return TorchPredictor(model, synthetic_face_model(), f"{spec.kind} (untrained)", device)
    path = Path(text)
    if path.suffix in (".pt", ".pth") or path.exists():
        model, fm, _ = model_from_checkpoint(path)
        return TorchPredictor(model, fm, path.stem if path.stem not in ("best", "last") else
                              f"{path.parent.name}/{path.name}", device)
    raise unknown_name_error("model", text.partition(":")[0], set(PEER_KINDS) | {MEDIAPIPE_KIND} | set(list_models()))


def _mediapipe_predictor(spec, text: str, threads: int | None) -> Predictor:
    """MediaPipe's face_landmark.tflite (default: the shared folder's copy); numpy + LiteRT, no torch."""
    from edgefa.paths import shared_root
    from edgefa.peers.mediapipe_face import MediaPipeFacePredictor

    unknown = set(spec.options) - {"mapping"}
    if unknown:
        raise EdgefaError(f"--model {text}: unknown option '{sorted(unknown)[0]}' (valid: mapping)")
    path = spec.path or shared_root() / "peers" / "mediapipe_face" / "face_landmark.tflite"
    return MediaPipeFacePredictor(path, mapping=spec.options.get("mapping"), threads=threads)
