"""Fashion-MNIST, the embedded default: the published 60k/10k split read from its IDX files into memory.

We read the IDX files ourselves (a few lines of gzip + numpy) rather than through
torchvision.datasets.FashionMNIST: that class wants its own folder layout (<root>/FashionMNIST/raw/)
and would download into it, while Debian's dataset-fashion-mnist installs the four .gz files flat
into one folder.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from stemsweep.errors import ConfigError

DEBIAN_FOLDER = "/usr/share/datasets/fashion-mnist"  # where `apt-get install dataset-fashion-mnist` puts it
DOWNLOAD_CACHE = "~/.cache/stemsweep"  # where data.download=true fetches it when data.root is null
TORCHVISION_FOLDER = "FashionMNIST/raw"  # where torchvision keeps the files under its root
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
MEAN, STD = (0.2860,), (0.3530,)  # over the 60k training images
NUM_CLASSES = 10
IMAGE_SIZE = 28

_IDX_UBYTE = 0x08  # the IDX type code for unsigned bytes


class InMemoryImages(Dataset):
    """uint8 images (N, C, H, W) held in memory; an item is (transform(image), label)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform):
        self.images, self.transform = images, transform
        self.targets = labels.tolist()  # plain ints: indexing a list is cheaper than a tensor

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.images[index]), self.targets[index]


def read_idx(path: Path) -> np.ndarray:
    """An IDX file of unsigned bytes (gzipped or not) as an array of its shape."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    zeros, dtype, ndim = raw[0] | raw[1], raw[2], raw[3]
    if zeros != 0 or dtype != _IDX_UBYTE:
        raise ConfigError(f"{path} is not an IDX file of unsigned bytes")
    shape = tuple(np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_split(folder: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images uint8 (N, 1, 28, 28) and labels int64 (N,) of the train or test split."""
    images_name, labels_name = FILES[split]
    images = read_idx(_find(folder, images_name))
    labels = read_idx(_find(folder, labels_name))
    return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


def find_folder(root: str | None, download: bool) -> Path:
    """The folder holding the four files: data.root (or its torchvision layout, FashionMNIST/raw/), else
    Debian's folder; fetched by torchvision if data.download asks for it."""
    folder = Path(os.path.expanduser(root or DEBIAN_FOLDER))
    for candidate in (folder, folder / TORCHVISION_FOLDER):
        if not _missing(candidate):
            return candidate
    if download:
        return _download(Path(os.path.expanduser(root or DOWNLOAD_CACHE)))
    raise ConfigError(
        f"Fashion-MNIST not found: {folder} lacks {', '.join(_missing(folder))}. Get it with "
        f"`apt-get install dataset-fashion-mnist` (or `make setup`), which installs it in {DEBIAN_FOLDER}; "
        "or set data.root to a folder holding the four IDX files (.gz or not); "
        "or set data.download=true to let torchvision fetch them (needs a network)."
    )


def _find(folder: Path, name: str) -> Path:
    gz = folder / f"{name}.gz"
    return gz if gz.is_file() else folder / name


def _missing(folder: Path) -> list[str]:
    names = [name for pair in FILES.values() for name in pair]
    return [f"{name}.gz" for name in names if not _find(folder, name).is_file()]


def _download(cache: Path) -> Path:
    """torchvision fetches the .gz files (checksummed) into <cache>/FashionMNIST/raw/ and keeps them."""
    from torchvision.datasets import FashionMNIST

    FashionMNIST(str(cache), download=True)  # fetches both splits
    return cache / TORCHVISION_FOLDER
