"""Random images with learnable labels, for smoke tests and benchmarks.

Each class has a smooth random pattern (a 4×4 grid of random values, upscaled); an image is its
class's pattern plus pixel noise, made on the fly from a generator seeded by (split, index), so an
item is the same in every process and every epoch without holding the set in memory.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

MEAN, STD = 0.5, 0.17  # roughly the pixel statistics of the images below
PATTERN_SEED = 0  # the class patterns, shared by the train and test splits
PATTERN_GRID = 4
NOISE_STD = 32  # in pixel values; the patterns span 64..192, so classes overlap but are learnable
# Disjoint noise seeds for the two splits (index + offset); torch's CPU generator keeps only the low 32
# bits of a seed, so the offsets stay below 2**32.
SPLIT_SEEDS = {"train": 0, "test": 1 << 31}


class SyntheticImages(Dataset):
    """`num_images` uint8 images (in_chans, image_size, image_size); label = index mod num_classes."""

    def __init__(self, split: str, num_images: int, num_classes: int, in_chans: int, image_size: int,
                 transform):
        coarse = torch.rand(num_classes, in_chans, PATTERN_GRID, PATTERN_GRID,
                            generator=torch.Generator().manual_seed(PATTERN_SEED))
        self.patterns = 64 + 128 * F.interpolate(coarse, size=image_size, mode="bilinear")
        self.seed, self.transform = SPLIT_SEEDS[split], transform
        self.targets = [index % num_classes for index in range(num_images)]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        label = self.targets[index]
        generator = torch.Generator().manual_seed(self.seed + index)
        noise = torch.randn(self.patterns.shape[1:], generator=generator)
        image = (self.patterns[label] + NOISE_STD * noise).round_().clamp_(0, 255).to(torch.uint8)
        return self.transform(image), label
