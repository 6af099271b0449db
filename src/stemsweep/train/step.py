"""One training step, as every run takes it and as the benchmarks time it."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stemsweep.train.ema import ModelEma


def autocast(device: torch.device, amp: bool):
    """bf16 autocast on CUDA when `amp` is on; full precision anywhere else."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda")


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor, targets: torch.Tensor,
               *, amp: bool = True, label_smoothing: float = 0.0, forward: nn.Module | None = None,
               ema: ModelEma | None = None, ema_alpha: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward, cross-entropy on fp32 logits, backward, the optimizer's step, then the EMA's update
    when `ema_alpha` is given (the loop says when one is due). Returns (loss, logits), not synced.

    `forward` is what computes the logits when it is not `model` itself (DistributedDataParallel,
    torch.compile); the EMA follows `model`'s weights."""
    with autocast(images.device, amp):
        logits = (model if forward is None else forward)(images)
        loss = F.cross_entropy(logits.float(), targets, label_smoothing=label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if ema is not None and ema_alpha is not None:
        ema.update(model, ema_alpha)
    return loss, logits
