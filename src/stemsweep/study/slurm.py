"""A study on SLURM: every stage submitted at once, chained by `afterany` dependencies, bound late.

Hydra launches one sweep and submitit offers a bare `dependency` flag: neither chains the stages of a
study (hydra #3201), so this module does. `submit_study` submits each sweep stage as job arrays (one per
model resources, split at the cluster's MaxArraySize) and `tune`/`report` as small CPU jobs, each
waiting `afterany` on what it needs. Never `afterok`: a job that fails under submitit can still end
COMPLETED, and an `afterok` dependency that fails never runs, even when its job is requeued and then
succeeds. A fine-tuning run waits on its own pre-training run's array task only (`afterany:JOB_TASK`).

A task is addressed by its place in its stage's grid (the grid does not depend on the tuned lr/wd):
when it starts (`StageTask`), it checks that what it needs is final, composes its run with the tuning
as it is then, and trains it like any run (skipped when done, resumed when broken, requeued on
preemption and time-out by submitit: the task is checkpointable).
"""

# First, before the imports below: a job unpickles this module before submitit installs its signal
# handlers, and SLURM's time-limit signal may already come (train/interrupt.py).
from stemsweep.train.interrupt import keep_start_up_signals

keep_start_up_signals()

import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from collections import defaultdict  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from stemsweep.study.cost import MeasuredSpeeds  # noqa: E402
from stemsweep.study.plan import plan_stage  # noqa: E402
from stemsweep.study.runner import StudyRecord  # noqa: E402
from stemsweep.study.spec import Study, load_study, stage_order  # noqa: E402
from stemsweep.sweep.plan import in_queue  # noqa: E402

# What `tune` and `report` ask for: a small CPU job.
SMALL_JOB = {"nodes": 1, "tasks_per_node": 1, "gpus_per_node": None, "cpus_per_task": 1, "mem_gb": 4,
             "timeout_min": 60}


def is_slurm(launcher: Any) -> bool:
    return "slurm" in str(launcher.get("_target_", "")).lower()


def launcher_settings(launcher: Any) -> dict[str, Any]:
    """A composed `hydra.launcher` as plain values, without the two that only a Hydra run resolves: its
    submitit_folder (${now:}; the study keeps its jobs' logs under runs_root/.studies/NAME/) and its
    job name (${hydra.job.name}; the study names each job STUDY.STAGE)."""
    from omegaconf import Container, OmegaConf

    settings = {}
    for key in launcher:
        if key in ("submitit_folder", "name"):
            continue
        value = launcher[key]
        settings[key] = OmegaConf.to_container(value, resolve=True) if isinstance(value, Container) else value
    return settings


def max_array_size() -> int:
    """The cluster's MaxArraySize (an array's highest index is one less); SLURM's default 1001 if unknown."""
    try:
        out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 1001
    found = re.search(r"^MaxArraySize\s*=\s*(\d+)", out, re.MULTILINE)
    return int(found.group(1)) if found else 1001


class StageTask:
    """One task of a stage, run where SLURM starts it (pickled by submitit). Checkpointable: submitit
    requeues it on preemption and time-out, and the run resumes from its checkpoint."""

    def __init__(self, study_path: str, stage: str, overrides: Sequence[str]):
        self.study_path, self.stage, self.overrides = study_path, stage, list(overrides)

    def __call__(self, index: int | None = None) -> Any:
        import logging

        from stemsweep.study.runner import StageFailed, run_stage_here

        logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
        study = load_study(self.study_path)
        try:
            return run_stage_here(study, study.stage(self.stage), self.overrides, index)
        except StageFailed as exc:
            print(f"stemsweep study: {exc}", file=sys.stderr, flush=True)  # the one line, atop the job's log
            raise

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def _executor(study: Study, runs_root: str, launcher: dict[str, Any], resources: dict[str, Any],
              dependency: list[str], name: str) -> Any:
    from hydra_plugins.stemsweep_plugins.slurm_launcher import slurm_executor

    params = {k: v for k, v in launcher.items() if k not in ("_target_", "wait", "resources", "submitit_folder")}
    params["name"] = name
    folder = str(Path(runs_root) / ".studies" / study.name / "%j")
    executor = slurm_executor(folder, params, resources)
    if dependency:
        executor.update_parameters(slurm_dependency="afterany:" + ":".join(dependency))
    return executor


