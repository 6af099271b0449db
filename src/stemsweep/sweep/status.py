"""`stemsweep status`: where every run of a sweep or runs directory stands, also while jobs run."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from stemsweep.compose import sweep_file_problem
from stemsweep.config import SWEEPS_DIR
from stemsweep.errors import ConfigError
from stemsweep.plan.queue import in_queue, slurm_queue
from stemsweep.plan.runs import plan_sweep
from stemsweep.record.checkpoint import LAST_CHECKPOINT_NOT_WRITTEN
from stemsweep.record.rundir import CorruptRecord, RunDir
from stemsweep.record.summary import ema_else_model

COLUMNS = ["signature", "model", "stem", "optimizer", "epochs", "lr", "wd", "state", "done", "latest", "best",
           "bad", "restarts", "job", "log"]


def run_state(run: RunDir, summary: dict[str, Any] | None, queued: Callable[[], set[str]] = set) -> str:
    """The record's status, except that a `running` record whose lock no live process holds was
    interrupted (killed), and a `resumable` one (stopped by a signal after a checkpoint) whose SLURM
    job is back in the queue is `requeued`. Launched again, interrupted and resumable runs resume.
    A run without a record is `queued` while the SLURM job submitted for it is in the queue, `not
    started` once that job has left the queue without starting it (its log says why), else `pending`."""
    if summary is None:
        job = run.submitted_job()
        if job is None:
            return "pending"
        return "queued" if in_queue(job, queued()) else "not started"
    if summary["status"] == "running" and not run.is_locked():
        return "interrupted"
    if summary["status"] == "resumable" and summary.get("slurm_job_id") in queued():
        return "requeued"
    return summary["status"]


def restarts(summary: dict[str, Any]) -> str:
    """How often the run was interrupted, and the last time: cause, the step it stopped after, the
    steps that were lost (a hard kill loses those since its last checkpoint), where it resumed."""
    interruptions = summary.get("interruptions") or []
    if not interruptions:
        return "-"
    last = interruptions[-1]
    text = f"{len(interruptions)} (last: {last['cause']} at step {last.get('step', '?')}"
    if last.get("lost_steps"):
        text += f", {last['lost_steps']} steps lost"
    resumes = summary.get("resumes") or []
    if resumes and resumes[-1]["at"] >= last["at"]:
        text += f", resumed from step {resumes[-1]['from_global_step']}"
    return text + ")"


def status_row(run: RunDir, overrides: str = "", queued: Callable[[], set[str]] = set) -> dict[str, Any]:
    try:
        summary = run.read_summary()
    except CorruptRecord as exc:
        return {"signature": run.signature, "state": "corrupt", "log": str(exc)}
    if summary is None:
        return {"signature": run.signature, "state": run_state(run, None, queued), "model": overrides or None,
                "job": run.submitted_job() or "-"}
    state = run_state(run, summary, queued)
    latest = ema_else_model(summary, "final_ema_error")
    best = ema_else_model(summary, "best_ema_error")
    log = ""
    if state == "failed":
        log = summary.get("log_path") or str(run.error_log)
    elif state == "diverged":
        log = f"diverged at epoch {summary.get('diverged_epoch')}"
    elif state == "resumable" and (last := (summary.get("interruptions") or [{}])[-1]).get("cause") == \
            LAST_CHECKPOINT_NOT_WRITTEN:
        log = f"last checkpoint not written: {last.get('error')}"
    return {
        "signature": run.signature, "model": summary.get("model"), "stem": summary.get("stem") or "-",
        "optimizer": summary.get("optimizer"), "epochs": summary.get("epochs"),
        "lr": _number(summary.get("lr")), "wd": _number(summary.get("wd")), "state": state,
        "done": summary.get("epochs_done"), "latest": _pct(latest), "best": _pct(best),
        "bad": bad_files(summary),
        "restarts": restarts(summary), "job": summary.get("slurm_job_id") or "-", "log": log,
    }


def bad_files(summary: dict[str, Any]) -> str:
    """How many files of the data could not be read or decoded (the record names the first ones)."""
    count = (summary.get("bad_files") or {}).get("count")
    return str(count) if count else "-"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def status_rows(path: str) -> list[dict[str, Any]]:
    queued = functools.cache(slurm_queue)  # asked once, and only if some run needs it
    root = Path(path)
    if root.is_dir():
        return [status_row(RunDir(root, d.name), queued=queued) for d in sorted(root.iterdir())
                if d.is_dir() and not d.name.startswith(".")]
    return [status_row(RunDir(run.runs_root, run.planned_signature), " ".join(run.overrides), queued)
            for run in plan_sweep(path, []).runs]


def aligned(rows: list[dict[str, Any]], columns: Sequence[str]) -> list[str]:
    """The rows as text columns under their names, "-" where a row has no value."""
    cells = [[str(row.get(c, "") if row.get(c) is not None else "-") for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip()]
    return lines + ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in cells]


def format_table(rows: list[dict[str, Any]]) -> str:
    lines = aligned(rows, COLUMNS)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    tally = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    lines.append(f"{len(rows)} runs: {tally}" if rows else "0 runs")
    return "\n".join(lines)


def print_status(path: str) -> None:
    if not Path(path).is_dir():
        if not (SWEEPS_DIR / f"{path}.yaml").exists():
            raise ConfigError(f"{path} is neither a runs directory nor a sweep name in sweeps/")
        if problem := sweep_file_problem(path):
            raise ConfigError(problem)
    print(format_table(status_rows(path)))
