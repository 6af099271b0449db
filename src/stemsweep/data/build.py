"""build_data: a data config → the train and test datasets, and what the model needs to know of them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from stemsweep.config import FOLDER_DATASETS, AugConfig, ConfigError, DataConfig
from stemsweep.data import fashion_mnist, synthetic
from stemsweep.data.bad_files import BadFiles, LeaveOutUnreadable, ReplaceUnreadable, WithoutUnreadable
from stemsweep.data.imagenet import load_imagenet
from stemsweep.data.transforms import Normalise, small_image_test_transform, small_image_train_transform

SYNTHETIC_CLASSES, SYNTHETIC_SIZE = 10, 32  # when data.num_classes / data.image_size are null


@dataclass
class DataBundle:
    """The two splits and their shape. With the CPU pipeline an item is (float32 CHW normalised image,
    int label); with the device pipeline (data/device_pipeline.py) it is encoded, and `to_device`
    decodes and augments a whole batch on the training device."""

    train: Dataset
    test: Dataset
    num_classes: int
    in_chans: int
    image_size: int  # the training resolution
    test_image_size: int
    name: str
    pipeline: str = "cpu"  # cpu | gpu
    collate: Callable | None = None  # the DataLoaders' collate_fn (None: PyTorch's default)
    on_device: tuple[Callable, Callable] | None = None  # the device pipeline's (train, test) batch transforms

    def to_device(self, batch, device: torch.device, channels_last: bool, train: bool):
        """A loader's batch as the model's input and the labels, on `device`."""
        if self.on_device is not None:
            return self.on_device[0 if train else 1](batch, device, channels_last)
        images, labels = batch
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, labels.to(device, non_blocking=True)


def resolve_pipeline(data: DataConfig, device_type: str) -> str:
    """data.pipeline=auto: the device pipeline where it helps, a CUDA device and an image folder."""
    if data.pipeline != "auto":
        return data.pipeline
    return "gpu" if device_type == "cuda" and data.name in FOLDER_DATASETS else "cpu"


def build_data(data: DataConfig, aug: AugConfig, train_res: int | None, test_res: int | None,
               device_type: str = "cpu", bad_files: BadFiles | None = None,
               index_cache: str | Path | None = None) -> DataBundle:
    """train_res / test_res: the model's own resolutions, used for ImageNet when data.image_size /
    data.test_image_size are null. Small data sets keep their own size unless data.image_size is set.
    `device_type` is the training device's, for data.pipeline=auto. `bad_files` counts an image
    folder's unreadable files (a run's record; by default each process counts its own). `index_cache`:
    where an image folder's index is kept when its data is read-only (data/image_index.py)."""
    if data.name == "fashion_mnist":
        bundle = _fashion_mnist(data, aug)
    elif data.name in FOLDER_DATASETS:
        bundle = _imagenet(data, aug, train_res, test_res, resolve_pipeline(data, device_type),
                           bad_files or BadFiles(limit=data.max_bad_files, root=data.root), index_cache)
    else:
        bundle = _synthetic(data, aug)
    bundle.train = _subset(bundle.train, data.train_subset, data.subset_seed, "data.train_subset")
    bundle.test = _subset(bundle.test, data.test_subset, data.subset_seed, "data.test_subset")
    return bundle


def _fashion_mnist(data: DataConfig, aug: AugConfig) -> DataBundle:
    folder = fashion_mnist.find_folder(data.root, data.download)
    size = data.image_size or fashion_mnist.IMAGE_SIZE
    test_size = data.test_image_size or size
    normalise = Normalise(fashion_mnist.MEAN, fashion_mnist.STD)
    native = fashion_mnist.IMAGE_SIZE
    train = fashion_mnist.InMemoryImages(*fashion_mnist.load_split(folder, "train"),
                                         small_image_train_transform(aug, native, size, normalise))
    test = fashion_mnist.InMemoryImages(*fashion_mnist.load_split(folder, "test"),
                                        small_image_test_transform(native, test_size, normalise))
    return DataBundle(train, test, fashion_mnist.NUM_CLASSES, 1, size, test_size, data.name)


def _imagenet(data: DataConfig, aug: AugConfig, train_res: int | None, test_res: int | None,
              pipeline: str, bad_files: BadFiles, index_cache: str | Path | None) -> DataBundle:
    size = data.image_size or train_res
    if size is None:
        raise ConfigError("data.image_size=null is not allowed for data=imagenet with a model that has no "
                          "default resolution: give data.image_size")
    # The network sees its training resolution at test time too (a ViT's position embedding fixes its
    # grid). A model's test_res is the resize before that centre crop, as in the authors' pycls: RegNetY's
    # 232/262 means resize 262, crop 232; where test_res is no larger than the crop (ViT: 224), the
    # usual resize 256 → crop 224 applies.
    test_size = data.test_image_size or size
    own_resolution = data.image_size is None and data.test_image_size is None
    test_resize = test_res if own_resolution and test_res and test_res > test_size else None
    train, test = load_imagenet(data.root, aug, size, test_size, test_resize, index_cache)
    if pipeline == "cpu":
        return DataBundle(ReplaceUnreadable(train, bad_files), LeaveOutUnreadable(test, bad_files),
                          len(train.classes), 3, size, test_size, data.name, collate=WithoutUnreadable(None))
    from stemsweep.data.device_pipeline import DeviceBatches, EncodedImages, collate_encoded

    encoded_train, encoded_test = [EncodedImages(split.samples, split.transform, train=split is train)
                                   for split in (train, test)]
    return DataBundle(ReplaceUnreadable(encoded_train, bad_files), LeaveOutUnreadable(encoded_test, bad_files),
                      len(train.classes), 3, size, test_size, data.name, pipeline="gpu",
                      collate=WithoutUnreadable(collate_encoded),
                      on_device=(DeviceBatches(train.transform, bad_files, replace=True),
                                 DeviceBatches(test.transform, bad_files, replace=False)))


def _synthetic(data: DataConfig, aug: AugConfig) -> DataBundle:
    classes = data.num_classes or SYNTHETIC_CLASSES
    size = data.image_size or SYNTHETIC_SIZE  # the images are made at this size
    test_size = data.test_image_size or size
    normalise = Normalise([synthetic.MEAN] * data.in_chans, [synthetic.STD] * data.in_chans)
    shape = dict(num_classes=classes, in_chans=data.in_chans, image_size=size)
    train = synthetic.SyntheticImages("train", data.num_train, **shape,
                                      transform=small_image_train_transform(aug, size, size, normalise))
    test = synthetic.SyntheticImages("test", data.num_test, **shape,
                                     transform=small_image_test_transform(size, test_size, normalise))
    return DataBundle(train, test, classes, data.in_chans, size, test_size, data.name)


def _subset(dataset: Dataset, size: int | None, seed: int, option: str) -> Dataset:
    if size is None:
        return dataset
    targets = dataset.targets
    if size > len(targets):
        raise ConfigError(f"{option}={size} is not allowed: the split has only {len(targets)} images")
    return Subset(dataset, stratified_subset(targets, size, seed))


def stratified_subset(targets: Sequence[int], size: int, seed: int) -> list[int]:
    """`size` indices drawn at random (seeded) without replacement, each class keeping its share of the
    full split (rounded by largest remainder), in increasing order."""
    labels = np.asarray(targets)
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * size / len(labels)
    take = np.floor(quota).astype(int)
    take[np.argsort(take - quota, kind="stable")[: size - take.sum()]] += 1
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(np.flatnonzero(labels == label), count, replace=False)
              for label, count in zip(classes, take, strict=True)]
    return np.sort(np.concatenate(chosen)).tolist()
