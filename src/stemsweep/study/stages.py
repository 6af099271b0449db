"""One stage of a study, or one task of it, run in this process once what it needs is final.

The local runner calls `run_stage_here` stage after stage; on SLURM each job calls it (study/slurm.py)
with the task it was planned to train. A sweep stage here is `python -m stemsweep.run -m …` in a child
process (Hydra's multirun wants a process of its own), so its launcher's behaviour is the sweep's:
finished runs are skipped, broken ones resume. The study keeps its own record beside its runs
(`runs_root/.studies/NAME.json`): each stage's state, when it last ran and for how long, its jobs, and
why it could not start.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from omegaconf import DictConfig

from stemsweep.compose import compose_sweep
from stemsweep.errors import ConfigError
from stemsweep.plan.launcher import LauncherSettings
from stemsweep.plan.runs import PlannedRun, plan_jobs
from stemsweep.run import run
from stemsweep.study.plan import (
    Cells,
    StagePlan,
    job_overrides,
    pending_tunings,
    plan_stage,
    stage_arguments,
    untuned_arguments,
    untuned_problem,
)
from stemsweep.study.record import StudyRecord
from stemsweep.study.spec import Stage, Study, stage_order


class StageFailed(RuntimeError):
    """A stage that ended without its result; the message is one line naming it and what to do."""


class Interrupted(Exception):
    def __init__(self, signum: int):
        self.signum, self.name = signum, signal.Signals(signum).name


@dataclass(frozen=True)
class PlannedTask:
    """What a SLURM task of a sweep stage was planned to train: its place in the stage's grid, its
    overrides and its planned signature, computed with the tunings in `pending` taken as none. When it
    starts, another run at its place (a sweep, study or tuning file edited since) makes it refuse;
    the lr/wd that `tune` writes meanwhile are the one change it expects."""

    index: int
    overrides: tuple[str, ...]
    planned_signature: str
    pending: tuple[tuple[str, tuple[tuple[str, str, str], ...]], ...] = ()  # (tuning, its cells)

    @classmethod
    def of(cls, index: int, run: PlannedRun, pending: dict[str, Cells]) -> PlannedTask:
        return cls(index, run.overrides, run.planned_signature,
                   tuple((name, tuple(sorted(cells))) for name, cells in sorted(pending.items())))


def study_plans(study: Study, overrides: Sequence[str], until: Stage | None = None) -> dict[str, StagePlan]:
    """The plans of the study's sweep stages, in order, up to (not including) `until`."""
    plans: dict[str, StagePlan] = {}
    for stage in stage_order(study):
        if stage == until:
            break
        plans[stage.name] = plan_stage(study, stage, overrides, pending=pending_tunings(study, plans))
    return plans


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def upstream_problem(study: Study, stage: Stage, overrides: Sequence[str], plans: dict[str, StagePlan],
                     run: PlannedRun | None = None) -> str | None:
    """One line when what `stage` (or its task training `run`) needs is not final: which runs or stages,
    and the command that fixes it. A fine-tune needs its own source only, which its run checks itself."""
    record = StudyRecord(study, study.runs_root(overrides))
    fix = f"fix them and run `stemsweep study run {study.name}` again"
    for name in stage.needs:
        upstream = study.stage(name)
        if upstream.kind != "sweep":
            state = record.stages.get(name, {}).get("state", "not run")
            if state != "done":
                why = record.stages.get(name, {}).get("detail")
                return f"stage {stage.name} cannot start: stage {name} is {state}" + (f" ({why})" if why else "") + \
                    f"; {fix}"
            continue
        plan = plans[name]
        if run is not None and run.source is not None and any(r.planned_signature == run.source for r in plan.runs):
            continue
        if plan.waits_on_tune:
            return f"stage {stage.name} cannot start: stage {name} has not run (it waits on " \
                   f"{', '.join(plan.waits_on_tune)}); {fix}"
        open_runs = [r for r in plan.runs if not r.final]
        if open_runs:
            listed = ", ".join(f"{r.signature} {r.status or 'not run'}" for r in open_runs[:5])
            more = f" and {len(open_runs) - 5} more" if len(open_runs) > 5 else ""
            return (f"stage {stage.name} cannot start: {len(open_runs)} runs of stage {name} are not final "
                    f"({listed}{more}); `stemsweep status {study.runs_root(overrides)}` names their logs, "
                    f"retry=true runs failed ones again; {fix}")
    return None


