"""Atomic writes: a reader (or a process killed mid-write) never sees half a file."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

TMP_SUFFIX = ".tmp"


def atomic_replace(path: Path, write_to: Callable[[str], None], keep_previous: Path | None = None) -> None:
    """Call ``write_to(name)`` to write a temporary file beside ``path``, sync it to disk, then rename it
    over ``path``.

    With ``keep_previous`` the file being replaced is first renamed to that path: each rename is
    atomic, so at every moment a complete new file, or a complete previous one, exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    os.close(fd)
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


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_jsonl(path: Path, rows: list[dict]) -> None:
    write_text(path, "".join(json.dumps(row) + "\n" for row in rows))