def submit_study(study: Study, overrides: Sequence[str], study_settings: dict[str, Any],
                 hold: bool = False) -> dict[str, list[str]]:
    """Submit what is unfinished of every stage; returns {stage: job ids}. Dependencies name only jobs
    still in the queue (SLURM refuses one on a job that ended long ago). `study_settings`: the SLURM
    launcher's (runner.study_launcher), which tune and report use; `hold`: submitted held (`sbatch
    --hold`), for a dry run on a real cluster."""
    from hydra_plugins.stemsweep_plugins.slurm_launcher import job_resources
    from stemsweep.sweep.plan import slurm_queue

    runs_root = study.runs_root(overrides)
    record = StudyRecord(study, runs_root)
    typed = {o.partition("=")[0][len("hydra.launcher."):] for o in (*study.overrides, *overrides)
             if o.startswith("hydra.launcher.")}
    queued = slurm_queue()
    cap = max_array_size()
    measured = MeasuredSpeeds([])
    submitted: dict[str, list[str]] = {}
    task_of_run: dict[str, str] = {}  # signature → the array task that trains it, for fine-tuning runs
    for stage in stage_order(study):
        earlier = [j for j in record.stages.get(stage.name, {}).get("jobs", []) if in_queue(j, queued)]
        if earlier:  # still queued from an earlier submission: later stages depend on those
            submitted[stage.name] = earlier
            continue
        upstream = sorted({job.split("_")[0] for need in stage.needs for job in submitted.get(need, [])})
        plan = plan_stage(study, stage, overrides, measured) if stage.kind == "sweep" else None
        launcher = launcher_settings(plan.launcher) if plan else dict(study_settings)  # tune, report: the study's
        if hold:
            launcher["additional_parameters"] = {**(launcher.get("additional_parameters") or {}), "hold": True}
        task = StageTask(str(study.path.resolve()), stage.name, overrides)
        name = f"{study.name}.{stage.name}"
        ids: list[str] = []
        if stage.kind != "sweep":
            if record.stages.get(stage.name, {}).get("state") == "done" and not upstream:
                continue
            ids.append(_executor(study, runs_root, launcher, SMALL_JOB, upstream, name).submit(task).job_id)
        else:
            groups: dict[tuple, list[int]] = defaultdict(list)
            after_source: list[tuple[int, tuple, str]] = []
            waiting = {r.signature for r in plan.runs if r.status not in ("done", "diverged")}
            for index, run in enumerate(plan.runs):
                if run.status in ("done", "diverged"):
                    continue
                resources = job_resources(launcher.get("resources", "model"), run.config, typed)
                source = run.config.init_from
                if source in task_of_run or source in waiting:
                    after_source.append((index, resources, source))
                else:
                    groups[resources].append(index)
            for resources, indices in groups.items():
                executor = _executor(study, runs_root, launcher, dict(resources), upstream, name)
                for start in range(0, len(indices), cap):  # MaxArraySize caps an array's index
                    chunk = indices[start:start + cap]
                    for index, job in zip(chunk, executor.map_array(task, chunk)):
                        ids.append(job.job_id)
                        _submitted_run(runs_root, plan.runs[index].signature, job.job_id, task_of_run)
            for index, resources, source in after_source:  # each waits on its own source's task only
                own = [task_of_run[source]] if source in task_of_run else []
                executor = _executor(study, runs_root, launcher, dict(resources), [*upstream, *own], name)
                job = executor.submit(task, index)
                ids.append(job.job_id)
                _submitted_run(runs_root, plan.runs[index].signature, job.job_id, task_of_run)
        submitted[stage.name] = ids
        record.set(stage, state="submitted", jobs=ids, detail=None)
    return submitted


def _submitted_run(runs_root: str, signature: str | None, job: str, task_of_run: dict[str, str]) -> None:
    """A launch while this job is queued must not submit the run again (sweep/plan.live_runs)."""
    from stemsweep.record.rundir import RunDir

    if signature is None:  # after tune: the task finds its run when it starts
        return
    task_of_run[signature] = job
    run_dir = RunDir(runs_root, signature)
    run_dir.path.mkdir(parents=True, exist_ok=True)
    run_dir.slurm_job.write_text(f"{job}\n")


def wait_for(jobs: dict[str, list[str]]) -> None:
    """Until none of the jobs is in the queue any more (`wait=true`)."""
    import time

    from stemsweep.sweep.plan import slurm_queue

    pending = [j for ids in jobs.values() for j in ids]
    while True:
        queued = slurm_queue()
        if not any(in_queue(j, queued) for j in pending):
            return
        time.sleep(5)

