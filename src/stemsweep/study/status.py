"""`stemsweep study status NAME`: one table, stage by stage, from the runs' records and the study's own."""

from __future__ import annotations

import functools
from collections.abc import Sequence

from stemsweep.plan.queue import in_queue, slurm_queue
from stemsweep.study.plan import study_plans
from stemsweep.study.record import StudyRecord
from stemsweep.study.runner import compact_jobs
from stemsweep.study.spec import Study, stage_order
from stemsweep.study.stages import decision_text
from stemsweep.sweep.status import aligned, run_state

COLUMNS = ("stage", "kind", "runs", "done", "diverged", "training", "queued", "failed", "to run", "cut", "state",
           "jobs", "waiting on / why")
COMPARISON_COLUMNS = ("comparison", "stage", "A", "B", "statistic", "replicates", "evidence", "threshold", "decision")
# Each run's state (sweep/status.run_state) → its column.
COLUMN_OF = {"done": "done", "diverged": "diverged", "running": "training", "queued": "queued",
             "requeued": "queued", "failed": "failed", "corrupt": "failed", "pending": "to run",
             "resumable": "to run", "interrupted": "to run", "not started": "to run"}


def study_rows(study: Study, overrides: Sequence[str] = ()) -> list[dict[str, str | None]]:
    record = StudyRecord(study, study.runs_root(overrides))
    queued = functools.cache(slurm_queue)
    plans = study_plans(study, overrides)
    rows = []
    for stage in stage_order(study):
        kept = record.stages.get(stage.name, {})
        row: dict[str, str | None] = {"stage": stage.name, "kind": stage.kind,
                                      "state": kept.get("state", "not started"),
                                      "waiting on / why": kept.get("detail"), "jobs": _jobs(kept.get("jobs"), queued)}
        unfinished = [n for n in stage.needs if not _done(study.stage(n), plans, record)]
        if unfinished and row["state"] == "not started":
            row["waiting on / why"] = "waiting on " + ", ".join(unfinished)
        if stage.kind == "sweep":
            plan = plans[stage.name]
            row["runs"] = str(len(plan.runs))
            if plan.waits_on_tune:
                row["waiting on / why"] = f"waiting on {', '.join(plan.waits_on_tune)} (no signatures before it)"
            else:
                columns = [COLUMN_OF[_state(run.run_dir, queued)] for run in plan.active_runs]
                row.update({c: str(columns.count(c)) for c in set(COLUMN_OF.values())})
                row["cut"] = str(len(plan.cut))  # never run: past a wave that stopped their cells
                if plan.runs and plan.final:  # done when its runs are, whatever was last recorded
                    row["state"] = "done"
                elif plan.waves is not None and plan.recorded:
                    row["waiting on / why"] = row["waiting on / why"] or \
                        f"wave {len(plan.recorded)} of {plan.waves.count} next"
        rows.append(row)
    return rows


def comparison_rows(study: Study, overrides: Sequence[str] = ()) -> list[dict[str, str | None]]:
    """Each comparison of an adaptive study, as its last decided wave left it."""
    record = StudyRecord(study, study.runs_root(overrides))
    rows = []
    for comparison in study.comparisons:
        waves = record.stages.get(comparison.stage, {}).get("waves", [])
        decision = waves[-1]["decisions"].get(comparison.name) if waves else None
        test = comparison.test
        row: dict[str, str | None] = {"comparison": comparison.name, "stage": comparison.stage, "A": test.a,
                                      "B": test.b, "statistic": test.statistic}
        if decision is None:
            row.update(replicates=f"0 of {test.max_replicates}", decision="no wave decided yet")
        else:
            row.update(replicates=f"{decision['n']} of {test.max_replicates}", evidence=f"{decision['evidence']:.3g}",
                       threshold=f"{decision['threshold']:.3g}", decision=decision_text(decision))
        rows.append(row)
    return rows


def _done(stage, plans, record: StudyRecord) -> bool:
    if stage.kind == "sweep":
        plan = plans[stage.name]
        return not plan.waits_on_tune and plan.final
    return record.stages.get(stage.name, {}).get("state") == "done"


def _state(run_dir, queued) -> str:
    summary = run_dir.summary_or_none()
    if summary is None and run_dir.summary.exists():
        return "corrupt"
    return run_state(run_dir, summary, queued)


def _jobs(ids: list[str] | None, queued) -> str | None:
    """The stage's SLURM jobs, an array as one entry, with how many of its tasks are still queued."""
    if not ids:
        return None
    waiting = sum(in_queue(job, queued()) for job in ids)
    return ", ".join(compact_jobs(ids)) + (f" ({waiting} in queue)" if waiting else "")


def format_study(rows: list[dict[str, str | None]], comparisons: list[dict[str, str | None]] = ()) -> str:
    lines = aligned(rows, COLUMNS)
    if comparisons:
        lines += ["", *aligned(list(comparisons), COMPARISON_COLUMNS)]
    return "\n".join(lines)
