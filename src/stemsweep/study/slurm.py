"""A study on SLURM: every stage submitted at once, chained by `afterany` dependencies, bound late.

Hydra launches one sweep and submitit offers a bare `dependency` flag: neither chains the stages of a
study (hydra #3201), so this module does, through the spine's one submitter (stemsweep.plan.submit):
each sweep stage is job arrays (one per model resources, `array_parallelism` on each, split at the
cluster's MaxArraySize), `tune` and `report` small CPU jobs, each waiting `afterany` on what it needs.
A fine-tune waits on its own source's task only, wherever that source's stage is.

Each task carries what it was planned to train (PlannedTask). When it starts (StageTask) it checks that
what it needs is final and that its place in the stage still holds that run, composes the run with the
tuning as it is then, and trains it like any run (skipped when done, resumed when broken, requeued on
preemption and time-out by submitit: the task is checkpointable). A task that cannot start leaves one
line in its job log and in the study's record, and ends.
"""

# First, before the imports below: a job unpickles this module before submitit installs its signal
# handlers, and SLURM's time-limit signal may already come (train/interrupt.py).
from stemsweep.train.interrupt import keep_start_up_signals

keep_start_up_signals()

import logging  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import submitit  # noqa: E402

from stemsweep.errors import ConfigError  # noqa: E402
from stemsweep.plan.launcher import LauncherSettings  # noqa: E402
from stemsweep.plan.queue import in_queue, slurm_queue  # noqa: E402
from stemsweep.plan.runs import PlannedRun  # noqa: E402
from stemsweep.plan.submit import SMALL_JOB, AllOf, Dependency, JobArray, Submission  # noqa: E402
from stemsweep.study.adaptive import active_cells  # noqa: E402
from stemsweep.study.plan import StagePlan, plan_study  # noqa: E402
from stemsweep.study.record import StudyRecord  # noqa: E402
from stemsweep.study.spec import Study, load_study, stage_order  # noqa: E402
from stemsweep.study.stages import DecideWave, PlannedTask, StageFailed, run_stage_here  # noqa: E402


class StageTask:
    """One task of a stage, run where SLURM starts it (pickled by submitit). Checkpointable: submitit
    requeues it on preemption and time-out, and the run resumes from its checkpoint."""

    def __init__(self, study_path: str, stage: str, overrides: Sequence[str]):
        self.study_path, self.stage, self.overrides = study_path, stage, list(overrides)

    def __call__(self, task: PlannedTask | DecideWave | None = None) -> Any:
        logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
        try:
            study = load_study(self.study_path)
            stage = study.stage(self.stage)
        except ConfigError as exc:  # the study file changed under the job
            print(f"stemsweep study: {exc}", file=sys.stderr, flush=True)
            return None
        try:
            return run_stage_here(study, stage, self.overrides, task)
        except (StageFailed, ConfigError) as exc:  # its line atop the job's log, in the study's record; no traceback
            print(f"stemsweep study: {exc}", file=sys.stderr, flush=True)
            record = StudyRecord(study, study.runs_root(self.overrides))
            if not isinstance(task, PlannedTask):
                record.set(stage, state="cannot start", detail=str(exc))
            else:
                refused = {**record.stages.get(stage.name, {}).get("refused", {}), str(task.index): str(exc)}
                record.set(stage, refused=refused, detail=f"{len(refused)} tasks refused; the last: {exc}")
            return None

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def study_submission(study: Study, overrides: Sequence[str], settings: LauncherSettings, hold: bool = False,
                     plans: list[StagePlan] | None = None) -> tuple[Submission, dict[str, dict[int, tuple[str, int]]]]:
    """The whole study's submission, as data (what `submit_study` commits): what is unfinished of every
    stage, and for a stage in waves which of its arrays is which wave. Dependencies name only jobs still
    in the queue (SLURM refuses one on a job that ended long ago)."""
    runs_root = study.runs_root(overrides)
    record = StudyRecord(study, runs_root)
    plans = plans if plans is not None else plan_study(study, overrides)
    by_name = {plan.stage.name: plan for plan in plans}
    queued = slurm_queue()
    submission = Submission(folder=str(Path(runs_root) / ".studies" / study.name / "%j"), settings=settings, hold=hold)
    waves_of: dict[int, tuple[str, int]] = {}  # array → (stage, wave), for a stage in waves
    decides_of: dict[int, tuple[str, int]] = {}  # the decision job of each wave
    after: dict[str, list[Dependency]] = {}  # each stage's jobs, for the stages after it
    known: dict[str, Dependency] = {}  # planned signature → the task (or queued job) that trains it
    holder = {run.planned_signature: plan.stage.name for plan in plans for run in plan.runs}
    for stage in stage_order(study):
        plan = by_name[stage.name]
        earlier = [j for j in record.stages.get(stage.name, {}).get("jobs", []) if in_queue(j, queued)]
        if earlier:  # still queued from an earlier submission: later stages depend on those
            after[stage.name] = sorted({j.split("_")[0] for j in earlier})
            for run in plan.runs:
                if run.run_dir is not None and (job := run.run_dir.submitted_job()) and in_queue(job, queued):
                    known[run.planned_signature] = job
            continue
        upstream = [dep for need in stage.needs for dep in after.get(need, [])]
        task = StageTask(str(study.path.resolve()), stage.name, overrides)
        name = f"{study.name}.{stage.name}"
        first = len(submission.arrays)
        if stage.kind != "sweep":
            if record.stages.get(stage.name, {}).get("state") == "done" and not upstream:
                continue
            submission.add(JobArray(name, SMALL_JOB, task, [()], [None], upstream, single=True, label=stage.name))
        else:
            def source_after(run: PlannedRun, needs=stage.needs) -> list[Dependency]:
                """A fine-tune waits on its source's task, not on the stage that holds its source."""
                return [dep for need in needs if need != holder.get(run.source or "") for dep in after.get(need, [])]

            _add_sweep_stage(submission, plan, StageArrays(name, task, known, source_after, stage.name), upstream,
                             waves_of, decides_of)
        after[stage.name] = [AllOf(k) for k in range(first, len(submission.arrays))]
    return submission, {"runs": waves_of, "decide": decides_of}


