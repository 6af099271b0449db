"""Sweeps on the real local SLURM cluster, launched as a user does: `python -m stemsweep.run -m ...
hydra/launcher=slurm` in a subprocess (jobs inherit PATH, so they find the cluster's scontrol shim).

One detached, capped 2-run sweep is launched once per module and observed while it runs; several tests
read what it left. Preemption, time-outs and requeues: tests/slurm/test_interrupt_slurm.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest

from stemsweep.sweep.status import status_rows

pytestmark = pytest.mark.slurm

TINY = ["model=vit_xs", "data.train_subset=256", "data.test_subset=256", "batch_size=64", "threads=1",
        "logger=none", "epochs=2"]


def sweep(runs: Path, sweep_dir: Path, *overrides: str, output: Path | None = None):
    """`python -m stemsweep.run -m` on the SLURM launcher: a CompletedProcess, or, given a file for its
    output, a Popen left running."""
    cmd = [sys.executable, "-m", "stemsweep.run", "-m", "hydra/launcher=slurm", f"runs_root={runs}",
           f"hydra.sweep.dir={sweep_dir}", *TINY, *overrides]
    env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "1"}
    if output:
        with output.open("w") as out:
            return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def status_table(runs: Path) -> dict[str, str]:
    """The states `stemsweep status RUNS` shows, as {signature: state}."""
    return {row["signature"]: row["state"] for row in status_rows(str(runs))}


def summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def metrics(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def run_dirs(runs: Path) -> list[Path]:
    return sorted(p for p in runs.iterdir() if p.is_dir() and not p.name.startswith("."))


def submitted_jobs(sweep_dir: Path) -> set[str]:
    folder = sweep_dir / ".submitit"
    return {p.name for p in folder.iterdir()} if folder.exists() else set()


def scontrol(job: str) -> str:
    return subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout


@dataclass
class DetachedSweep:
    runs: Path
    sweep_dir: Path
    launch: subprocess.CompletedProcess
    queued_after_launch: str  # squeue right after the launch returned
    launched_again: subprocess.CompletedProcess  # the same sweep, launched again at once
    states: list[dict[str, str]] = field(default_factory=list)  # every status table seen while polling


@pytest.fixture(scope="module")
def detached_sweep(slurm_cluster, tmp_path_factory) -> DetachedSweep:
    """`stem=patch,conv` as one job array capped at 1 task at a time, detached; polled with
    `stemsweep status` until both runs are done."""
    root = tmp_path_factory.mktemp("detached")
    runs, sweep_dir = root / "runs", root / "sweep"
    launch = sweep(runs, sweep_dir, "stem=patch,conv", "hydra.launcher.array_parallelism=1",
                   "hydra.launcher.wait=false", "hydra.launcher.timeout_min=7")
    assert launch.returncode == 0, launch.stdout + launch.stderr
    jobs = re.search(r"submitted 2 jobs .*: (\d+)_0 \1_1", launch.stdout + launch.stderr)
    assert jobs, launch.stdout + launch.stderr
    queued = subprocess.run(["squeue", "-h", "-r", "-j", jobs.group(1), "-o", "%i %T"], capture_output=True,
                            text=True).stdout
    # the same sweep again, while both tasks are still in the queue
    again = sweep(runs, sweep_dir, "stem=patch,conv", "hydra.launcher.array_parallelism=1",
                  "hydra.launcher.wait=false", "hydra.launcher.timeout_min=7")
    seen = DetachedSweep(runs, sweep_dir, launch, queued, again)
    deadline = time.monotonic() + 240
    while True:
        seen.states.append(status_table(runs))
        if len(seen.states[-1]) == 2 and set(seen.states[-1].values()) == {"done"}:
            return seen
        assert time.monotonic() < deadline, f"not done in 240 s: {seen.states[-1]}\n{queued}"
        time.sleep(0.5)


def test_detached_launch_returns_while_jobs_queue_and_status_follows_them(detached_sweep):
    out = detached_sweep.launch.stdout + detached_sweep.launch.stderr
    assert "detached: 2 jobs queued" in out, out
    # It returned with both array tasks still in the queue (neither could have trained 2 epochs yet).
    assert len(detached_sweep.queued_after_launch.splitlines()) == 2, detached_sweep.queued_after_launch
    first = detached_sweep.states[0]
    assert len(first) == 2 and set(first.values()) <= {"queued", "running"}, first  # submitted, no record yet
    seen = [state for table in detached_sweep.states for state in table.values()]
    assert {"queued", "running", "done"} <= set(seen), seen


def test_relaunching_while_the_jobs_are_queued_submits_nothing_again(detached_sweep):
    out = detached_sweep.launched_again.stdout + detached_sweep.launched_again.stderr
    assert detached_sweep.launched_again.returncode == 0, out
    assert re.search(r"2 runs in the sweep: 0 skipped .*, 2 training or queued already, 0 to launch", out), out
    assert "submitted" not in out, out
    first = detached_sweep.launch.stdout + detached_sweep.launch.stderr
    jobs = re.search(r"submitted 2 jobs .*: (\d+_0) (\d+_1)", first)
    reasons = re.findall(r"is not launched again: (SLURM job \S+|training)", out)
    # queued (or, the first task, already started: its lock is held)
    assert len(reasons) == 2 and set(reasons) <= {"training", *(f"SLURM job {j}" for j in jobs.groups())}, out
    # each run was trained by a job of the first launch
    assert sorted(summary(run)["slurm_job_id"] for run in run_dirs(detached_sweep.runs)) == list(jobs.groups())


def test_array_parallelism_caps_the_array_at_one_running_task(detached_sweep):
    jobs = {summary(run)["slurm_job_id"] for run in run_dirs(detached_sweep.runs)}
    array_ids = {job.split("_")[0] for job in jobs}
    assert len(array_ids) == 1 and len(jobs) == 2, jobs  # one array: both runs have vit_xs's resources
    [array_id] = array_ids
    assert "ArrayTaskThrottle=1" in scontrol(array_id), scontrol(array_id)
    # The command line's timeout_min=7 wins over vit_xs's resources (60 min); its other keys stay.
    assert "TimeLimit=00:07:00" in scontrol(array_id) and "MinMemoryNode=2G" in scontrol(array_id), scontrol(array_id)
    # Never two running at once, as `stemsweep status` saw it and as SLURM's accounting has it.
    assert all(list(table.values()).count("running") <= 1 for table in detached_sweep.states)
    for _ in range(20):  # a task that just wrote its record may still be completing
        sacct = subprocess.run(["sacct", "-X", "-n", "-P", "-j", array_id, "-o", "JobID,Start,End"],
                               capture_output=True, text=True).stdout
        if "Unknown" not in sacct:
            break
        time.sleep(0.5)
    spans = sorted((datetime.fromisoformat(start), datetime.fromisoformat(end))
                   for _, start, end in (line.split("|") for line in sacct.split()))
    assert len(spans) == 2 and spans[1][0] >= spans[0][1], f"the tasks overlapped: {sacct}"


def test_every_run_of_the_sweep_has_a_complete_record_with_its_slurm_job(detached_sweep):
    runs = run_dirs(detached_sweep.runs)
    assert len(runs) == 2
    assert {summary(run)["stem"] for run in runs} == {"patch", "conv"}
    for run in runs:
        s = summary(run)
        assert s["status"] == "done" and s["epochs_done"] == 2 and s["signature"] == run.name, s
        assert [m["epoch"] for m in metrics(run)] == [1, 2]
        assert (run / "config.yaml").exists() and (run / "checkpoint.pt").exists()
        assert re.fullmatch(r"\d+_[01]", s["slurm_job_id"]), s["slurm_job_id"]
        log = Path(s["log_path"])  # submitit's log of the job that trained it
        assert log.is_file() and log.is_relative_to(detached_sweep.sweep_dir / ".submitit"), log
        assert s["slurm_job_id"] in log.name


def test_relaunching_a_finished_sweep_submits_nothing(detached_sweep):
    before = submitted_jobs(detached_sweep.sweep_dir)
    updated = {run.name: summary(run)["updated"] for run in run_dirs(detached_sweep.runs)}
    again = sweep(detached_sweep.runs, detached_sweep.sweep_dir, "stem=patch,conv",
                  "hydra.launcher.array_parallelism=1")
    out = again.stdout + again.stderr
    assert again.returncode == 0, out
    assert re.search(r"2 runs in the sweep: 2 skipped .*, 0 to launch", out), out
    assert "submitted" not in out and "#0 :" not in out, out  # the launcher was not called at all
    assert submitted_jobs(detached_sweep.sweep_dir) == before
    assert {run.name: summary(run)["updated"] for run in run_dirs(detached_sweep.runs)} == updated
