"""A study's own record, beside its runs: `runs_root/.studies/NAME.json`.

Per stage: its state, when it last ran and for how long, its SLURM jobs, why it could not start, the tasks
that refused; for a stage that runs in waves, each wave's decisions (study/adaptive.py). The runs' own
records (runs_root/SIGNATURE/) stay the source of truth for what trained; this says what the study did.
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from stemsweep.record.files import write_json
from stemsweep.study.spec import Stage, Study


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class StudyRecord:
    """runs_root/.studies/NAME.json: {stage: {state, started_utc, wall_s, detail, jobs}}. Several SLURM
    tasks of one study may write it at once: each change is read, made and written under a lock."""

    def __init__(self, study: Study, runs_root: str):
        self.path = Path(runs_root) / ".studies" / f"{study.name}.json"
        self.stages: dict[str, dict[str, Any]] = self._read()

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            return json.loads(self.path.read_text())["stages"]
        except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError):
            return {}

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def set(self, stage: Stage, **fields: Any) -> None:
        with self._locked():
            self.stages = self._read()
            self.stages[stage.name] = {**self.stages.get(stage.name, {}), **fields}
            write_json(self.path, {"stages": self.stages})

    def add_wave(self, stage: Stage, entry: dict[str, Any]) -> None:
        """Record a wave's decisions (study/adaptive.py), once: a wave decided before keeps its record."""
        with self._locked():
            self.stages = self._read()
            kept = self.stages.setdefault(stage.name, {})
            waves = kept.setdefault("waves", [])
            if len(waves) == entry["wave"]:
                waves.append(entry)
                write_json(self.path, {"stages": self.stages})
