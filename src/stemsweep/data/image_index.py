"""The index of an image folder (<folder>/<class>/…/<image>): its classes and its (path, label)
samples, exactly as torchvision's ImageFolder lists them, built once per folder and kept on disk.

ImageFolder lists every class folder each time a dataset is made, so once per run and per DDP rank
(~2.5 s at ImageNet-1k's 1.28 M files on a local disk, ~30 s at 14 M, often 10× that on a network
file system), and holds the samples as a list of tuples that each DataLoader worker turns into private
copies by touching their reference counts (pytorch issue 13246). Here the listing is written once to a
file that every node of a cluster sees: beside the data (<root>/.stemsweep-index/<folder name>.index)
or, where the data is read-only, under a cache folder (runs_root/.index-cache/<hash of the root's path>/).
One process builds it under a file lock while the others wait, then all of them map it into memory:
the paths as one byte buffer with offsets and the labels as an integer array, pages that processes
and workers share because nothing writes to them. It is reused while the folder and each of its
sub-folders keep the mtimes it was built from (a file added, removed or renamed changes its folder's).
Its digest (classes, relative paths and labels, hashed when the folder is listed and kept in the index)
is what a run's record keeps of its data (data/fingerprint.py): no image is read for it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, has_file_allowed_extension

from stemsweep.errors import ConfigError
from stemsweep.record.files import atomic_write, remove_stale_temporaries

log = logging.getLogger(__name__)

INDEX_FOLDER = ".stemsweep-index"  # beside the data: <root>/.stemsweep-index/train.index
INDEX_CACHE = ".index-cache"  # under runs_root: where the index of read-only data is kept
MAGIC = b"stemsweep image index 2\n"  # 2: the header holds the digest
ALIGN = 64  # each array starts on a multiple of this in the file, so that a view of the map is aligned
# A folder changed within this much of the listing may change again within its file system's mtime
# granularity (1-2 s on some network file systems) without its mtime moving: such an index is not
# trusted, and the next process to need it lists the folder again.
RACY_NS = 2_000_000_000


class ImageIndex(Sequence):
    """ImageFolder's `samples` of one folder, held compactly: item i is (path, label), the path decoded
    from `path_bytes` on demand. `path_bytes` is the UTF-8 (file system encoded) paths relative to the
    folder, end to end; path i is `path_bytes[path_offsets[i]:path_offsets[i + 1]]`. `digest` identifies
    the listing (index_digest)."""

    def __init__(self, folder: str, classes: list[str], path_bytes: np.ndarray, path_offsets: np.ndarray,
                 labels: np.ndarray, digest: str):
        self.folder, self.classes = folder, classes
        self.path_bytes, self.path_offsets, self.labels = path_bytes, path_offsets, labels
        self.digest = digest

    @property
    def class_to_idx(self) -> dict[str, int]:
        return {name: label for label, name in enumerate(self.classes)}

    def __len__(self) -> int:
        return len(self.labels)

    def path(self, i: int) -> str:
        start, end = self.path_offsets[i], self.path_offsets[i + 1]
        return os.path.join(self.folder, os.fsdecode(self.path_bytes[start:end].tobytes()))

    def __getitem__(self, i: int) -> tuple[str, int]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"image {i} of {len(self)}")
        i %= len(self)
        return self.path(i), int(self.labels[i])


class IndexedImageFolder(Dataset):
    """ImageFolder's items, (transform(loader(path)), label), from an ImageIndex."""

    def __init__(self, index: ImageIndex, loader: Callable[[str], Any], transform: Callable | None = None):
        self.samples, self.loader, self.transform = index, loader, transform
        self.root, self.classes, self.targets = index.folder, index.classes, index.labels

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        path, label = self.samples[i]
        image = self.loader(path)
        return (self.transform(image) if self.transform is not None else image), label


def image_index(folder: str | Path, cache_dir: str | Path | None = None) -> ImageIndex:
    """The index of `folder`: the kept one where it is current, else listed now and kept, beside the
    data where that is writable, else under `cache_dir`. Where neither is writable it is listed in
    memory (and the reason logged once)."""
    folder = os.path.expanduser(str(folder))  # as ImageFolder takes it: the paths start with it
    root, name = Path(folder).parent, Path(folder).name
    places = [root / INDEX_FOLDER / f"{name}.index"]
    if cache_dir is not None:  # one folder per data root, as beside the data
        key = hashlib.sha256(os.path.abspath(root).encode()).hexdigest()[:16]
        places.append(Path(cache_dir) / key / f"{name}.index")
    for file in places:
        if (kept := _read_current(file, folder)) is not None:
            return kept
    failures, listing = [], None
    for file in places:
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
            lock = open(file.with_suffix(".lock"), "a")
        except OSError as error:  # a read-only place: the next one
            failures.append(f"{file.parent}: {error.strerror}")
            continue
        with lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX)
                remove_stale_temporaries(file)  # of a process killed while writing it
            except OSError:  # a file system without locks (Lustre mounted without -o flock): each process
                pass  # may list the folder, and the atomic write keeps the file whole
            if (kept := _read_current(file, folder)) is not None:  # built while this process waited
                return kept
            listing = listing or _list(folder)
            try:
                _write(file, *listing)
            except OSError as error:  # e.g. a full disk: the next place
                failures.append(f"{file}: {error.strerror}")
                continue
            listed, header = listing
            log.info("indexed %s: %d images in %d classes, listed in %.1f s, kept in %s", folder, len(listed),
                     len(listed.classes), (time.time_ns() - header["listed_ns"]) / 1e9, file)
            return _open(file, folder)[1]
    listed, _ = listing or _list(folder)
    log.warning("indexed %s: %d images, in memory only: no place to keep its index (%s)", folder, len(listed),
                "; ".join(failures))
    return listed


