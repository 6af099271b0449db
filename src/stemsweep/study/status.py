"""`stemsweep study status NAME`: one table, stage by stage, from the runs' records and the study's own."""

from __future__ import annotations

import functools
from collections.abc import Sequence

from stemsweep.record.rundir import RunDir
from stemsweep.study.cost import MeasuredSpeeds
from stemsweep.study.plan import plan_stage
from stemsweep.study.runner import StudyRecord
from stemsweep.study.spec import Study, stage_order
from stemsweep.sweep.status import aligned, run_state

COLUMNS = ("stage", "kind", "runs", "done", "diverged", "training", "queued", "failed", "to run", "state", "jobs",
           "waiting on / why")
# Each run's state (sweep/status.run_state, and `queued`: submitted, not started) → its column.
COLUMN_OF = {"done": "done", "diverged": "diverged", "running": "training", "queued": "queued",
             "requeued": "queued", "failed": "failed", "corrupt": "failed", "pending": "to run",
             "resumable": "to run", "interrupted": "to run"}


def study_rows(study: Study, overrides: Sequence[str] = ()) -> list[dict[str, str]]:
    from stemsweep.sweep.plan import slurm_queue

    runs_root = study.runs_root(overrides)
    record = StudyRecord(study, runs_root)
    measured = MeasuredSpeeds([])  # status shows no cost
    queued = functools.cache(slurm_queue)
    rows = []
    for stage in stage_order(study):
        kept = record.stages.get(stage.name, {})
        row = {"stage": stage.name, "kind": stage.kind, "state": kept.get("state", "not started"),
               "waiting on / why": kept.get("detail"), "jobs": _jobs(kept.get("jobs"), queued)}
        unfinished = [n for n in stage.needs if record.stages.get(n, {}).get("state") != "done"]
        if unfinished and row["state"] == "not started":
            row["waiting on / why"] = "waiting on " + ", ".join(unfinished)
        if stage.kind == "sweep":
            plan = plan_stage(study, stage, overrides, measured)
            if plan.waits_on_tune:
                row["waiting on / why"] = f"waiting on {', '.join(plan.waits_on_tune)} (no signatures before it)"
                row["runs"] = str(len(plan.runs))
            else:
                columns = [COLUMN_OF[_state(run.signature, runs_root, queued)] for run in plan.runs]
                row["runs"] = str(len(columns))
                row.update({c: str(columns.count(c)) for c in set(COLUMN_OF.values())})
        rows.append(row)
    return rows


def _state(signature: str, runs_root: str, queued) -> str:
    run = RunDir(runs_root, signature)
    summary = run.summary_or_none()
    if summary is None:
        if run.summary.exists():
            return "corrupt"
        job = run.submitted_job()
        return "queued" if job and job in queued() else "pending"
    return run_state(run, summary, queued)


def _jobs(ids: list[str] | None, queued) -> str | None:
    """The stage's SLURM jobs, an array as one entry, with how many of its tasks are still queued."""
    if not ids:
        return None
    from stemsweep.study.runner import compact_jobs

    waiting = sum(job in queued() for job in ids)
    return ", ".join(compact_jobs(ids)) + (f" ({waiting} in queue)" if waiting else "")


def format_study(rows: list[dict[str, str]]) -> str:
    return "\n".join(aligned(rows, COLUMNS))
