"""Loader workers start one native thread each and never hang on the parent's OpenCV pool."""
import os

import cv2
import numpy as np
import pytest
import torch

from edgefa.data.workers import WorkerLoader


class OpenCVThreads(torch.utils.data.Dataset):
    """Each sample blurs an image and reports the worker's OpenCV thread count."""

    def __len__(self):
        return 4

    def __getitem__(self, index):
        cv2.GaussianBlur(np.ones((256, 256), np.float32), (5, 5), 1)
        return cv2.getNumThreads()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork start method only")
def test_workers_fork_after_the_parent_ran_opencv_and_scipy_in_parallel():
    # the hang this guards against: the parent's OpenCV pool has run and scipy's BLAS is loaded;
    # a forked worker that called cv2.setNumThreads joined a stale pool thread forever
    import scipy.linalg

    scipy.linalg.svd(np.random.default_rng(0).random((64, 64)))
    cv2.setNumThreads(2)
    big = np.ones((1500, 1500), np.float32)
    cv2.GaussianBlur(big, (15, 15), 3)
    cv2.resize(big, (2500, 2500))
    loader = WorkerLoader(OpenCVThreads(), batch_size=2, num_workers=2, timeout=60, persistent_workers=True)
    for _ in range(2):  # persistent workers: forked on the first epoch, reused on the second
        assert torch.cat(list(loader)).tolist() == [1, 1, 1, 1]
    assert cv2.getNumThreads() == 2  # the parent's own count comes back


class WorkerSeed(torch.utils.data.Dataset):
    """Each sample reports the value its worker's init function stored."""

    def __len__(self):
        return 4

    def __getitem__(self, index):
        return WORKER_STATE.get("seeded", -1)


WORKER_STATE: dict = {}


def _store_worker_id(worker_id):
    WORKER_STATE["seeded"] = 100 + worker_id


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork start method only")
def test_a_callers_worker_init_fn_runs_in_each_worker():
    loader = WorkerLoader(WorkerSeed(), batch_size=1, num_workers=2, timeout=60, worker_init_fn=_store_worker_id)
    assert sorted(torch.cat(list(loader)).tolist()) == [100, 100, 101, 101]
