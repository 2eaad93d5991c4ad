"""DataLoader worker set-up: one native thread per worker process, forked safely.

Each worker would otherwise start a BLAS pool as wide as the machine, so two workers on two cores
run four busy threads and render no faster than one (measured: 25 vs 51 images/s). torch's own
worker loop already sets torch to one thread. OpenMP is left alone: a worker forked from a process
whose OpenMP threads have run (a second loader after training steps) hung inside threadpoolctl's
OpenMP call, so only the BLAS libraries and OpenCV are limited here.

OpenCV is limited from the parent, not in the worker: a forked child inherits handles of OpenCV
pool threads that no longer exist, and ``cv2.setNumThreads`` there joins them; once another thread
(torch's, a BLAS server) reuses one's stack, that join never returns (a worker hung at 0 % CPU
whenever the parent had run OpenCV in parallel and imported scipy). So ``WorkerLoader`` stops the
parent's pool while the workers fork, and they inherit one OpenCV thread.
"""
from __future__ import annotations

from contextlib import contextmanager
from functools import partial

import cv2
from torch.utils.data import DataLoader


def single_thread_worker(worker_id: int, then=None) -> None:
    """Limit the worker's BLAS to one thread, then run the caller's own ``worker_init_fn``."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")
    if then is not None:
        then(worker_id)


@contextmanager
def opencv_pool_stopped():
    """OpenCV at one thread (its pool threads joined) for the block; the parent's count after it."""
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(threads)


class WorkerLoader(DataLoader):
    """torch's DataLoader whose worker processes each run one native thread (see the module doc)."""

    def __init__(self, dataset, worker_init_fn=None, **kwargs):
        super().__init__(dataset, worker_init_fn=partial(single_thread_worker, then=worker_init_fn), **kwargs)

    def __iter__(self):
        if self.num_workers == 0:
            return super().__iter__()
        with opencv_pool_stopped():  # the workers fork inside: persistent ones on the first epoch only
            return super().__iter__()
