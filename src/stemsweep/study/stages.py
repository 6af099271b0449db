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
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from stemsweep.compose import compose_sweep
from stemsweep.errors import ConfigError
from stemsweep.plan.launcher import LauncherSettings
from stemsweep.plan.runs import PlannedRun, plan_jobs
from stemsweep.record.decisions import decision_words, left_out_text
from stemsweep.record.rundir import ENDED
from stemsweep.run import run
from stemsweep.study.adaptive import active_cells, decide_wave, label
from stemsweep.study.plan import (
    Cells,
    StagePlan,
    job_overrides,
    pending_tunings,
    plan_stage,
    stage_arguments,
    study_plans,
    untuned_arguments,
    untuned_problem,
)
from stemsweep.study.record import StudyRecord, utc_now
from stemsweep.study.spec import Stage, Study


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
        open_runs = [r for r in plan.active_runs if not r.final]
        if not open_runs and not plan.final:  # in waves, with a wave still to decide
            return f"stage {stage.name} cannot start: stage {name} has waves still to run or decide; {fix}"
        if open_runs:
            listed = ", ".join(f"{r.signature} {r.status or 'not run'}" for r in open_runs[:5])
            more = f" and {len(open_runs) - 5} more" if len(open_runs) > 5 else ""
            return (f"stage {stage.name} cannot start: {len(open_runs)} runs of stage {name} are not final "
                    f"({listed}{more}); `stemsweep status {study.runs_root(overrides)}` names their logs, "
                    f"retry=true runs failed ones again; {fix}")
    return None


@dataclass(frozen=True)
class DecideWave:
    """What a stage's decision job does: decide wave `wave` of a stage in waves (study/adaptive.py)."""

    wave: int


def run_stage_here(study: Study, stage: Stage, overrides: Sequence[str],
                   task: PlannedTask | DecideWave | None = None, record: StudyRecord | None = None) -> Any:
    """One stage in this process (or one run of it: `task`, as a SLURM task runs it; or one of its wave
    decisions), once what it needs is final. Raises StageFailed with one line."""
    record = record or StudyRecord(study, study.runs_root(overrides))
    # the stages before this one, planned once; this one too where a task needs its waves
    in_waves = isinstance(task, DecideWave) or (task is not None and bool(study.comparisons_of(stage)))
    plans = study_plans(study, overrides, until=stage, through=in_waves)
    plan = plans.pop(stage.name, None)
    if isinstance(task, DecideWave):
        assert plan is not None
        return decide_waves_here(study, stage, overrides, plan, task.wave, record)
    if task is not None:
        planned, composed = bound_run(study, stage, overrides, task)
        if problem := upstream_problem(study, stage, overrides, plans, planned):
            raise StageFailed(problem)
        if plan is not None and task.planned_signature in plan.cut:  # its cell stopped after it was submitted
            print(f"stemsweep study: run {task.planned_signature} of stage {stage.name} is not trained: a wave "
                  "decision stopped its cell", flush=True)
            return None
        return run(composed)
    if problem := upstream_problem(study, stage, overrides, plans):
        record.set(stage, state="cannot start", detail=problem)
        raise StageFailed(problem)
    started = time.monotonic()
    record.set(stage, state="running", detail=None, started_utc=utc_now())
    try:
        if stage.kind == "sweep":
            plan = plan_stage(study, stage, overrides, pending=pending_tunings(study, plans))
            if study.comparisons_of(stage):
                _run_waves(study, stage, overrides, record)
            elif not plan.waits_on_tune and plan.final:
                print(f"  all {len(plan.runs)} runs have their result: nothing to launch", flush=True)
            else:
                _run_sweep(study, stage, overrides)
        elif stage.kind == "tune":
            _run_tune(study, stage, study.runs_root(overrides))
        else:
            _run_report(study, stage, overrides)
    except StageFailed as exc:
        record.set(stage, state="failed", detail=str(exc), wall_s=round(time.monotonic() - started))
        raise
    record.set(stage, state="done", detail=None, wall_s=round(time.monotonic() - started))
    return None


def _run_waves(study: Study, stage: Stage, overrides: Sequence[str], record: StudyRecord) -> None:
    """A stage in waves, here: each wave's runs of the cells still going (a sweep of those runs only),
    then its decisions, until every cell has stopped."""
    while True:
        plan = study_plans(study, overrides, until=stage, through=True)[stage.name]
        assert plan.waves is not None
        wave = len(plan.recorded)
        active = active_cells(plan.waves, plan.recorded)
        if wave >= plan.waves.count or not active:
            print(f"  every cell of stage {stage.name} has stopped", flush=True)
            return
        runs = plan.waves.runs(wave, active)
        print(f"  wave {wave}: {len(runs)} runs of {len(active)} cells", flush=True)
        if not all(run.final for run in runs):
            try:
                _run_sweep(study, stage, overrides, only=[run.planned_signature for run in runs])
            except StageFailed:
                after = study_plans(study, overrides, until=stage, through=True)[stage.name].waves
                if not all(run.status in ENDED for run in after.runs(wave, active)):  # type: ignore[union-attr]
                    raise  # a failed run is left out of the decision; anything else stops the study here
        decide_waves_here(study, stage, overrides, study_plans(study, overrides, until=stage, through=True)[stage.name],
                          wave, record)


