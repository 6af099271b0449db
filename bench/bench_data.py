"""Data-loading speed, to size data.num_workers: images/s of the training transforms per worker count.

    .venv/bin/python bench/bench_data.py          # ~1 minute on 2 cores; prints markdown tables

ImageNet-style: 200 real images (Fashion-MNIST garments upscaled to 256×256 RGB JPEGs, written to a
temporary folder) through the paper's training transform at 224 (Inception crop, flip, AutoAugment),
by a DataLoader with 0, 1 and 2 workers. Fashion-MNIST: __getitem__ in one process, with and without
the augmentation. The main process runs torch with 1 thread, as a worker does.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler
from torchvision.datasets import ImageFolder
from torchvision.transforms import v2

from stemsweep.config import AugConfig, DataConfig
from stemsweep.data import build_data
from stemsweep.data.imagenet import write_fashion_mnist_folder
from stemsweep.data.transforms import IMAGENET_MEAN, IMAGENET_STD, INCEPTION_CROP_SCALE, Normalise

PAPER_AUG = AugConfig(name="paper", random_resized_crop=True, flip=True, autoaugment=True)
CROP_FLIP = AugConfig(name="light", random_resized_crop=True, flip=True)
NO_AUG = AugConfig(name="none")


def loader_rate(dataset, workers: int, images: int, batch_size: int = 32) -> float:
    """Images/s through a DataLoader, after its first batch (worker start-up is not counted)."""
    sampler = RandomSampler(dataset, replacement=True, num_samples=images + batch_size)
    batches = iter(DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers))
    next(batches)
    start = time.perf_counter()
    seen = sum(len(labels) for _, labels in batches)
    return seen / (time.perf_counter() - start)


def getitem_rate(dataset, items: int) -> float:
    start = time.perf_counter()
    for i in range(items):
        dataset[i % len(dataset)]
    return items / (time.perf_counter() - start)


class ReadyImages(Dataset):
    """A ready-made image per item: what remains is the DataLoader's cost of moving it from a worker."""

    def __init__(self, dtype: torch.dtype):
        self.image = torch.zeros(3, 224, 224, dtype=dtype)

    def __len__(self) -> int:
        return 10_000

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.image.clone(), 0


def pil_transform() -> v2.Compose:
    """The paper's training transform run on PIL images instead of tensors, for comparison."""
    return v2.Compose([v2.RandomResizedCrop(224, scale=INCEPTION_CROP_SCALE, antialias=True),
                       v2.RandomHorizontalFlip(),
                       v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET, v2.InterpolationMode.BILINEAR, fill=128),
                       v2.PILToTensor(), Normalise(IMAGENET_MEAN, IMAGENET_STD)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1200, help="images timed per ImageNet-style row")
    parser.add_argument("--items", type=int, default=20000, help="items timed per Fashion-MNIST row")
    args = parser.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as folder:
        write_fashion_mnist_folder(folder, num_classes=4, train_per_class=50, val_per_class=10, size=256)
        print(f"## ImageNet-style folder: 200 JPEGs 256×256, {torch.get_num_threads()} torch thread in the "
              "main process\n")
        print("| transform | workers | images/s |\n|---|---|---|")
        for name, aug in [("Inception crop + flip + AutoAugment, 224", PAPER_AUG),
                          ("Inception crop + flip, 224", CROP_FLIP)]:
            data = build_data(DataConfig(name="imagenet", root=folder), aug, 224, 224)
            for workers in (0, 1, 2):
                rate = loader_rate(data.train, workers, args.images)
                print(f"| {name} | {workers} | {rate:.0f} |", flush=True)
        data = build_data(DataConfig(name="imagenet", root=folder), NO_AUG, 224, 224)
        print(f"| test: resize 256, centre crop 224 | 0 | {loader_rate(data.test, 0, args.images):.0f} |")
        pil = ImageFolder(f"{folder}/train", transform=pil_transform())
        print(f"| as the first row, on PIL images (not used) | 0 | {loader_rate(pil, 0, args.images):.0f} |")
        print("\n## DataLoader transfer alone: a ready 3×224×224 image per item\n")
        print("| item | workers | images/s |\n|---|---|---|")
        for dtype in (torch.float32, torch.uint8):
            for workers in (0, 1, 2):
                rate = loader_rate(ReadyImages(dtype), workers, 2 * args.images)
                print(f"| {str(dtype).removeprefix('torch.')} | {workers} | {rate:.0f} |", flush=True)

    print("\n## Fashion-MNIST __getitem__, one process\n")
    print("| transform | items/s |\n|---|---|")
    for name, aug in [("none (normalise only)", NO_AUG), ("crop (scale 0.35-1) + flip", CROP_FLIP),
                      ("crop + flip + AutoAugment", PAPER_AUG)]:
        data = build_data(DataConfig(name="fashion_mnist"), aug, None, None)
        items = args.items if aug is NO_AUG else args.items // 4
        print(f"| {name} | {getitem_rate(data.train, items):.0f} |", flush=True)
    start = time.perf_counter()
    build_data(DataConfig(name="fashion_mnist"), NO_AUG, None, None)
    print(f"\nbuild_data(fashion_mnist), 60k + 10k images: {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
