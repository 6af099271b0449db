"""Every seed a run draws from, each a function of where it is used, not of what ran before.

Each epoch's batch order is a permutation seeded by (run seed, epoch); every training image draws
its augmentation from torch's generator seeded by (run seed, epoch, image index), and every batch's
mixup/CutMix by (run seed, epoch, step, process). A run stopped after any step and resumed therefore
draws exactly what an uninterrupted run draws, whatever the number of DataLoader workers (whose
generator states no checkpoint could capture), their prefetching, or the number of processes: the
checkpoint's (epoch, step) is all the random state there is.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset

_MASK64 = (1 << 64) - 1
MIXER_STREAM = 1  # the batch-level draws, apart from the per-image ones


def _splitmix64(z: int) -> int:
    z = (z + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def batch_order_seed(seed: int, epoch: int) -> int:
    """Seeds an epoch's batch order (a permutation of the training set). Older than `mixed_seed` and
    kept as it is: another formula would change every run's batch order."""
    return seed * 1_000_003 + epoch


def mixed_seed(*parts: int) -> int:
    """A well-spread 32-bit seed from integers (torch's CPU generator keeps 32 bits of a seed)."""
    z = 0
    for part in parts:
        z = _splitmix64(z ^ (part & _MASK64))
    return z & 0xFFFFFFFF


def image_seed(seed: int, epoch: int, index: int) -> int:
    """Seeds one training image's augmentation (crop, flip, AutoAugment) in an epoch."""
    return mixed_seed(seed, epoch, index)


def mixer_seed(seed: int, epoch: int, step: int, rank: int) -> int:
    """Seeds one batch's mixup/CutMix draw, per process (each mixes its own slice of the batch)."""
    return mixed_seed(seed, epoch, step, rank, MIXER_STREAM)


def seed_torch(seed: int) -> None:
    """Seed the CPU generator that torchvision's transforms draw from (only that one: seeding CUDA's
    generators per image would cost a call into every device)."""
    torch.default_generator.manual_seed(seed)


class SeededImages(Dataset):
    """A training set whose items are asked for as (index, seed): the transform draws from the seed."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        seed_torch(seed)
        return self.dataset[index]
