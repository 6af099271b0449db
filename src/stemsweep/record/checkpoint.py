"""A run's checkpoint files: the latest and the one before it, each written atomically.

`checkpoint.pt` is the latest; writing a new one first renames the old one to `checkpoint.prev.pt`.
A checkpoint that cannot be read (a file cut short, a disk that filled up) is reported in one line
and the one before it is used, so a damaged file costs at most one checkpoint interval, never the run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from stemsweep.checkpoint_file import LATEST, PREVIOUS, CorruptCheckpoint, load_checkpoint
from stemsweep.record.files import atomic_replace, remove_stale_temporaries

log = logging.getLogger(__name__)

# The interruption's cause in the record of a run whose last checkpoint could not be written, and of one
# that stopped because a write of its record found the disk full.
LAST_CHECKPOINT_NOT_WRITTEN = "last checkpoint not written"
RECORD_NOT_WRITTEN = "record not written"


class NoFinalCheckpoint(Exception):
    """A run's final checkpoint is not on disk: a fine-tune's source has not finished (or could not write
    its last checkpoint), or this run could not write its own. The message, one line, says what to do: a
    single run exits with it, a sweep shows it and goes on with its other runs."""


class RecordNotWritten(NoFinalCheckpoint):
    """A write of a run's record (config, summary, metrics, checkpoint) found the disk full: the run
    stopped, recorded resumable where it could be. Handled as NoFinalCheckpoint is, with its own line."""


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` (a run's LATEST), keeping the file it replaces as PREVIOUS.

    torch.save is given the file's name, not a Python file object: through a file object it writes
    with the GIL held, and Python code in other threads barely runs meanwhile (docs/benchmarks.md,
    "Checkpoints")."""
    import torch

    atomic_replace(path, lambda name: torch.save(state, name), keep_previous=path.with_name(PREVIOUS))


def load_latest(run_path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The newest readable checkpoint of a run directory and its file name; (None, None) when there
    is none. Each unreadable file is logged as a warning, in one line, and skipped."""
    for name in (LATEST, PREVIOUS):
        try:
            return load_checkpoint(run_path / name), name
        except FileNotFoundError:
            continue
        except CorruptCheckpoint as exc:
            log.warning("%s; %s", exc, f"falling back to {PREVIOUS}" if name == LATEST else "it is skipped")
    return None, None


def remove_previous(run_path: Path) -> None:
    """A finished run needs its latest checkpoint only (fine-tuning starts from it)."""
    (run_path / PREVIOUS).unlink(missing_ok=True)
    remove_stale_temporaries(run_path / LATEST)
