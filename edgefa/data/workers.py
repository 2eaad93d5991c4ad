"""DataLoader worker set-up: one native thread per worker process.

Each worker would otherwise start a BLAS pool as wide as the machine, so two workers on two cores
run four busy threads and render no faster than one (measured: 25 vs 51 images/s). torch's own
worker loop already sets torch to one thread. OpenMP is left alone: a worker forked from a process
whose OpenMP threads have run (a second loader after training steps) hung inside threadpoolctl's
OpenMP call, so only the BLAS libraries and OpenCV are limited here.
"""
from __future__ import annotations


def single_thread_worker(_worker_id: int) -> None:
    import cv2
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")
    cv2.setNumThreads(1)
