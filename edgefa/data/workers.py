"""DataLoader worker set-up: one native thread per worker process.

Each worker would otherwise start a BLAS / OpenMP pool as wide as the machine, so two workers on
two cores run four busy threads and render no faster than one (measured: 25 vs 51 images/s).
"""
from __future__ import annotations


def single_thread_worker(_worker_id: int) -> None:
    import cv2
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    cv2.setNumThreads(1)
