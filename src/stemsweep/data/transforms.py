"""Per-image transforms: the paper's ImageNet recipe, its counterpart for small images, normalisation.

Mixup/CutMix and label smoothing act on whole batches and live in the training loop.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms import v2

from stemsweep.config import AugConfig

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

# The test image is resized so that the centre crop keeps 224/256 of it (resize 256, crop 224).
TEST_CROP_FRACTION = 224 / 256

# The Inception crop keeps 8-100% of an ImageNet photo. On a 28-pixel Fashion-MNIST garment an 8%
# crop is an 8×8 patch of texture; from 35% up the object stays recognisable.
INCEPTION_CROP_SCALE = (0.08, 1.0)
SMALL_IMAGE_CROP_SCALE = (0.35, 1.0)


class Normalise:
    """uint8 CHW image → float32 (x/255 − mean) / std per channel, in one pass.

    Several times faster per image than v2.ToDtype + v2.Normalize, which matters for 28×28 images
    fetched ~100k times per run."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        self.shift = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1) * 255
        self.scale = 1 / (torch.tensor(std, dtype=torch.float32).view(-1, 1, 1) * 255)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return (image.float() - self.shift) * self.scale


def _augmentations(aug: AugConfig, fill: int) -> list:
    """Flip and AutoAugment, applied after the crop (as the authors' pycls does)."""
    steps: list = []
    if aug.flip:
        steps.append(v2.RandomHorizontalFlip())
    if aug.autoaugment:
        steps.append(v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET, v2.InterpolationMode.BILINEAR, fill=fill))
    return steps


def imagenet_train_transform(aug: AugConfig, size: int) -> v2.Compose:
    """uint8 image tensor → normalised tensor: Inception crop, flip, AutoAugment (each where aug asks).

    On tensors rather than PIL images: the crop-and-resize is ~1.6× faster (bench/bench_data.py)."""
    if aug.random_resized_crop:
        crop = [v2.RandomResizedCrop(size, scale=INCEPTION_CROP_SCALE, antialias=True)]
    else:
        crop = [v2.Resize(round(size / TEST_CROP_FRACTION), antialias=True), v2.CenterCrop(size)]
    # Grey fill where AutoAugment's rotations and shears uncover the border, as in pycls.
    return v2.Compose([*crop, *_augmentations(aug, fill=128), Normalise(IMAGENET_MEAN, IMAGENET_STD)])


def imagenet_test_transform(size: int, resize: int | None = None) -> v2.Compose:
    """uint8 image tensor → normalised tensor: resize the short side to ``resize`` (default
    size·256/224), centre crop size."""
    resize = resize or round(size / TEST_CROP_FRACTION)
    return v2.Compose([v2.Resize(resize, antialias=True), v2.CenterCrop(size),
                       Normalise(IMAGENET_MEAN, IMAGENET_STD)])


def small_image_train_transform(aug: AugConfig, native_size: int, size: int,
                                normalise: Normalise) -> v2.Compose:
    """uint8 tensor → normalised tensor for small images (Fashion-MNIST, synthetic): a milder crop
    (SMALL_IMAGE_CROP_SCALE), flip, AutoAugment with black fill (the images' background)."""
    if aug.random_resized_crop:
        crop = [v2.RandomResizedCrop(size, scale=SMALL_IMAGE_CROP_SCALE, antialias=True)]
    else:
        crop = _resize_to(native_size, size)
    return v2.Compose([*crop, *_augmentations(aug, fill=0), normalise])


def small_image_test_transform(native_size: int, size: int, normalise: Normalise) -> v2.Compose:
    """uint8 tensor → normalised tensor, the whole image resized to size (no crop)."""
    return v2.Compose([*_resize_to(native_size, size), normalise])


def _resize_to(native_size: int, size: int) -> list:
    return [] if size == native_size else [v2.Resize(size, antialias=True)]