@dataclass(frozen=True)
class StageArrays:
    """What each array of a sweep stage shares: its job name, what its tasks call, the known tasks of runs
    (fine-tunes wait on their sources'), what a fine-tune waits on besides its source, its label."""

    name: str
    task: StageTask
    known: dict[str, Dependency]
    source_after: Callable[[PlannedRun], list[Dependency]]
    label: str


def _add_sweep_stage(submission: Submission, plan: StagePlan, arrays: StageArrays, upstream: list[Dependency],
                     waves_of: dict[int, tuple[str, int]], decides_of: dict[int, tuple[str, int]]) -> None:
    """A sweep stage's unfinished runs into the submission; a stage in waves as each wave's arrays after the
    decision job before it, and a decision job after each wave (a small CPU job: study/adaptive.py)."""
    index = {id(run): i for i, run in enumerate(plan.runs)}

    def add(runs: list[PlannedRun], waits: list[Dependency]) -> None:
        todo = [run for run in runs if not run.final]
        submission.add_runs(arrays.name, arrays.task, todo,
                            [(PlannedTask.of(index[id(r)], r, plan.waits_on),) for r in todo], after=waits,
                            known=arrays.known, source_after=arrays.source_after, label=arrays.label)

    if plan.waves is None:
        add(plan.runs, upstream)
        return
    waits = upstream
    active = active_cells(plan.waves, plan.recorded)
    for wave in range(len(plan.recorded), plan.waves.count if active else 0):
        start = len(submission.arrays)
        add(plan.waves.runs(wave, active), waits)
        waves_of.update({k: (arrays.label, wave) for k in range(start, len(submission.arrays))})
        decide = submission.add(JobArray(f"{arrays.name}.decide", SMALL_JOB, arrays.task, [(DecideWave(wave),)], [None],
                                         [AllOf(k) for k in range(start, len(submission.arrays))] or waits,
                                         single=True, label=arrays.label))
        decides_of[decide] = (arrays.label, wave)
        waits = [AllOf(decide)]


def submit_study(study: Study, overrides: Sequence[str], settings: LauncherSettings, hold: bool = False,
                 plans: list[StagePlan] | None = None) -> dict[str, list[str]]:
    """Submit what is unfinished of every stage, all or nothing; returns {stage: job ids} and records them
    in the study's record. `hold`: submitted held (`sbatch --hold`), for a dry run on a real cluster."""
    submission, arrays_of = study_submission(study, overrides, settings, hold, plans)
    submitted = submission.commit()
    record = StudyRecord(study, study.runs_root(overrides))
    jobs: dict[str, list[str]] = {}
    for array, array_jobs in zip(submission.arrays, submitted):
        jobs.setdefault(array.label, []).extend(job.job_id for job in array_jobs)
    wave_jobs: dict[str, dict[str, dict[str, str]]] = {}  # stage → wave → {planned signature: task}
    for k, (stage_name, wave) in arrays_of["runs"].items():
        by_run = wave_jobs.setdefault(stage_name, {}).setdefault(str(wave), {})
        by_run.update({run.planned_signature: job.job_id for run, job in zip(submission.arrays[k].runs, submitted[k])
                       if run is not None})
    decide_jobs: dict[str, dict[str, str]] = {}
    for k, (stage_name, wave) in arrays_of["decide"].items():
        decide_jobs.setdefault(stage_name, {})[str(wave)] = submitted[k][0].job_id
    for stage in stage_order(study):
        if stage.name in jobs:
            record.set(stage, state="submitted", jobs=jobs[stage.name], detail=None, refused={},
                       **({"wave_jobs": wave_jobs[stage.name], "decide_jobs": decide_jobs.get(stage.name, {})}
                          if stage.name in wave_jobs else {}))
    return jobs


def wait_for(jobs: dict[str, list[str]]) -> None:
    """Until none of the jobs is in the queue any more (`stemsweep study run --wait`)."""
    pending = [j for ids in jobs.values() for j in ids]
    while True:
        queued = slurm_queue()
        if not any(in_queue(j, queued) for j in pending):
            return
        time.sleep(5)
