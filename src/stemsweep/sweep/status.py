"""`stemsweep status`: where every run of a sweep or runs directory stands, also while jobs run."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from stemsweep.record.rundir import CorruptRecord, RunDir

COLUMNS = ["signature", "model", "stem", "optimizer", "epochs", "lr", "wd", "state", "done", "latest", "best",
           "job", "log"]


def run_state(run: RunDir, summary: dict[str, Any] | None) -> str:
    """The record's status, except that a `running` record whose lock no live process holds was
    interrupted (killed, preempted, timed out): launching it again resumes it."""
    if summary is None:
        return "pending"
    if summary["status"] == "running" and not run.is_locked():
        return "interrupted"
    return summary["status"]


def status_row(run: RunDir, overrides: str = "") -> dict[str, Any]:
    try:
        summary = run.read_summary()
    except CorruptRecord as exc:
        return {"signature": run.signature, "state": "corrupt", "log": str(exc)}
    if summary is None:
        return {"signature": run.signature, "state": "pending", "model": overrides or None,
                "job": run.submitted_job() or "-"}
    state = run_state(run, summary)
    latest = _ema_else_model(summary, "final")
    best = _ema_else_model(summary, "best")
    log = ""
    if state == "failed":
        log = summary.get("log_path") or str(run.error_log)
    elif state == "diverged":
        log = f"diverged at epoch {summary.get('diverged_epoch')}"
    return {
        "signature": run.signature, "model": summary.get("model"), "stem": summary.get("stem") or "-",
        "optimizer": summary.get("optimizer"), "epochs": summary.get("epochs"),
        "lr": _number(summary.get("lr")), "wd": _number(summary.get("wd")), "state": state,
        "done": summary.get("epochs_done"), "latest": _pct(latest), "best": _pct(best),
        "job": summary.get("slurm_job_id") or "-", "log": log,
    }


def _ema_else_model(summary: dict[str, Any], which: str) -> float | None:
    """The EMA model's error, the model's where EMA is off (the record holds null, not no key)."""
    error = summary.get(f"{which}_ema_error")
    return summary.get(f"{which}_error") if error is None else error


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def status_rows(path: str) -> list[dict[str, Any]]:
    root = Path(path)
    if root.is_dir():
        return [status_row(RunDir(root, d.name)) for d in sorted(root.iterdir())
                if d.is_dir() and not d.name.startswith(".")]
    from stemsweep.sweep.plan import compose_sweep, plan_runs

    jobs, compose_job = compose_sweep(path, [])
    return [status_row(RunDir(run.runs_root, run.signature), " ".join(run.overrides))
            for run in plan_runs(jobs, compose_job)]


def format_table(rows: list[dict[str, Any]]) -> str:
    cells = [[str(row.get(c, "") if row.get(c) is not None else "-") for c in COLUMNS] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(COLUMNS)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in cells]
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    tally = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    lines.append(f"{len(rows)} runs: {tally}" if rows else "0 runs")
    return "\n".join(lines)


def print_status(path: str) -> int:
    if not Path(path).is_dir() and not (Path(__file__).resolve().parents[3] / "sweeps" / f"{path}.yaml").exists():
        print(f"stemsweep status: error: {path} is neither a runs directory nor a sweep name in sweeps/",
              file=sys.stderr)
        return 2
    print(format_table(status_rows(path)))
    return 0