def decide_waves_here(study: Study, stage: Stage, overrides: Sequence[str], plan: StagePlan, wave: int,
                      record: StudyRecord) -> None:
    """Decide the stage's waves up to `wave` that are not decided yet (they are in order), record each,
    print its decisions, and cancel the SLURM tasks of the cells it stopped in the waves after it."""
    from stemsweep.analysis.load import load_runs, with_error_before_divergence  # deferred: pandas

    assert plan.waves is not None
    recorded = list(plan.recorded)
    runs_root = study.runs_root(overrides)
    if recorded and not recorded[-1]["active"]:  # every cell stopped at an earlier wave: nothing to decide
        print(f"  every cell of stage {stage.name} stopped at wave {recorded[-1]['wave']}", flush=True)
        return
    while len(recorded) <= min(wave, plan.waves.count - 1):
        at = len(recorded)
        open_runs = [run for run in plan.waves.runs(at, active_cells(plan.waves, recorded))
                     if run.status not in ENDED]
        if open_runs:
            raise StageFailed(f"stage {stage.name} cannot decide wave {at}: {len(open_runs)} of its runs have no "
                              f"result (e.g. {open_runs[0].planned_signature} {open_runs[0].status or 'not run'}); "
                              f"run `stemsweep study run {study.name}` again once they have")
        table = load_runs(runs_root) if Path(runs_root).is_dir() else None
        if table is not None and study.diverged == "pycls":
            table = with_error_before_divergence(table, runs_root)
        entry = decide_wave(study, plan.waves, at, recorded, table)
        record.add_wave(stage, entry)
        recorded.append(entry)
        for name, decision in entry["decisions"].items():
            if decision["wave"] == at:
                print(f"  wave {at} ({entry['replicates']} {plan.waves.replicate}): {name}: "
                      f"{decision_text(decision)}", flush=True)
        cancel_stopped(record, stage, plan, entry)
        if not entry["active"]:
            return


def cancel_stopped(record: StudyRecord, stage: Stage, plan: StagePlan, entry: dict[str, Any]) -> None:
    """The SLURM tasks of later waves whose cells this decision stopped: cancelled before they start, so
    that they never take a GPU (their ids are in the study's record, `wave_jobs`)."""
    assert plan.waves is not None
    stopped = set(entry["stopped"]) | ({label(c) for c in plan.waves.cells} if not entry["active"] else set())
    jobs = record.stages.get(stage.name, {}).get("wave_jobs", {})
    cancel = [job for wave, by_run in jobs.items() if int(wave) > entry["wave"]
              for signature, job in by_run.items()
              if any(label(cell) in stopped and signature in {r.planned_signature for r in runs.values()}
                     for cell, runs in plan.waves.cells.items())]
    if not entry["active"]:  # the stage is over: its later decision jobs have nothing to decide
        cancel += [job for wave, job in record.stages.get(stage.name, {}).get("decide_jobs", {}).items()
                   if int(wave) > entry["wave"]]
    if cancel:
        subprocess.run(["scancel", *cancel], capture_output=True)
        print(f"  cancelled {len(cancel)} queued jobs of the stopped cells", flush=True)


def decision_text(decision: dict[str, Any]) -> str:
    """`A better after 24 (evidence 161 of 160)`, `open at 64 (evidence 3.2 of 160)`; with the replicates
    left out because their runs failed, if any."""
    evidence = f"evidence {decision['evidence']:.3g} of {decision['threshold']:.3g}"
    if left := left_out_text(decision):
        evidence += f"; {left}"
    return f"{decision_words(decision)} ({evidence})"


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


def _run_sweep(study: Study, stage: Stage, overrides: Sequence[str], only: Sequence[str] | None = None) -> None:
    """The stage's sweep in a child process (only the runs `only` names, a wave's, when given). SIGTERM is
    passed on to it (Ctrl-C reaches it from the terminal by itself), and the study waits until its runs
    have checkpointed."""
    selected = []
    if only is not None:
        listing = Path(study.runs_root(overrides)) / ".studies" / study.name / f"{stage.name}.runs"
        listing.parent.mkdir(parents=True, exist_ok=True)
        listing.write_text("".join(f"{signature}\n" for signature in only))
        selected = [f"hydra.sweeper.only={listing}"]
    command = [sys.executable, "-m", "stemsweep.run", "-m", *([f"+sweeps={stage.sweep}"] if stage.sweep else []),
               *stage_arguments(study, stage, overrides), *selected]
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


def _run_report(study: Study, stage: Stage, overrides: Sequence[str]) -> None:
    """export (if asked) then the report drawn from the export alone, so that anyone can regenerate it
    from the repository; an adaptive study's comparisons are added to it (study/report.py)."""
    runs_root = study.runs_root(overrides)
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
