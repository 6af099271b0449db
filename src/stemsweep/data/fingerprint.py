"""What data a run trains on: its fingerprint, kept in the run's record (summary.json `data`), and the
checks a run's data passes before a record is reused and before a run starts.

A run's signature leaves out where its data is (data.root, data_roots), so that a plan made where the
data is not, and a fine-tune naming its source by signature, need no data. The record keeps instead
what the data was:
- an image folder: for each split its image count, class count and digest (the kept index's: classes,
  relative paths and labels; data/image_index.py), and the folder it was read from, which is shown but
  not compared: the same files in another place (a copy on a node's local disk) are the same data;
- the embedded and synthetic sets: their parameters.

A record of other data than the run's config names now is neither skipped as done nor resumed: a
planner asks `data_mismatch` before it skips a run, and the run itself checks before it skips or resumes
(stemsweep/run.py). This module imports no torch until an image folder is to be read: planning imports it.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

from stemsweep.config import FOLDER_DATASETS, ConfigError, DataConfig, RunConfig

# The parameters that make the embedded and synthetic sets (the first `data.root` cannot change:
# Fashion-MNIST is its published split; the synthetic images are made from these).
PARAMETERS = {"fashion_mnist": ("train_subset", "test_subset", "subset_seed"),
              "synthetic": ("num_classes", "in_chans", "image_size", "num_train", "num_test")}

# The class counts of the image-folder data sets whose shape is known, and what each is (data.check_shape).
# ImageNet-21k: the fall11 release (fall11_whole.tar) has 21,841 classes; winter21 (winter21_whole.tar.gz)
# 19,167, after image-net.org removed 2,674 (its update of 17 September 2019), as timm's copies of both
# list them (huggingface.co/datasets/timm/imagenet-22k-wds and timm/imagenet-w21-wds); ImageNet-21K-P,
# processed from them by Ridnik et al. 2021 ("ImageNet-21K Pretraining for the Masses", arXiv:2104.10972;
# github.com/Alibaba-MIIL/ImageNet21K, dataset_preprocessing/processing_instructions.md), 11,221 classes
# from fall11 and 10,450 from winter21.
KNOWN_CLASSES = {
    "imagenet": {1000: "ImageNet-1k"},
    "imagenet21k": {21841: "ImageNet-21k fall11", 19167: "ImageNet-21k winter21", 11221: "ImageNet-21K-P from fall11",
                    10450: "ImageNet-21K-P from winter21"},
}
SHOWN = ("root",)  # fingerprint fields shown in a mismatch's line but not compared


def data_fingerprint(data: DataConfig, runs_root: str | Path) -> dict[str, Any]:
    """The fingerprint of the data `data` names. An image folder is read through its kept index, listed
    and kept now if it has none (as a run would: beside the data, else under runs_root); OSError or
    ConfigError when it cannot be read."""
    if data.name not in FOLDER_DATASETS:
        return {"name": data.name, **{key: getattr(data, key) for key in PARAMETERS[data.name]}}
    if data.root is None:
        raise ConfigError(f"data.root=null is not allowed for data={data.name}")
    # Deferred for start-up speed: the index imports torch and torchvision (~3 s), which planning does
    # not otherwise need.
    from stemsweep.data.image_index import INDEX_CACHE
    from stemsweep.data.imagenet import split_indexes

    train, val = split_indexes(data.root, Path(runs_root) / INDEX_CACHE)
    return {"name": data.name, "root": os.path.abspath(os.path.expanduser(data.root)),
            **{split: {"images": len(index), "classes": len(index.classes), "digest": index.digest}
               for split, index in (("train", train), ("val", val))}}


def readable_fingerprint(data: DataConfig, runs_root: str | Path) -> dict[str, Any] | None:
    """data_fingerprint, or None where the data cannot be read (here, or at all: a run then stops
    where it builds its data, with that error)."""
    try:
        return data_fingerprint(data, runs_root)
    except (OSError, ConfigError):
        return None


def mismatch_line(cfg: RunConfig, signature: str, recorded: dict[str, Any] | None,
                  current: dict[str, Any]) -> str | None:
    """The line that refuses to reuse the record of run `signature` (under cfg.runs_root), trained on
    `recorded`, for the data `current` that `cfg` names now; None when they are the same data, or the
    record is from before fingerprints (no `recorded`)."""
    if recorded is None or _compared(recorded) == _compared(current):
        return None
    here = Path(cfg.runs_root)
    other = f"{os.path.abspath(here).rstrip(os.sep)}-{Path(current['root']).name if 'root' in current else 2}"
    return (f"run {signature} under runs_root={cfg.runs_root} was trained on {_describe(recorded)}, not on "
            f"{_describe(current)} that data={cfg.data.name} names now: a signature leaves out where the data is, "
            f"so that record is neither reused nor resumed; to keep both runs, train this one under another "
            f"runs_root (e.g. runs_root={other}), or move {here / signature} away to train it here")


def data_mismatch(cfg: RunConfig, summary: dict[str, Any]) -> str | None:
    """For a planner, before it skips the run of `cfg` whose record is `summary` (as done, or to let it
    resume): the line that refuses to, when the data `cfg` names here is not the data of that record
    (mismatch_line). None when they agree, when the record has no fingerprint (written before records
    kept one), or when the data cannot be read here (a plan made where the data is not: the run checks
    when it starts). Within one process an image folder is fingerprinted once while its train/ and val/
    keep their mtimes, however many runs read it."""
    recorded = summary.get("data")
    if recorded is None:
        return None
    try:
        if cfg.data.name in FOLDER_DATASETS and cfg.data.root is not None:
            root = os.path.abspath(os.path.expanduser(cfg.data.root))
            stamp = tuple(os.stat(os.path.join(root, split)).st_mtime_ns for split in ("train", "val"))
            current = _folder_fingerprint(cfg.data.name, root, str(cfg.runs_root), stamp)
        else:
            current = data_fingerprint(cfg.data, cfg.runs_root)
    except (OSError, ConfigError):
        return None
    return mismatch_line(cfg, summary.get("signature", "?"), recorded, current)


@functools.lru_cache(maxsize=8)
def _folder_fingerprint(name: str, root: str, runs_root: str, stamp: tuple[int, ...]) -> dict[str, Any]:
    return data_fingerprint(DataConfig(name=name, root=root), runs_root)


def shape_problem(data: DataConfig, fingerprint: dict[str, Any]) -> str | None:
    """The line that stops a run whose image folder does not have the classes of its data set
    (KNOWN_CLASSES), unless data.check_shape=false; None when it fits, or its shape is not known."""
    known = KNOWN_CLASSES.get(data.name)
    if not data.check_shape or known is None:
        return None
    classes = fingerprint["train"]["classes"]
    if classes in known:
        return None
    allowed = ", ".join(f"{count:,} ({what})" for count, what in known.items())
    hint = next((f", as {what} has" for other, counts in KNOWN_CLASSES.items() if other != data.name
                 for count, what in counts.items() if count == classes), "")
    folders = f"{classes:,} class folder{'' if classes == 1 else 's'}"
    return (f"data={data.name}: {fingerprint['root']}/train has {folders}{hint}; data={data.name} "
            f"expects {allowed}: name its folder with data_roots.{data.name}=PATH (data.root=PATH for one run), or "
            "give data.check_shape=false to train on this folder as it is")


def _compared(fingerprint: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in fingerprint.items() if key not in SHOWN}


def _describe(fingerprint: dict[str, Any]) -> str:
    if "root" in fingerprint:
        train = fingerprint.get("train", {})
        return (f"{fingerprint['root']} ({train.get('images', 0):,} training images in {train.get('classes', 0):,} "
                f"classes, digest {str(train.get('digest'))[:12]})")
    return f"data={fingerprint.get('name')} with " + ", ".join(
        f"data.{key}={value}" for key, value in fingerprint.items() if key != "name")
