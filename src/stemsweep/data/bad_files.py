"""Image files that cannot be read or decoded: a training image is replaced by another, a test image
is left out of the test error, and each file is counted once over the whole run.

ImageNet-21k and folders users collect hold a few such files (truncated downloads, empty files, HTML
saved as .jpg); one in 14 M must not end a run of several days. A folder of mostly bad files must not
train silently either: past `data.max_bad_files` distinct files the run stops with one line.

The replacement of a training image is the next index of the folder (the first readable one after
it), read with the image's own augmentation seed: it depends only on the index and the folder, never
on what ran before, so a resumed run trains exactly what an uninterrupted one does.
"""

from __future__ import annotations

import json
import logging
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset, default_collate

from stemsweep.config import ConfigError

log = logging.getLogger(__name__)

RECORD_NAME = "bad_files.jsonl"  # in the run directory, one JSON string (a path) a line
FIRST_SHOWN = 10  # paths the summary keeps
FIRST_NAMED = 3  # paths the stop line names

# What Pillow and the file system raise for a file that cannot be read or decoded (Pillow's plugins
# raise SyntaxError, EOFError and struct.error on some broken headers; UnidentifiedImageError and
# "image file is truncated" are OSErrors). A failing transform is not among them: that is a bug.
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, Image.DecompressionBombError)


class UnreadableImage(Exception):
    """The file at `path` could not be read or decoded; `cause` says why."""

    def __init__(self, path: str, cause: str = ""):
        super().__init__(path, cause)
        self.path, self.cause = path, cause

    @classmethod
    def from_error(cls, path: str, error: BaseException) -> UnreadableImage:
        if isinstance(error, UnidentifiedImageError):  # its message repeats the path
            return cls(path, "not an image file Pillow can identify")
        return cls(path, f"{type(error).__name__}: {error}")

    def __str__(self) -> str:
        return f"{self.path}: {self.cause}"


class TooManyBadFiles(ConfigError):
    """More than data.max_bad_files distinct files could not be read; the message is the stop line."""


class BadFiles:
    """The run's unreadable files, counted once each over the whole run.

    They are kept in a small file in the run directory that every process appends to (O_APPEND: a short
    line is written whole). DataLoader workers and DDP ranks are separate processes, and a resumed run
    is a new one: a shared file counts each file once across all of them and survives a restart, where
    a flag returned through the batch would have to be gathered across ranks and kept in checkpoints.
    The process that meets a file first logs it. Without a record file (`path` None: a data set used
    outside a run), each process counts its own."""

    def __init__(self, path: Path | None = None, limit: int = 100, root: str | None = None,
                 stop_at_limit: bool = True):
        """`stop_at_limit` False: past the limit, `record` goes on replacing or leaving out, and the caller
        asks `exceeded()` at points where every process can stop together (data-parallel training: a
        process that stopped alone would leave the others waiting in their next collective)."""
        self.path, self.limit, self.root, self.stop_at_limit = path, limit, root, stop_at_limit
        self._seen: dict[str, None] = {}  # without a record file
        self._read: tuple[int, bool] = (-1, False)  # the record file's size when last read, and the answer

    def paths(self) -> list[str]:
        """The distinct files met so far, in the order they were first met."""
        if self.path is None:
            return list(self._seen)
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        # The last piece has no newline yet while another process is writing it: it counts once written.
        return list(dict.fromkeys(json.loads(line) for line in text.split("\n")[:-1] if line))

    def clear(self) -> None:
        """Forget the files met so far (a run that starts again from its first step meets them again)."""
        self._seen.clear()
        self._read = (-1, False)
        if self.path is not None:
            self.path.unlink(missing_ok=True)

    def record(self, error: UnreadableImage, outcome: str) -> None:
        """Count the file (logging it the first time, with `outcome`: what became of it); past the
        limit, raise TooManyBadFiles."""
        known = self.paths()
        if error.path not in known:
            known.append(error.path)
            log.warning("cannot read or decode %s (%s): %s", error.path, error.cause, outcome)
            if self.path is None:
                self._seen[error.path] = None
            else:
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)  # less the umask
                try:
                    os.write(fd, (json.dumps(error.path) + "\n").encode())
                finally:
                    os.close(fd)
        if len(known) > self.limit and self.stop_at_limit:
            raise self.too_many(known)

    def exceeded(self) -> bool:
        """Whether any process has met more distinct files than the limit (asked after every step: the
        record file is read again only when it has grown)."""
        if self.path is None:
            return len(self._seen) > self.limit
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return False
        if size != self._read[0]:
            self._read = (size, len(self.paths()) > self.limit)
        return self._read[1]

    def too_many(self, paths: list[str] | None = None) -> TooManyBadFiles:
        paths = self.paths() if paths is None else paths
        more = f" and {len(paths) - FIRST_NAMED} more" if len(paths) > FIRST_NAMED else ""
        files = "1 file" if len(paths) == 1 else f"{len(paths)} files"
        check = f"stemsweep check-data {self.root}" if self.root else "stemsweep check-data <data.root>"
        return TooManyBadFiles(
            f"data.max_bad_files={self.limit} is exceeded: {files} cannot be read or decoded "
            f"({', '.join(paths[:FIRST_NAMED])}{more}); list them all with `{check}`, then remove or "
            "replace them, or raise data.max_bad_files")

    def summary(self) -> dict[str, Any]:
        """The record's `bad_files`: how many distinct files, and the first ones."""
        paths = self.paths()
        return {"count": len(paths), "first": paths[:FIRST_SHOWN]}


class _FolderSplit(Dataset):
    """An image folder's split (ImageFolder, or the device pipeline's EncodedImages) whose files may be
    unreadable: it raises UnreadableImage for them, before it draws any augmentation."""

    def __init__(self, dataset: Dataset, bad_files: BadFiles):
        self.dataset, self.bad_files = dataset, bad_files

    def __len__(self) -> int:
        return len(self.dataset)

    # What build_data and the device pipeline read of an image folder.
    samples = property(lambda self: self.dataset.samples)
    targets = property(lambda self: self.dataset.targets)
    classes = property(lambda self: self.dataset.classes)
    transform = property(lambda self: self.dataset.transform)


class ReplaceUnreadable(_FolderSplit):
    """A training split whose unreadable images are replaced by the next readable one (module doc),
    read with the same random state: the replacement gets the draws the bad image would have got."""

    def __getitem__(self, index: int) -> Any:
        for tried in range(len(self.dataset)):
            try:
                return self.dataset[(index + tried) % len(self.dataset)]
            except UnreadableImage as error:
                self.bad_files.record(error, "replaced by the next image of the folder in training")
        raise self.bad_files.too_many()  # every file is bad, and the limit is higher than their number


class LeaveOutUnreadable(_FolderSplit):
    """A test split whose unreadable images are items of None: `WithoutUnreadable` leaves them out of
    the batch, so the test error counts only the images that could be read."""

    def __getitem__(self, index: int) -> Any:
        try:
            return self.dataset[index]
        except UnreadableImage as error:
            self.bad_files.record(error, "left out of the test error")
            return None


class WithoutUnreadable:
    """A collate_fn that leaves out the items of unreadable test images; a batch of none is None.
    (A class, not a closure: DataLoader workers started by spawn get it pickled.)"""

    def __init__(self, collate: Callable | None):
        self.collate = collate or default_collate

    def __call__(self, batch: list) -> Any:
        readable = [item for item in batch if item is not None]
        return self.collate(readable) if readable else None
