"""Online knowledge distillation: a teacher edgefa can load labels each augmented batch."""
from __future__ import annotations

import numpy as np
import torch

from edgefa.errors import EdgefaError
from edgefa.facemodel.base import FaceModel
from edgefa.predictor import load_predictor, to_model_input


class Teacher:
    """Frozen predictor run on the student's (augmented) uint8 crops; gives raw 62 params."""

    def __init__(self, spec: str, face_model: FaceModel, device: str = "cpu"):
        self.predictor = load_predictor(spec, device=device)
        self.model = self.predictor.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        theirs = self.predictor.face_model
        # the teacher's parameters only mean something in the student's face model if they share it
        same = theirs.mean.shape == face_model.mean.shape and np.allclose(theirs.mean, face_model.mean) \
            and np.allclose(theirs.shape_basis, face_model.shape_basis)
        if not same:
            raise EdgefaError(f"teacher {spec}: its face model '{theirs.name}' differs from the student's "
                              f"'{face_model.name}'; set face_model to the teacher's (e.g. bfm68)")
        # on the teacher's device once: a copy per batch would make every step wait for the GPU
        self.param_mean = torch.as_tensor(theirs.param_mean, device=device)
        self.param_std = torch.as_tensor(theirs.param_std, device=device)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """(B, S, S, 3) uint8 BGR on the teacher's device -> raw params (B, 62) float32, same device."""
        out = self.model(to_model_input(images, self.model)).float()
        return out * self.param_std + self.param_mean
