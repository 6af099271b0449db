"""Weight EMA for evaluation, as the authors' pycls does it."""

from __future__ import annotations

import copy

import torch
from torch import nn

IMAGENET_TRAIN_IMAGES = 1_281_167
PAPER_ALPHA = 1e-5  # for ImageNet-1k


def ema_alpha(alpha: float | None, batch_size: int, epochs: int, period: int, train_images: int) -> float:
    """α = min(1, alpha · batch / epochs · period), the update every ``period`` steps.

    With ``alpha`` null the paper's 1e-5 is scaled by 1.28M / train_images: α·(number of updates) is
    1e-5 · train_images, so a data set smaller than ImageNet keeps the paper's EMA horizon this way.
    """
    if alpha is None:
        alpha = PAPER_ALPHA * IMAGENET_TRAIN_IMAGES / train_images
    return min(1.0, alpha * batch_size / epochs * period)


class ModelEma:
    """The EMA model, and how much of it is still the initial model: ``initial_share`` is Π(1 − α)
    over the updates so far (1 before the first, 0 after a plain copy)."""

    def __init__(self, model: nn.Module):
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.updates = 0
        self.initial_share = 1.0

    @torch.no_grad()
    def update(self, model: nn.Module, alpha: float) -> None:
        """ema ← (1−α)·ema + α·model over the whole state (BatchNorm statistics too); α=1 copies."""
        source = model.state_dict()
        for name, value in self.module.state_dict().items():
            if value.dtype.is_floating_point:
                value.mul_(1.0 - alpha).add_(source[name].detach(), alpha=alpha)
            else:
                value.copy_(source[name])
        self.updates += 1
        self.initial_share *= 1.0 - alpha

    def state(self) -> dict:
        return {"weights": self.module.state_dict(), "updates": self.updates, "initial_share": self.initial_share}

    def load(self, state: dict) -> None:
        self.module.load_state_dict(state["weights"])
        self.updates, self.initial_share = state["updates"], state["initial_share"]
