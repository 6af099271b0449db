"""`stemsweep study run NAME`: the stages of a study in order, each once what it needs has ended.

With a local launcher the stages run here, one after another (study/stages.py); with a SLURM launcher every
stage is submitted at once and the command returns (study/slurm.py), or waits with `--wait`. Stopped
(Ctrl-C, SIGTERM) and run again, the study goes on where it was.
"""

from __future__ import annotations

import csv
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from stemsweep.compose import last_value, parse_override
from stemsweep.plan.launcher import LauncherSettings
from stemsweep.study.plan import plan_study
from stemsweep.study.record import StudyRecord
from stemsweep.study.slurm import submit_study, wait_for
from stemsweep.study.spec import Study, stage_order
from stemsweep.study.stages import Interrupted, StageFailed, run_stage_here, utc_now


def run_study(study: Study, overrides: Sequence[str] = (), wait: bool = False) -> int:
    """Run the study: on SLURM every stage is submitted at once (and waited for with `wait`); with a
    local launcher the stages run here, in order. 0 when all ended (or were submitted), else non-zero."""
    plans = plan_study(study, overrides)  # everything checked before anything runs or is queued
    launcher = next((p.launcher for p in plans if p.launcher is not None), None)
    if launcher is not None and launcher.is_slurm:
        return _submit(study, overrides, launcher, plans, wait)
    runs_root = study.runs_root(overrides)
    record = StudyRecord(study, runs_root)
    timings: list[tuple[str, str, float]] = []
    for stage in stage_order(study):
        started = time.monotonic()
        started_utc = utc_now()
        print(f"== study {study.name}: stage {stage.name} ({stage.kind})", flush=True)
        try:
            run_stage_here(study, stage, overrides, record=record)
        except StageFailed as exc:
            print(f"stemsweep study: {exc}", file=sys.stderr)
            return 1
        except Interrupted as exc:
            record.set(stage, state="stopped", detail=f"stopped by {exc.name}")
            print(f"stemsweep study: {study.name} stopped ({exc.name}) in stage {stage.name}; run "
                  f"`stemsweep study run {study.name}` again to go on where it was", file=sys.stderr)
            return 128 + exc.signum
        timings.append((stage.name, started_utc, time.monotonic() - started))
        if stage.kind == "report" and stage.export:
            _append_wall_times(Path(stage.export) / "wall_time.csv", timings, [*study.overrides, *overrides])
            timings.clear()
    print(f"study {study.name}: every stage done (record: {record.path})")
    return 0


def _submit(study: Study, overrides: Sequence[str], launcher: LauncherSettings, plans, wait: bool) -> int:
    jobs = submit_study(study, overrides, launcher, plans=plans)
    for stage in stage_order(study):
        ids = jobs.get(stage.name)
        print(f"{stage.name:18s} " + (f"{len(ids)} jobs: {', '.join(compact_jobs(ids))}" if ids else
                                      "nothing to submit"))
    if not wait:
        print(f"study {study.name}: submitted; follow it with `stemsweep study status {study.name}`")
        return 0
    print(f"study {study.name}: submitted; waiting for it to end")
    wait_for(jobs)
    record = StudyRecord(study, study.runs_root(overrides))
    problems = [f"{stage.name}: {detail}" for stage in stage_order(study)
                if (detail := record.stages.get(stage.name, {}).get("detail"))]
    for line in problems:
        print(f"stemsweep study: {line}", file=sys.stderr)
    return 1 if problems else 0


def compact_jobs(ids: list[str]) -> list[str]:
    """1234_0 … 1234_63 as 1234_[0-63]: one entry per array."""
    arrays: dict[str, list[str]] = {}
    for job in ids:
        parent, _, task = job.partition("_")
        arrays.setdefault(parent, []).append(task)
    return [parent if tasks == [""] else f"{parent}_[{len(tasks)} tasks]" for parent, tasks in arrays.items()]


def _append_wall_times(path: Path, timings: list[tuple[str, str, float]], overrides: Sequence[str]) -> None:
    """One row per stage run in this invocation (a resumed study records only what it ran)."""
    jobs, threads = last_value(overrides, "hydra.launcher.n_jobs") or "", last_value(overrides, "threads") or ""
    new = not path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(["step", "started_utc", "wall_s", "jobs", "threads"])
        for name, started, wall in timings:
            writer.writerow([name, started, round(wall), jobs, threads])


def check_overrides(overrides: Sequence[str]) -> None:
    """Overrides as the run command takes them (Hydra's grammar): one line for anything else."""
    for override in overrides:
        parse_override(override)

