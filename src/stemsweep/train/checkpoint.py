"""The latest checkpoint of a run, saved atomically so a kill at any moment leaves the previous one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from stemsweep.record.files import atomic_write


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    atomic_write(path, lambda f: torch.save(state, f), binary=True)


def load_checkpoint(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=False)


def load_weights_for_finetuning(model: torch.nn.Module, source: dict[str, Any]) -> list[str]:
    """Load another run's model weights; a head whose shape differs (another class count) keeps its
    fresh initialisation. Returns the names of the tensors that were not loaded."""
    own = model.state_dict()
    weights = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(weights, strict=False)
    return sorted(set(own) - set(weights))
