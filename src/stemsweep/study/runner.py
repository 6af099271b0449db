"""`stemsweep study run NAME`: the stages of a study in order, each once what it needs has ended.

A sweep stage is `python -m stemsweep.run -m …` in a child process (Hydra's multirun wants a process
of its own), so its launcher's behaviour is the sweep's: finished runs are skipped, broken ones resume.
Stopped (Ctrl-C, SIGTERM) and run again, the study goes on where it was. The study keeps its own
record beside its runs (`runs_root/.studies/NAME.json`): each stage's state, when it last ran and for
how long; `stemsweep study status` reads it with the runs' records.
"""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from stemsweep.config import ConfigError
from stemsweep.record.files import write_json
from stemsweep.study.plan import plannable_arguments, stage_arguments
from stemsweep.study.spec import Stage, Study, stage_order


class StageFailed(RuntimeError):
    """A stage that ended without its result; the message is one line naming it and what to do."""


class StudyRecord:
    """runs_root/.studies/NAME.json: {stage: {state, started_utc, wall_s, detail}}."""

    def __init__(self, study: Study, runs_root: str):
        self.path = Path(runs_root) / ".studies" / f"{study.name}.json"
        try:
            self.stages: dict[str, dict[str, Any]] = json.loads(self.path.read_text())["stages"]
        except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError):
            self.stages = {}

    def set(self, stage: Stage, **fields: Any) -> None:
        self.stages[stage.name] = {**self.stages.get(stage.name, {}), **fields}
        write_json(self.path, {"stages": self.stages})


def run_study(study: Study, overrides: Sequence[str] = ()) -> int:
    """Run the study: on SLURM every stage is submitted at once (study/slurm.py); with a local launcher
    the stages run here, in order. 0 when all ended (or were submitted), else non-zero."""
    launcher = study_launcher(study, overrides)
    if launcher is not None:
        return _submit(study, overrides, launcher)
    runs_root = study.runs_root(overrides)
    record = StudyRecord(study, runs_root)
    timings: list[tuple[str, str, float]] = []
    for stage in stage_order(study):
        started = time.monotonic()
        started_utc = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
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


def study_launcher(study: Study, overrides: Sequence[str]) -> dict[str, Any] | None:
    """The SLURM launcher's settings when the study's sweeps go to SLURM, else None (a local launcher)."""
    from stemsweep.study.slurm import is_slurm, launcher_settings
    from stemsweep.sweep.plan import compose_sweep

    stage = next((s for s in study.stages if s.kind == "sweep"), None)
    if stage is None:
        return None
    arguments, _ = plannable_arguments(study, stage, overrides)
    jobs, compose_job = compose_sweep(stage.sweep, arguments)
    launcher = compose_job.sweep_config.hydra.launcher
    return launcher_settings(launcher) if is_slurm(launcher) else None


def _submit(study: Study, overrides: Sequence[str], launcher: dict[str, Any]) -> int:
    from stemsweep.study.slurm import submit_study, wait_for

    jobs = submit_study(study, overrides, launcher)
    for stage in stage_order(study):
        ids = jobs.get(stage.name)
        print(f"{stage.name:18s} " + (f"{len(ids)} jobs: {', '.join(compact_jobs(ids))}" if ids else
                                      "nothing to submit"))
    if not launcher.get("wait", True):
        print(f"study {study.name}: submitted; follow it with `stemsweep study status {study.name}`")
        return 0
    print(f"study {study.name}: submitted; waiting for it to end (hydra.launcher.wait=false returns at once)")
    wait_for(jobs)
    problems = [f"{stage.name}: {stage_problem}" for stage in stage_order(study)
                if (stage_problem := StudyRecord(study, study.runs_root(overrides)).stages.get(stage.name, {})
                    .get("detail"))]
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


FINAL = ("done", "diverged")  # a result; anything else is work still to do or to fix


def upstream_problem(study: Study, stage: Stage, overrides: Sequence[str]) -> str | None:
    """One line when what `stage` needs is not final: which runs or stages, and the command that fixes it."""
    from stemsweep.study.cost import MeasuredSpeeds
    from stemsweep.study.plan import plan_stage

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
        plan = plan_stage(study, upstream, overrides, MeasuredSpeeds([]))
        if plan.waits_on_tune:
            return f"stage {stage.name} cannot start: stage {name} has not run (it waits on " \
                   f"{', '.join(plan.waits_on_tune)}); {fix}"
        open_runs = [r for r in plan.runs if r.status not in FINAL]
        if open_runs:
            listed = ", ".join(f"{r.signature} {r.status or 'not run'}" for r in open_runs[:5])
            more = f" and {len(open_runs) - 5} more" if len(open_runs) > 5 else ""
            return (f"stage {stage.name} cannot start: {len(open_runs)} runs of stage {name} are not final "
                    f"({listed}{more}); `stemsweep status {study.runs_root(overrides)}` names their logs, "
                    f"retry=true runs failed ones again; {fix}")
    return None


