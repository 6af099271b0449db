"""A run's directory, ``runs_root/<signature>/``: its record files, its lock and its status."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from stemsweep.record.checkpoint import LATEST
from stemsweep.record.files import DISK_FULL, json_text, overwrite_in_place, write_json, write_jsonl, write_text
from stemsweep.record.summary import upgrade

log = logging.getLogger(__name__)

# resumable: stopped by a signal after writing a mid-epoch checkpoint; launched again, it resumes.
STATUSES = ("running", "resumable", "done", "failed", "diverged")
FINAL = ("done", "diverged")  # a result: launched again, such a run is not trained (diverged: only with retry)
RETRIED = ("failed", "diverged")  # trained again only with retry=true
ENDED = (*FINAL, "failed")  # ended: no process trains it, and launched again only a retry would


class CorruptRecord(ValueError):
    """A record file that exists but cannot be read; the message names the file."""


class RunDir:
    def __init__(self, runs_root: str | Path, signature: str):
        self.runs_root, self.signature = runs_root, signature
        self.path = Path(runs_root) / signature
        self.config = self.path / "config.yaml"
        self.metrics = self.path / "metrics.jsonl"
        self.summary = self.path / "summary.json"
        self.checkpoint = self.path / LATEST  # the latest checkpoint (record/checkpoint.py)
        self.progress = self.path / "progress"  # the last step trained, rewritten after every step
        self.lock_file = self.path / "lock"
        self.error_log = self.path / "error.log"
        self.slurm_job = self.path / "slurm_job"  # the SLURM job submitted to train it (written at submit)

    # --- reading -------------------------------------------------------------------------------
    def read_summary(self) -> dict[str, Any] | None:
        """The summary in this version's schema (record/summary.py's `upgrade`), or None when the run
        has none yet. A corrupt file raises CorruptRecord."""
        try:
            text = self.summary.read_text()
        except FileNotFoundError:
            return None
        try:
            summary = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CorruptRecord(f"{self.summary}: not valid JSON ({exc})") from exc
        if not isinstance(summary, dict) or summary.get("status") not in STATUSES:
            raise CorruptRecord(f"{self.summary}: no valid status (expected one of {', '.join(STATUSES)})")
        return upgrade(summary, config=self.config, signature=self.signature)

    def summary_or_none(self) -> dict[str, Any] | None:
        """The summary, or None when there is none or it is corrupt: launched again, such a run
        resumes from its checkpoint and rewrites it."""
        try:
            return self.read_summary()
        except CorruptRecord:
            return None

    def read_metrics(self) -> list[dict[str, Any]]:
        rows = []
        try:
            lines = self.metrics.read_text().splitlines()
        except FileNotFoundError:
            return rows
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise CorruptRecord(f"{self.metrics}:{number}: not valid JSON ({exc})") from exc
        return rows

    # --- writing (atomic) ----------------------------------------------------------------------
    def write_config(self, yaml_text: str) -> None:
        write_text(self.config, yaml_text)

    def write_metrics(self, rows: list[dict[str, Any]]) -> None:
        # Rewritten whole each epoch (a few hundred lines at most) so that it is replaced atomically.
        write_jsonl(self.metrics, rows)

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_json(self.summary, _stamped(summary))

    def write_summary_on_full_disk(self, summary: dict[str, Any]) -> str | None:
        """write_summary on a disk found full: atomically where that works again, else in place over the
        summary the run has (record/files.py, overwrite_in_place). None when written, else why not."""
        summary = _stamped(summary)
        try:
            write_json(self.summary, summary)
            return None
        except OSError:
            pass
        try:
            overwrite_in_place(self.summary, json_text(summary))
            return None
        except OSError as exc:
            return f"{type(exc).__name__}: {exc}"

    # --- the lock ------------------------------------------------------------------------------
    @contextmanager
    def lock(self) -> Iterator[bool]:
        """Hold the run's lock while training; yields False when another live process holds it.

        flock is released by the kernel when its holder dies, even by kill -9, so a stale lock from a
        killed process is simply taken over by the next launch.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o666)  # less the umask
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            os.ftruncate(fd, 0)
            try:
                os.write(fd, f"{socket.gethostname()} {os.getpid()}\n".encode())
            except OSError as exc:  # the lock holds all the same; the record's first write then says so
                if exc.errno not in DISK_FULL:
                    raise
            try:
                yield True
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def is_locked(self) -> bool:
        """Whether a live process holds the lock now (a status table's `running` vs `interrupted`)."""
        if not self.lock_file.exists():
            return False
        fd = os.open(self.lock_file, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        finally:
            os.close(fd)

    def lock_holder(self) -> str:
        try:
            return self.lock_file.read_text().strip()
        except FileNotFoundError:
            return ""

    def trained_steps(self) -> int | None:
        """The steps the last training process completed (its progress file), if it wrote one."""
        try:
            return int(self.progress.read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None

    def submitted_job(self) -> str | None:
        """The SLURM job id (e.g. 1234_5) the last launch submitted for this run, if any."""
        try:
            return self.slurm_job.read_text().strip() or None
        except FileNotFoundError:
            return None


def _stamped(summary: dict[str, Any]) -> dict[str, Any]:
    assert summary["status"] in STATUSES, summary["status"]
    return {**summary, "updated": datetime.now(timezone.utc).isoformat(timespec="seconds")}


class StepMarker:
    """Keeps `progress` saying how many steps the run has completed: one small write in place after
    every step (no sync, about a microsecond), so that a run resumed after a hard kill can count the
    steps it lost since its last checkpoint."""

    WIDTH = 20

    def __init__(self, path: Path):
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o666)  # less the umask

    def mark(self, steps: int) -> None:
        os.pwrite(self.fd, f"{steps:<{self.WIDTH}}\n".encode(), 0)

    def close(self) -> None:
        os.close(self.fd)