def run_stage_here(study: Study, stage: Stage, overrides: Sequence[str], task: PlannedTask | None = None,
                   record: StudyRecord | None = None) -> Any:
    """One stage in this process (or one run of it: `task`, as a SLURM task runs it), once what it needs
    is final. Raises StageFailed with one line."""
    record = record or StudyRecord(study, study.runs_root(overrides))
    plans = study_plans(study, overrides, until=stage)
    if task is not None:
        planned, composed = bound_run(study, stage, overrides, task)
        if problem := upstream_problem(study, stage, overrides, plans, planned):
            raise StageFailed(problem)
        return run(composed)
    if problem := upstream_problem(study, stage, overrides, plans):
        record.set(stage, state="cannot start", detail=problem)
        raise StageFailed(problem)
    started = time.monotonic()
    record.set(stage, state="running", detail=None, started_utc=utc_now())
    try:
        if stage.kind == "sweep":
            plan = plan_stage(study, stage, overrides, pending=pending_tunings(study, plans))
            if not plan.waits_on_tune and plan.final:
                print(f"  all {len(plan.runs)} runs have their result: nothing to launch", flush=True)
            else:
                _run_sweep(study, stage, overrides)
        elif stage.kind == "tune":
            _run_tune(study, stage, study.runs_root(overrides))
        else:
            _run_report(stage, study.runs_root(overrides))
    except StageFailed as exc:
        record.set(stage, state="failed", detail=str(exc), wall_s=round(time.monotonic() - started))
        raise
    record.set(stage, state="done", detail=None, wall_s=round(time.monotonic() - started))
    return None


def bound_run(study: Study, stage: Stage, overrides: Sequence[str], task: PlannedTask) -> tuple[PlannedRun, DictConfig]:
    """The run a task trains now, with the tuning as `tune` wrote it, and its composed config; StageFailed
    with one line when its place in the stage now holds another run than the one planned."""
    arguments = stage_arguments(study, stage, overrides)
    pending = {name: set(cells) for name, cells in task.pending}
    jobs, composer = compose_sweep(stage.sweep, untuned_arguments(arguments, pending))
    found = jobs[task.index] if task.index < len(jobs) else None
    then = plan_jobs([found], composer, LauncherSettings(), after_tune=pending)[0] if found is not None else None
    if then is None or job_overrides(then.overrides, arguments) != task.overrides or \
            then.planned_signature != task.planned_signature:
        now = f"`{' '.join(job_overrides(found, arguments))}`" if found is not None else "nothing"
        raise StageFailed(f"task {task.index} of stage {stage.name} was planned to train `{' '.join(task.overrides)}` "
                          f"(run {task.planned_signature}), but its place now holds {now}: the sweep, study or tuning "
                          f"file changed after it was submitted; run `stemsweep study run {study.name}` again to "
                          "submit what the files say now")
    jobs, composer = compose_sweep(stage.sweep, arguments)
    [now] = plan_jobs([jobs[task.index]], composer, LauncherSettings())
    if problem := untuned_problem(study, stage, now, {}):
        raise StageFailed(problem)
    return now, composer(list(now.overrides))


def _run_sweep(study: Study, stage: Stage, overrides: Sequence[str]) -> None:
    """The stage's sweep in a child process. SIGTERM is passed on to it (Ctrl-C reaches it from the
    terminal by itself), and the study waits until its runs have checkpointed."""
    command = [sys.executable, "-m", "stemsweep.run", "-m",
               *([f"+sweeps={stage.sweep}"] if stage.sweep else []), *stage_arguments(study, stage, overrides)]
    print("  " + " ".join(command[1:]), flush=True)
    child = subprocess.Popen(command)
    received: list[int] = []

    def forward(signum, _frame):
        received.append(signum)
        child.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        code = child.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if received:
        raise Interrupted(received[0])
    if code != 0:
        raise StageFailed(f"stage {stage.name} of study {study.name}: its sweep exited with status {code} "
                          f"(`stemsweep status {study.runs_root(overrides)}` names the runs and their logs); fix "
                          f"it and run `stemsweep study run {study.name}` again: finished runs are skipped")


def _run_tune(study: Study, stage: Stage, runs_root: str) -> None:
    from stemsweep.analysis.tune import write_tuning  # deferred: pandas, which planning never needs

    sweeps = [study.sweep_name(study.stage(name)) for name in stage.tune_from]
    try:
        tuned = write_tuning([runs_root], sweeps, stage.tuning_file)
    except ConfigError as exc:
        raise StageFailed(f"stage {stage.name} of study {study.name}: {exc}") from None
    print(tuned.to_string(index=False))
    print(f"tuning written to {stage.tuning_file} (tuning={stage.tuning})")


def _run_report(stage: Stage, runs_root: str) -> None:
    """export (if asked) then the report drawn from the export alone, so that anyone can regenerate it
    from the repository."""
    # deferred: pandas and matplotlib, which planning never needs (seconds to import)
    from stemsweep.analysis.export import export_runs
    from stemsweep.analysis.report import write_report

    source = runs_root
    try:
        if stage.export:
            count = export_runs([runs_root], stage.export)
            print(f"{count} runs exported to {stage.export}")
            source = stage.export
        write_report([source], stage.report_out)
    except ConfigError as exc:
        raise StageFailed(f"stage {stage.name}: {exc}") from None
    print(f"report written to {stage.report_out}/report.md")
