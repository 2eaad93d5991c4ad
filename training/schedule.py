"""Learning-rate schedules, as a function of fractional epoch (so resuming needs no state)."""
from __future__ import annotations

import math

from edgefa.errors import EdgefaError


def lr_at(epoch: float, cfg: dict) -> float:
    """lr for a fractional epoch under ``cfg['schedule']``.

    - ``cosine``: linear warm-up from ``warmup_start`` x lr, then cosine to ``min_lr_ratio`` x lr;
    - ``step`` (the multi-task MobileViT paper): warm-up from ``warmup_start`` x lr to lr over
      ``warmup_epochs``, then lr / ``gamma`` at each milestone, cumulatively (paper: 1e-5 -> 5e-4
      over 5 epochs, /5 at 40, /25 at 50, 80 epochs).
    """
    base, sched = cfg["optimizer"]["lr"], cfg["schedule"]
    warm = sched["warmup_epochs"]
    if epoch < warm:
        start = base * sched["warmup_start"]
        return start + (base - start) * epoch / warm
    if sched["name"] == "cosine":
        progress = min((epoch - warm) / max(cfg["epochs"] - warm, 1e-9), 1.0)
        floor = base * sched["min_lr_ratio"]
        return floor + (base - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    if sched["name"] == "step":
        passed = [m for m in sched["milestones"] if epoch >= m]
        return base / (sched["gamma"] ** len(passed))
    raise EdgefaError(f"schedule.name: unknown '{sched['name']}' (valid: cosine, step)")
