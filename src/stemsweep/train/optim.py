"""AdamW or SGD over two parameter groups: weight decay on weights, none on biases and norm parameters."""

from __future__ import annotations

import torch
from torch import nn

from stemsweep.config import OptimizerConfig

REFERENCE_BATCH = 2048  # lr values are per 2048 images and scale linearly with the batch (the paper)


def scaled_lr(lr: float, batch_size: int) -> float:
    return lr * batch_size / REFERENCE_BATCH


def param_groups(model: nn.Module, wd: float) -> list[dict]:
    """Biases and norm gains/biases are the 1-d parameters: no weight decay. The class token and the
    position embedding are not 1-d and do get weight decay, as in the authors' configs."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(cfg: OptimizerConfig, model: nn.Module, batch_size: int) -> torch.optim.Optimizer:
    """cfg.lr / cfg.wd must be resolved (not null). The returned optimizer's lr is the base rate for
    this batch size; the schedule multiplies it each step."""
    lr = scaled_lr(cfg.lr, batch_size)
    groups = param_groups(model, cfg.wd)
    # PyTorch's fused kernels update every parameter in one pass (its default, foreach, takes several);
    # the same update. They exist for CPU and CUDA tensors: the AdamW step of ViT_P-XS went from ~4 to
    # ~1 ms (docs/benchmarks.md).
    fused = all(p.device.type in ("cpu", "cuda") for p in model.parameters()) or None
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(cfg.betas), fused=fused)
    return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov, fused=fused)
