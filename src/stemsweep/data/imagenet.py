"""ImageNet-style folders: <root>/train/<class>/<image> and <root>/val/<class>/<image>."""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.datasets.folder import pil_loader
from torchvision.transforms.v2.functional import pil_to_tensor

from stemsweep.config import AugConfig, ConfigError
from stemsweep.data.bad_files import DECODE_ERRORS, UnreadableImage
from stemsweep.data.image_index import ImageIndex, IndexedImageFolder, image_index
from stemsweep.data.transforms import imagenet_test_transform, imagenet_train_transform

LAYOUT = "<root>/train/<class>/<image> and <root>/val/<class>/<image>, the same class folders in both"


def load_imagenet(root: str, aug: AugConfig, image_size: int, test_image_size: int,
                  test_resize: int | None = None,
                  index_cache: str | Path | None = None) -> tuple[IndexedImageFolder, IndexedImageFolder]:
    """The train and val splits, as ImageFolder lists them (data/image_index.py): the class index is the
    position of its folder name in sorted order. Each split's index is kept beside the data, or under
    `index_cache` where the data is read-only."""
    train, val = split_indexes(root, index_cache)
    return (IndexedImageFolder(train, read_rgb, imagenet_train_transform(aug, image_size)),
            IndexedImageFolder(val, read_rgb, imagenet_test_transform(test_image_size, test_resize)))


def split_indexes(root: str, index_cache: str | Path | None = None) -> tuple[ImageIndex, ImageIndex]:
    """The indexes of <root>/train and <root>/val, which must have the same class folders."""
    train_dir, val_dir = Path(root).expanduser() / "train", Path(root).expanduser() / "val"
    for folder in (train_dir, val_dir):
        if not folder.is_dir():
            raise ConfigError(f"data=imagenet: {folder} does not exist; data.root must hold {LAYOUT}")
    train, val = image_index(train_dir, index_cache), image_index(val_dir, index_cache)
    if val.classes != train.classes:
        only_train = sorted(set(train.classes) - set(val.classes))
        only_val = sorted(set(val.classes) - set(train.classes))
        raise ConfigError(f"data=imagenet: the class folders of {train_dir} and {val_dir} differ "
                          f"(only in train: {_first(only_train)}; only in val: {_first(only_val)}); "
                          f"data.root must hold {LAYOUT}")
    return train, val


def read_rgb(path: str) -> torch.Tensor:
    """An image file as a uint8 RGB tensor (3, H, W), decoded by Pillow.

    torchvision.io decodes JPEGs ~1.8× faster, but it is deprecated from torchvision 0.29 on and the
    decode is a small part of the training transform's time (docs/benchmarks.md). A file that cannot
    be read or decoded raises UnreadableImage (data/bad_files.py)."""
    try:
        return pil_to_tensor(pil_loader(path))
    except DECODE_ERRORS as exc:
        raise UnreadableImage.from_error(path, exc) from None


def _first(names: list[str], shown: int = 5) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return (", ".join(names[:shown]) or "none") + more


def write_fashion_mnist_folder(root: str | Path, num_classes: int, train_per_class: int, val_per_class: int,
                               size: int = 256, fmnist_root: str | None = None) -> Path:
    """Write Fashion-MNIST images as an ImageNet-style folder of RGB JPEGs upscaled to size×size:
    real images for testing and benchmarking this path where ImageNet is not at hand."""
    from PIL import Image

    from stemsweep.data.fashion_mnist import find_folder, load_split

    images, labels = load_split(find_folder(fmnist_root, download=False), "train")
    root = Path(root)
    for label in range(num_classes):
        indices = (labels == label).nonzero().flatten()[: train_per_class + val_per_class].tolist()
        for n, index in enumerate(indices):
            split = "train" if n < train_per_class else "val"
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True, exist_ok=True)
            image = Image.fromarray(images[index, 0].numpy()).convert("RGB")
            image.resize((size, size), Image.BICUBIC).save(folder / f"{index}.jpg", quality=90)
    return root
