"""The one SLURM submitter: planned runs → job arrays, as data, then submitted in one commit.

Dora's `shep.py` is the model (plan, then commit): a Submission is built first — one array per set of
resources, `array_parallelism` on each, split where the cluster's MaxArraySize caps an array, each
waiting `afterany` on what it needs; a fine-tune waits on its own source's task, so it is a single job —
and `commit` submits all of it or nothing: when sbatch refuses one array, what was submitted before it
is cancelled and no run folder is left behind. The plain SLURM launcher and the study both submit
through it (submitit's executor, which neither chains arrays nor splits them).

Never `afterok`: a job that fails under submitit can still end COMPLETED, and an `afterok` dependency
that fails never runs, even when its job is requeued and then succeeds.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import submitit

from stemsweep.errors import ConfigError
from stemsweep.plan.launcher import LauncherSettings
from stemsweep.plan.queue import max_array_size
from stemsweep.plan.runs import PlannedRun

# What a study's `tune` and `report` ask for: a small CPU job.
SMALL_JOB = {"nodes": 1, "tasks_per_node": 1, "gpus_per_node": None, "cpus_per_task": 1, "mem_gb": 4,
             "timeout_min": 60}
# hydra-submitit-launcher's BaseQueueConf keys: submitit takes them as they are, the others with "slurm_".
BASE_KEYS = ("submitit_folder", "timeout_min", "cpus_per_task", "gpus_per_node", "tasks_per_node", "mem_gb",
             "nodes", "name", "stderr_to_stdout")


class SubmitError(ConfigError):
    """The cluster refused a submission (one line: sbatch's); nothing of it stays queued."""


@dataclass(frozen=True)
class TaskOf:
    """A dependency on one task of an array of this submission (a fine-tune's source)."""

    array: int
    task: int


@dataclass(frozen=True)
class AllOf:
    """A dependency on every task of an array of this submission."""

    array: int


Dependency = str | TaskOf | AllOf  # str: a job already queued (1234, or a task 1234_5)


@dataclass
class JobArray:
    name: str  # the SLURM job name
    resources: dict[str, Any]  # on top of the launcher's parameters (a model's resources, SMALL_JOB)
    function: Callable[..., Any]  # what each task calls, pickled by submitit
    tasks: list[tuple[Any, ...]] = field(default_factory=list)  # each task's arguments
    runs: list[PlannedRun | None] = field(default_factory=list)  # the run each task trains, if any
    after: list[Dependency] = field(default_factory=list)  # afterany
    single: bool = False  # one plain job, not an array (a fine-tune that waits on its source's task)
    label: str = ""  # the caller's name for it (a study's stage)


@dataclass
class Submission:
    folder: str  # submitit's folder, with %j
    settings: LauncherSettings
    arrays: list[JobArray] = field(default_factory=list)
    hold: bool = False  # sbatch --hold: queued, not started (a dry run on a real cluster)

    def add(self, array: JobArray) -> int:
        self.arrays.append(array)
        return len(self.arrays) - 1

    def add_runs(self, name: str, function: Callable[..., Any], runs: Sequence[PlannedRun],
                 arguments: Sequence[tuple[Any, ...]], after: Sequence[Dependency] = (),
                 known: dict[str, Dependency] | None = None,
                 source_after: Callable[[PlannedRun], Sequence[Dependency]] | None = None,
                 label: str = "") -> dict[str, Dependency]:
        """Runs into arrays, one per set of resources, each after `after`. A fine-tune whose source is
        among `runs` or in `known` ({planned signature: its task here, or its job still queued}) is a
        single job after its source's task only (and after `source_after(run)`, when given, instead of
        `after`). Returns `known` with these runs' tasks added, for the fine-tunes of later arrays."""
        known = {} if known is None else known
        here = {run.planned_signature for run in runs}
        singles = [i for i, run in enumerate(runs) if run.source is not None and (run.source in known or
                                                                                  run.source in here)]
        groups: dict[tuple, list[int]] = {}
        for i, run in enumerate(runs):
            if i not in singles:
                groups.setdefault(run.resources, []).append(i)
        for resources, indices in groups.items():
            at = self.add(JobArray(name, dict(resources), function, [tuple(arguments[i]) for i in indices],
                                   [runs[i] for i in indices], list(after), label=label))
            known.update({runs[i].planned_signature: TaskOf(at, k) for k, i in enumerate(indices)})
        for i in singles:  # after the arrays, whose tasks they wait on
            run = runs[i]
            waits = list(source_after(run)) if source_after else list(after)
            source = known.get(run.source)  # type: ignore[arg-type]
            at = self.add(JobArray(name, dict(run.resources), function, [tuple(arguments[i])], [run],
                                   [*waits, *([source] if source is not None else [])], single=True, label=label))
            known[run.planned_signature] = TaskOf(at, 0)
        return known

    def lines(self, cap: int) -> list[str]:
        """What `commit` would submit, one line per sbatch (a dry run, and what tests assert on)."""
        out = []
        for k, array in enumerate(self.arrays):
            for chunk, parallel, after in self._chunks(k, cap):
                what = "1 job" if array.single else f"array of {len(chunk)} (%{parallel})"
                deps = ", ".join(_describe(d) for d in after) or "nothing"
                out.append(f"{array.name}: {what}, {dict(array.resources) or 'launcher resources'}, after {deps}")
        return out

    def _chunks(self, k: int, cap: int) -> list[tuple[list[int], int, list[Dependency]]]:
        """An array's sbatch calls: its tasks split at `cap` (MaxArraySize), its array_parallelism shared
        among the pieces, or the pieces one after another when there are more pieces than parallelism."""
        array = self.arrays[k]
        indices = list(range(len(array.tasks)))
        if array.single:
            return [(indices, 1, list(array.after))]
        pieces = [indices[i:i + cap] for i in range(0, len(indices), cap)] or []
        total = max(1, self.settings.parallel)
        if len(pieces) <= total:
            shares = [total // len(pieces) + (i < total % len(pieces)) for i in range(len(pieces))] if pieces else []
            return [(piece, share, list(array.after)) for piece, share in zip(pieces, shares)]
        chained = []
        for i, piece in enumerate(pieces):  # more pieces than runs at once: one piece after another
            chained.append((piece, total, list(array.after) + ([_Piece(k, i - 1)] if i else [])))
        return chained

    def commit(self) -> list[list[Any]]:
        """Submit every array, in order; returns each array's submitit jobs (an array task's id: 1234_5). A refusal
        cancels what was submitted and raises SubmitError with sbatch's line; only once all of it is
        queued does each run get its folder and its `slurm_job` file (what `status` and a later launch read)."""
        cap = max_array_size()
        ids: list[list[str]] = [[] for _ in self.arrays]
        submitted_jobs: list[list[Any]] = [[] for _ in self.arrays]
        piece_ids: dict[tuple[int, int], str] = {}
        try:
            for k, array in enumerate(self.arrays):
                for p, (chunk, parallel, after) in enumerate(self._chunks(k, cap)):
                    deps = [_resolve(d, ids, piece_ids) for d in after]
                    executor = self._executor(array, parallel, deps)
                    if array.single:
                        jobs = [executor.submit(array.function, *array.tasks[chunk[0]])]
                    else:
                        jobs = executor.map_array(array.function, *zip(*(array.tasks[i] for i in chunk)))
                    ids[k].extend(job.job_id for job in jobs)
                    submitted_jobs[k].extend(jobs)
                    piece_ids[(k, p)] = jobs[0].job_id.split("_")[0]
        except Exception as exc:  # noqa: BLE001 - sbatch's refusal comes as submitit's own errors
            submitted = [job for array_ids in ids for job in array_ids]
            if submitted:
                subprocess.run(["scancel", *sorted({j.split("_")[0] for j in submitted})], capture_output=True)
            raise SubmitError(f"SLURM refused the submission ({_first_error_line(exc)}); nothing of it stays "
                              f"queued{f' ({len(submitted)} jobs cancelled)' if submitted else ''}") from exc
        for array, array_ids in zip(self.arrays, ids):
            for run, job in zip(array.runs, array_ids):
                if run is not None and run.run_dir is not None:  # a launch while it is queued must not submit it again
                    run.run_dir.path.mkdir(parents=True, exist_ok=True)
                    run.run_dir.slurm_job.write_text(f"{job}\n")
        return submitted_jobs

    def _executor(self, array: JobArray, parallel: int, after: list[str]) -> Any:
        params = {**self.settings.submitit, "name": array.name, "array_parallelism": parallel}
        if self.hold:
            params["additional_parameters"] = {**(params.get("additional_parameters") or {}), "hold": True}
        executor = slurm_executor(self.folder, params, array.resources, self.settings.max_num_timeout)
        if after:
            executor.update_parameters(slurm_dependency="afterany:" + ":".join(after))
        return executor


@dataclass(frozen=True)
class _Piece:
    """A dependency on an earlier sbatch piece of the same array (chained pieces)."""

    array: int
    piece: int


def _resolve(dependency: Dependency | _Piece, ids: list[list[str]], piece_ids: dict[tuple[int, int], str]) -> str:
    if isinstance(dependency, str):
        return dependency
    if isinstance(dependency, _Piece):
        return piece_ids[(dependency.array, dependency.piece)]
    if isinstance(dependency, TaskOf):
        return ids[dependency.array][dependency.task]
    return ids[dependency.array][0].split("_")[0]  # AllOf: the array's own id covers each of its tasks


def _describe(dependency: Dependency | _Piece) -> str:
    if isinstance(dependency, str):
        return f"job {dependency}"
    if isinstance(dependency, _Piece):
        return f"piece {dependency.piece} of array {dependency.array}"
    if isinstance(dependency, TaskOf):
        return f"task {dependency.task} of array {dependency.array}"
    return f"array {dependency.array}"


def _first_error_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return next((line for line in lines if "error" in line.lower()), lines[0] if lines else type(exc).__name__)


def slurm_executor(folder: str, params: dict[str, Any], resources: dict[str, Any], max_num_timeout: int = 0) -> Any:
    """An executor with a launcher's parameters, a run's resources on top (as hydra-submitit-launcher
    does: BaseQueueConf's keys as they are, the others with submitit's "slurm_" prefix)."""
    executor = submitit.AutoExecutor(cluster="slurm", folder=folder, slurm_max_num_timeout=max_num_timeout)
    merged = {k: v for k, v in {**params, **resources}.items() if k != "submitit_folder"}
    executor.update_parameters(**{k if k in BASE_KEYS else f"slurm_{k}": v for k, v in merged.items()})
    return executor