def run_stage_here(study: Study, stage: Stage, overrides: Sequence[str], index: int | None = None,
                   record: StudyRecord | None = None) -> Any:
    """One stage in this process (or one run of it: `index`, its place in the stage's grid, as a SLURM
    task runs it), once what it needs is final. Raises StageFailed with one line."""
    record = record or StudyRecord(study, study.runs_root(overrides))
    if problem := upstream_problem(study, stage, overrides):
        record.set(stage, state="cannot start", detail=problem)
        raise StageFailed(problem)
    if stage.kind == "sweep" and index is not None:
        return _run_one(study, stage, overrides, index)
    started = time.monotonic()
    if index is None:
        record.set(stage, state="running", detail=None,
                   started_utc=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    try:
        if stage.kind == "sweep":
            if _all_final(study, stage, overrides):
                record.set(stage, state="done", detail=None)
                return None
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


def _all_final(study: Study, stage: Stage, overrides: Sequence[str]) -> bool:
    """Whether every run of a sweep stage has its result already: then nothing is launched (a sweep
    process would only find them all done)."""
    from stemsweep.study.cost import MeasuredSpeeds
    from stemsweep.study.plan import plan_stage

    plan = plan_stage(study, stage, overrides, MeasuredSpeeds([]))
    final = not plan.waits_on_tune and all(run.status in FINAL for run in plan.runs)
    if final:
        print(f"  all {len(plan.runs)} runs have their result: nothing to launch", flush=True)
    return final


def _run_one(study: Study, stage: Stage, overrides: Sequence[str], index: int) -> Any:
    """Run number `index` of a sweep stage, composed now: with the tuning as `tune` wrote it."""
    from stemsweep.run import run
    from stemsweep.sweep.plan import compose_sweep

    # What trains is Hydra's own composition, not a kept one (sweep/kept.py): planning only reads those.
    jobs, compose_job = compose_sweep(stage.sweep, stage_arguments(study, stage, overrides), kept=False)
    return run(compose_job(jobs[index]))


class Interrupted(Exception):
    def __init__(self, signum: int):
        self.signum, self.name = signum, signal.Signals(signum).name


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
    from stemsweep.analysis.tune import write_tuning

    sweeps = [study.sweep_name(study.stage(name)) for name in stage.tune_from]
    try:
        tuned = write_tuning([runs_root], sweeps, stage.tuning_file)
    except (ValueError, FileNotFoundError) as exc:
        raise StageFailed(f"stage {stage.name} of study {study.name}: {exc}") from None
    print(tuned.to_string(index=False))
    print(f"tuning written to {stage.tuning_file} (tuning={stage.tuning})")


def _run_report(stage: Stage, runs_root: str) -> None:
    """export (if asked) then the report drawn from the export alone, so that anyone can regenerate it
    from the repository."""
    from stemsweep.analysis.export import export_runs
    from stemsweep.analysis.report import write_report

    source = runs_root
    try:
        if stage.export:
            count = export_runs([runs_root], stage.export)
            print(f"{count} runs exported to {stage.export}")
            source = stage.export
        write_report([source], stage.report_out)
    except (ValueError, FileNotFoundError) as exc:
        raise StageFailed(f"stage {stage.name}: {exc}") from None
    print(f"report written to {stage.report_out}/report.md")


def _append_wall_times(path: Path, timings: list[tuple[str, str, float]], overrides: Sequence[str]) -> None:
    """One row per stage run in this invocation (a resumed study records only what it ran)."""
    settings = dict(o.split("=", 1) for o in overrides if "=" in o)
    jobs, threads = settings.get("hydra.launcher.n_jobs", ""), settings.get("threads", "")
    new = not path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(["step", "started_utc", "wall_s", "jobs", "threads"])
        for name, started, wall in timings:
            writer.writerow([name, started, round(wall), jobs, threads])


def check_overrides(overrides: Sequence[str]) -> None:
    """Overrides as the run command takes them (KEY=VALUE, +KEY=VALUE, ~KEY): one line for anything else."""
    for override in overrides:
        if "=" not in override and not override.startswith("~"):
            raise ConfigError(f"override {override!r} is not allowed: give KEY=VALUE, as on the run command line")

