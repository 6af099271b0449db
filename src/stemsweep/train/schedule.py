"""The paper's learning-rate policy (pycls's): cosine decay with a floor, times a linear warm-up."""

from __future__ import annotations

import math

from stemsweep.config import ScheduleConfig


def lr_factor(cfg: ScheduleConfig, epoch: float, epochs: int) -> float:
    """The multiple of the base lr at (fractional) ``epoch`` of ``epochs``.

    With ``step: epoch`` the rate changes once per epoch, as the authors' code does; with
    ``step: iteration`` it follows the same curve every step.
    """
    t = math.floor(epoch) if cfg.step == "epoch" else epoch
    factor = 0.5 * (1.0 + math.cos(math.pi * t / epochs))
    factor = (1.0 - cfg.min_lr) * factor + cfg.min_lr
    if t < cfg.warmup_epochs:
        progress = t / cfg.warmup_epochs
        factor *= cfg.warmup_factor * (1.0 - progress) + progress
    return factor
