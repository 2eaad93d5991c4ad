"""Training data: any edgefa dataset(s), labels moved to crop pixels, cached, augmented per epoch."""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset
from tqdm import tqdm

from edgefa.data.base import SAMPLE_KEYS, original_to_crop
from edgefa.data.registry import create_dataset
from edgefa.data.workers import WorkerLoader
from edgefa.training.augment import AugmentConfig, augment_sample


class CachedDataset(Dataset):
    """Every sample of ``dataset`` decoded/rendered once and held in memory as stacked arrays."""

    def __init__(self, dataset, workers: int = 0, progress: bool = True, desc: str = "caching"):
        loader = WorkerLoader(dataset, batch_size=256, num_workers=workers)
        parts = {k: [] for k in SAMPLE_KEYS}
        for batch in tqdm(loader, desc=desc, unit="batch", disable=None if progress else True, leave=False):
            for key in SAMPLE_KEYS:
                parts[key].append(batch[key].numpy())
        self.arrays = {k: np.concatenate(v) for k, v in parts.items()}
        self.size = dataset.size
        self.names = list(getattr(dataset, "names", []))
        self.alt_labels = dict(getattr(dataset, "alt_labels", {}))
        self.face_model = getattr(dataset, "face_model", None)

    def __len__(self) -> int:
        return len(self.arrays["index"])

    def __getitem__(self, i: int) -> dict:
        return {k: v[i] for k, v in self.arrays.items()}


def crop_pixel_labels(arrays: dict, size: int, keep_params: bool = True) -> dict:
    """Stacked samples (N, ...) with their point labels moved from the original image to crop pixels;
    without ``keep_params`` (parameters of another face model mean nothing to this one) NaN params."""
    out = dict(arrays)
    if not keep_params:
        for key in ("params", "mirror_params", "mirror_pts68"):
            out[key] = np.full_like(arrays[key], np.nan)
    box = np.asarray(arrays["roi_box"], dtype=np.float64)
    for key in ("pts68", "pts21"):
        out[key] = original_to_crop(arrays[key], box, size).astype(np.float32)
    return out


class TrainSet(Dataset):
    """Labels in crop pixels (pts68, pts21), then label-exact augmentation seeded by (seed, epoch, index)."""

    def __init__(self, dataset, augment: AugmentConfig | None, seed: int, keep_params: bool = True):
        self.dataset, self.augment, self.seed = dataset, augment, seed
        # in shared memory: persistent loader workers (forked once) see each new epoch
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self.keep_params = keep_params
        self.size = dataset.size

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(epoch)

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        s = crop_pixel_labels({k: np.asarray(v)[None] for k, v in self.dataset[i].items()}, self.size,
                              self.keep_params)
        s = {k: v[0] for k, v in s.items()}
        if self.augment is not None:
            rng = np.random.default_rng([self.seed, self.epoch, i])
            s = augment_sample(s, self.size, self.augment, rng)
        return {k: torch.as_tensor(np.asarray(s[k])) for k in ("image", "pts68", "pts21", "pose", "params")}


def params_belong(dataset, face_model_name: str) -> bool:
    """Whether ``dataset``'s parameter labels are parameters of ``face_model_name`` (synthetic faces
    carry their face model; a refined-labels file names the one it was fitted in)."""
    own = getattr(getattr(dataset, "face_model", None), "name", None) or getattr(dataset, "labels_face_model", None)
    return own is None or own == face_model_name


def build_train_set(specs, augment: dict | None, seed: int, cache: bool, workers: int,
                    progress: bool, face_model_name: str = "synthetic") -> tuple[Dataset, list]:
    """One TrainSet per ``--data`` spec (a string or a list of them), concatenated.

    A dataset whose parameter labels belong to another face model (synthetic faces when training a
    bfm68 student) keeps its landmarks and pose but not its parameters.
    """
    specs = [specs] if isinstance(specs, str) else list(specs)
    aug = AugmentConfig(**augment) if augment else None
    parts = []
    for spec in specs:
        ds = create_dataset(spec)
        keep = params_belong(ds, face_model_name)
        if cache:
            ds = CachedDataset(ds, workers, progress, desc=f"caching {spec.split(':')[0]}")
        parts.append(TrainSet(ds, aug, seed, keep_params=keep))
    sizes = {p.size for p in parts}
    if len(sizes) != 1:
        raise ValueError(f"training datasets have different crop sizes: {sorted(sizes)}")
    return (parts[0] if len(parts) == 1 else ConcatDataset(parts)), parts
