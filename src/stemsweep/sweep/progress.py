"""A sweep's progress while it runs: k of N runs ended, the failures so far, an ETA for the whole.

Hydra's launchers return whole batches (joblib's n_jobs at once, or all of a blocking SLURM sweep), so
the sweep cannot count its runs from what they return; it reads their records while they train instead.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timedelta

from stemsweep.plan.runs import PlannedRun
from stemsweep.record.rundir import ENDED

log = logging.getLogger(__name__)


class Progress:
    """Reads the records of `runs` every `every_s` seconds, in a thread, and logs one line each time
    more of them have ended (a status in ENDED written since the sweep started)."""

    def __init__(self, runs: Sequence[PlannedRun], every_s: float = 2.0):
        self.dirs = [run.run_dir for run in runs if run.run_dir is not None]
        self.every_s = every_s
        self.started = time.monotonic()
        self.before = {d.signature: self._mark(d) for d in self.dirs}  # what each record said at the start
        self.ended: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="stemsweep-progress", daemon=True)

    @staticmethod
    def _mark(run_dir) -> tuple[str | None, str | None]:
        summary = run_dir.summary_or_none()
        return (summary["status"], summary.get("updated")) if summary else (None, None)

    def __enter__(self) -> Progress:
        if self.dirs:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.check()  # the runs that ended since the last look

    def _watch(self) -> None:
        while not self._stop.wait(self.every_s):
            self.check()

    def check(self) -> None:
        newly = 0
        for run_dir in self.dirs:
            if run_dir.signature in self.ended:
                continue
            status, updated = mark = self._mark(run_dir)
            if status in ENDED and mark != self.before[run_dir.signature]:
                self.ended[run_dir.signature] = status
                newly += 1
        if newly:
            log.info("stemsweep: %s", self.line())

    def line(self) -> str:
        total, ended = len(self.dirs), len(self.ended)
        failed = sum(status == "failed" for status in self.ended.values())
        text = f"{ended} of {total} runs ended" + (f", {failed} failed" if failed else "")
        if ended < total:
            left = (time.monotonic() - self.started) / ended * (total - ended)
            finish = (datetime.now() + timedelta(seconds=left)).strftime("%H:%M")
            text += f"; {total - ended} to go, ETA {finish} (in {_duration(left)})"
        return text


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{max(minutes, 1)} min"