def _list(folder: str) -> tuple[ImageIndex, dict[str, Any]]:
    """ImageFolder's listing (torchvision's make_dataset: the class folders in sorted order, each walked
    following links, sorted by folder path, then by file name, files with an image extension), and the
    mtime of every folder walked, each read before the folder is listed so that no change is missed."""
    listed_ns = time.time_ns()
    folders = {"": os.stat(folder).st_mtime_ns}
    classes, _ = find_classes(folder)
    chunks, lengths, labels, empty = [], [], [], []
    for label, name in enumerate(classes):
        class_dir = os.path.join(folder, name)
        folders[name] = os.stat(class_dir).st_mtime_ns
        walked = []
        for root, subfolders, files in os.walk(class_dir, followlinks=True):
            relative = name + root[len(class_dir):]
            for sub in subfolders:  # os.walk lists them after this step returns
                folders[os.path.join(relative, sub)] = os.stat(os.path.join(root, sub)).st_mtime_ns
            walked.append((root, relative, files))
        paths = [os.fsencode(os.path.join(relative, file))
                 for _, relative, files in sorted(walked) for file in sorted(files)
                 if has_file_allowed_extension(file, IMG_EXTENSIONS)]
        if not paths:
            empty.append(name)
        chunks.append(b"".join(paths))
        lengths.append(np.fromiter(map(len, paths), np.int64, len(paths)))
        labels.append(np.full(len(paths), label, np.int32))
    if empty:  # ImageFolder's error
        raise ConfigError(f"Found no valid file for the classes {', '.join(sorted(empty))}. "
                                f"Supported extensions are: {', '.join(IMG_EXTENSIONS)}")
    offsets = np.concatenate([[0], np.cumsum(np.concatenate(lengths))]).astype(np.int64)
    path_bytes, labels = np.frombuffer(b"".join(chunks), np.uint8), np.concatenate(labels)
    index = ImageIndex(folder, classes, path_bytes, offsets, labels,
                       index_digest(classes, path_bytes, offsets, labels))
    return index, {"listed_ns": listed_ns, "folders": folders}


def index_digest(classes: list[str], path_bytes: np.ndarray, path_offsets: np.ndarray, labels: np.ndarray) -> str:
    """sha256 of a listing: its class names, its paths relative to the folder and their labels, in
    ImageFolder's order, each array in a fixed byte order. Two folders with equal digests list the same
    files under the same labels wherever they are (a copy on a node's local disk included); the images'
    bytes are not read (~0.1 s for ImageNet-1k's 1.28 M paths, next to seconds of listing)."""
    digest = hashlib.sha256(json.dumps(classes).encode())
    for array, dtype in ((path_offsets, "<i8"), (labels, "<i4"), (path_bytes, "u1")):
        digest.update(np.ascontiguousarray(array, dtype=dtype).data)
    return digest.hexdigest()


ARRAYS = ("path_bytes", "path_offsets", "labels")


def _write(file: Path, index: ImageIndex, header: dict[str, Any]) -> None:
    """One file: MAGIC, the JSON header's length (8 bytes, little-endian), the header, then each array
    at an aligned position past it (recorded in the header as dtype, position, size)."""
    layout, position = {}, 0
    for name in ARRAYS:
        array = getattr(index, name)
        layout[name] = [array.dtype.str, position, array.size]
        position += -(-array.nbytes // ALIGN) * ALIGN
    text = json.dumps({**header, "classes": index.classes, "digest": index.digest, "arrays": layout}).encode()

    def write(f) -> None:
        f.write(MAGIC + len(text).to_bytes(8, "little") + text)
        start = _data_start(len(text))
        for name in ARRAYS:
            f.seek(start + layout[name][1])
            f.write(memoryview(getattr(index, name)))

    atomic_write(file, write, binary=True)


def _data_start(header_length: int) -> int:
    return -(-(len(MAGIC) + 8 + header_length) // ALIGN) * ALIGN


def _open(file: Path, folder: str) -> tuple[dict[str, Any], ImageIndex]:
    """The kept index's header and its arrays, mapped read-only. The map is made from the file object
    the header was read from, so both are of one version of the file even if it is replaced meanwhile."""
    with open(file, "rb") as f:
        if f.read(len(MAGIC)) != MAGIC:
            raise ValueError(f"{file} is not an image index")
        length = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(length))
        whole = np.memmap(f, np.uint8, mode="r")
    start = _data_start(length)
    arrays = {}
    for name, (dtype, position, size) in header["arrays"].items():
        nbytes = size * np.dtype(dtype).itemsize
        arrays[name] = whole[start + position: start + position + nbytes].view(dtype)
    return header, ImageIndex(folder, header["classes"], **arrays, digest=header["digest"])


def _read_current(file: Path, folder: str) -> ImageIndex | None:
    """The kept index if it is there, whole, and its folder has not changed since it was listed."""
    try:
        header, index = _open(file, folder)
    except (OSError, ValueError, KeyError):  # not there (yet), or not an index of this version
        return None
    folders = header["folders"]
    if header["listed_ns"] - max(folders.values()) < RACY_NS:
        return None
    for relative, mtime in folders.items():
        try:
            if os.stat(os.path.join(folder, relative)).st_mtime_ns != mtime:
                return None
        except OSError:
            return None
    return index
