"""Atomic writes: a reader (or a process killed mid-write) never sees half a file. Files are created
with the user's umask (and a folder's default ACL), as any program's are, so that a team's runs folder
and a shared data set's kept index stay readable by the team."""

from __future__ import annotations

import errno
import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

TMP_SUFFIX = ".tmp"
# What a write on a full disk raises: no space left, or the user's quota used up (on clusters, as often).
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def atomic_replace(path: Path, write_to: Callable[[str], None], keep_previous: Path | None = None) -> None:
    """Call ``write_to(name)`` to write a temporary file beside ``path``, sync it to disk, then rename it
    over ``path``.

    With ``keep_previous`` the file being replaced is first renamed to that path: each rename is
    atomic, so at every moment a complete new file, or a complete previous one, exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temporary(path)
    try:
        write_to(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if keep_previous is not None and path.exists():
            os.replace(path, keep_previous)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _new_temporary(path: Path) -> str:
    """A new empty file beside `path`, created mode 0666 less the umask. (tempfile.mkstemp makes it
    0600 whatever the umask, and the rename keeps that mode: a record only its owner could read.)"""
    while True:
        name = str(path.parent / f".{path.name}.{secrets.token_hex(6)}{TMP_SUFFIX}")
        try:
            os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return name
        except FileExistsError:  # 2**-48 a try
            continue


def atomic_write(path: Path, write: Callable[[Any], None], binary: bool = False) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it over ``path``."""
    def write_to(name: str) -> None:
        with open(name, "wb" if binary else "w") as f:
            write(f)

    atomic_replace(path, write_to)


def remove_stale_temporaries(path: Path) -> None:
    """Delete what a process killed while writing ``path`` left beside it (its temporary files)."""
    for stale in path.parent.glob(f".{path.name}.*{TMP_SUFFIX}"):
        stale.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text))


def json_text(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=False) + "\n"


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json_text(obj))


def write_jsonl(path: Path, rows: list[dict]) -> None:
    write_text(path, "".join(json.dumps(row) + "\n" for row in rows))


def overwrite_in_place(path: Path, text: str) -> None:
    """Write `text` over the existing file `path` in place: where a full disk leaves no room for a
    temporary file, the blocks the file holds still take a text about its size. Not atomic, so only for
    a record that would otherwise not be written at all; a reader that finds it half written reads it as
    corrupt (a run's summary: RunDir.read_summary), not as another valid record."""
    with open(path, "r+b") as f:
        f.write(text.encode())
        f.truncate()
        f.flush()
        os.fsync(f.fileno())


def disk_full(exc: BaseException) -> OSError | None:
    """The full-disk error (DISK_FULL) that `exc` is, or that it was raised while handling; else None."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError) and exc.errno in DISK_FULL:
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None
