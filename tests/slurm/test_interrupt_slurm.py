"""Preemption, signals, time-outs and requeues on the real local SLURM: the job stops after the step in
flight, writes a mid-epoch checkpoint, is requeued once and ends with the uninterrupted run's metrics,
in one W&B run. Sweeps are launched as a user does (`python -m stemsweep.run -m hydra/launcher=slurm`),
blocking, so the sweep itself must wait through the requeue. The four sweeps run side by side (the
node advertises 4 CPUs), each interrupted once it has trained 5 steps; the tests read what they left."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stemsweep.sweep.status import status_rows

pytestmark = pytest.mark.slurm

RUN = ["model=vit_xs", "stem=conv", "data.train_subset=1280", "data.test_subset=500", "batch_size=64",
       "threads=1", "epochs=2", "logger=wandb"]  # 20 steps an epoch
COMPARED = ("epoch", "train_loss", "train_error", "test_error", "ema_test_error", "lr")
ENV = {"WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "1"}


def summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def metrics(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    rows = map(json.loads, path.read_text().splitlines()) if path.exists() else []
    return [{k: row[k] for k in COMPARED} for row in rows]


def the_run(runs: Path) -> Path | None:
    found = [p for p in runs.iterdir() if p.is_dir() and not p.name.startswith(".")] if runs.exists() else []
    return found[0] if found else None


def trained_steps(run: Path | None) -> int:
    text = (run / "progress").read_text().split() if run and (run / "progress").exists() else []
    return int(text[0]) if text else 0


def scontrol(job: str) -> str:
    return subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> list[dict]:
    """The run's metrics trained in one go, locally (the launcher is not part of a run's identity)."""
    runs = tmp_path_factory.mktemp("uninterrupted")
    result = subprocess.run([sys.executable, "-m", "stemsweep.run", f"runs_root={runs}", *RUN, "logger=none"],
                            env={**os.environ, **ENV}, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return metrics(the_run(runs))


class BlockingSweep:
    """The sweep in a subprocess; `states` collects the run's `stemsweep status` state while it runs."""

    def __init__(self, tmp_path: Path, *overrides: str):
        self.runs, self.sweep_dir, self.output = tmp_path / "runs", tmp_path / "sweep", tmp_path / "sweep.out"
        cmd = [sys.executable, "-m", "stemsweep.run", "-m", "hydra/launcher=slurm", f"runs_root={self.runs}",
               f"hydra.sweep.dir={self.sweep_dir}", *RUN, *overrides]
        with self.output.open("w") as out:
            self.proc = subprocess.Popen(cmd, env={**os.environ, **ENV}, stdout=out, stderr=subprocess.STDOUT,
                                         text=True)
        self.states: list[str] = []
        self.run: Path | None = None
        self.job: str | None = None
        self.interrupted_after: int | None = None  # the steps trained when it was interrupted

    def poll(self) -> bool:
        """Look once: find the run and its job, note its state; True while the sweep runs."""
        self.run = self.run or the_run(self.runs)
        if self.run and (self.run / "summary.json").exists():
            self.job = self.job or summary(self.run)["slurm_job_id"]
            [row] = status_rows(str(self.runs))
            self.states.append(row["state"])
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        if self.job:
            subprocess.run(["scancel", self.job], check=False)

    def job_log(self) -> str:
        return (self.sweep_dir / "0" / "run.log").read_text()  # Hydra's job log, appended to by each start

    def tail(self) -> str:
        return self.output.read_text()[-3000:]


def preempt(job: str) -> None:
    """As SLURM delivers a preemption (SIGTERM, then USR2), with a gap: see tests/slurm/test_cluster.py."""
    subprocess.run(["scancel", "--signal=TERM", job], check=True)
    time.sleep(1)
    subprocess.run(["scancel", "--signal=USR2", job], check=True)


# USR1 to every process of the job: the run's process stops after it, the batch shell dies of it, and
# SLURM then aborts the step with SIGTERM while the run is about to write its checkpoint.
USR1_TO_THE_WHOLE_JOB = "scancel --full --signal=USR1"
INTERRUPTIONS = {  # how: (what is done to the running job, the cause the record gives)
    "preemption (TERM, then USR2)": (preempt, "preemption"),
    USR1_TO_THE_WHOLE_JOB: (lambda job: subprocess.run(["scancel", "--full", "--signal=USR1", job], check=True),
                            "preemption"),
    "scontrol requeue": (lambda job: subprocess.run(["scontrol", "requeue", job], check=True), "SIGTERM"),
}
TIME_OUT = "a 2-minute time limit"
EPOCHS_TIMED_OUT = 10  # ~32k images, 100+ s at ~300 images/s: longer than the 70 s a start can get


@pytest.fixture(scope="module")
def sweeps(slurm_cluster, tmp_path_factory) -> dict[str, BlockingSweep]:
    """Each way of interrupting a job, and a job shorter than its run, at once; all run to their end."""
    # `scancel --full` signals every process of the job, W&B's own service too, which USR1 ends: that run
    # logs nothing to W&B (its service would die with the signal, not the run).
    started = {how: BlockingSweep(tmp_path_factory.mktemp("interrupt"),
                                  *(["logger=none"] if how == USR1_TO_THE_WHOLE_JOB else []))
               for how in INTERRUPTIONS}
    # SLURM sends the time-limit signal on a coarse tick, up to 60 s earlier than asked: measured, a
    # 1-minute limit with the signal 30 s before it signals 0-30 s into a start, while the job may still be
    # importing; a 2-minute limit with signal_delay_s=50 signals 10-70 s in. The run needs longer than a
    # start. submitit counts each such stop against max_num_timeout (20).
    started[TIME_OUT] = BlockingSweep(tmp_path_factory.mktemp("timeout"), "data.train_subset=3200",
                                      f"epochs={EPOCHS_TIMED_OUT}", "hydra.launcher.timeout_min=2",
                                      "hydra.launcher.signal_delay_s=50")
    deadline = time.monotonic() + 600
    try:
        while [sweep.poll() for sweep in started.values()].count(True):
            for how, (interrupt, _) in INTERRUPTIONS.items():
                sweep = started[how]
                if sweep.interrupted_after is None and sweep.job and trained_steps(sweep.run) >= 5:
                    sweep.interrupted_after = trained_steps(sweep.run)
                    interrupt(sweep.job)  # vit_xs asks for 60 min: USR2 reads as a preemption, not a time-out
                    assert sweep.interrupted_after < 20, "the first epoch ended before the job was interrupted"
            assert time.monotonic() < deadline, {how: sweep.tail() for how, sweep in started.items()}
            time.sleep(0.2)
    finally:
        for sweep in started.values():
            sweep.stop()
    return started


@pytest.mark.parametrize("how", list(INTERRUPTIONS))
def test_an_interrupted_job_is_requeued_once_and_ends_as_if_never_interrupted(sweeps, how, uninterrupted):
    sweep, cause = sweeps[how], INTERRUPTIONS[how][1]
    assert sweep.proc.returncode == 0, sweep.tail()
    run, job = sweep.run, sweep.job
    s = summary(run)
    [stop] = s["interruptions"]
    assert stop["cause"] == cause and stop["lost_steps"] == 0 and stop["slurm_job_id"] == job, stop
    assert 5 <= stop["step"] < 20 and s["resumes"][-1]["from_global_step"] == stop["step"], s
    assert s["status"] == "done" and s["slurm_job_id"] == job
    got = metrics(run)
    assert len(got) == len(uninterrupted) == 2
    assert all(a == pytest.approx(b, rel=1e-6) for a, b in zip(got, uninterrupted)), (got, uninterrupted)
    assert "Restarts=1" in scontrol(job), scontrol(job)  # requeued once
    log = sweep.job_log()
    assert f"resuming {run.name} from checkpoint.pt after epoch 0, step {stop['step']}/20 of epoch 1" in log, log
    # `stemsweep status`: resumable or back in the queue, then training again, then done.
    stopped = [i for i, state in enumerate(sweep.states) if state in ("resumable", "requeued")]
    assert stopped and "running" in sweep.states[stopped[0]:], sweep.states
    [row] = status_rows(str(sweep.runs))
    assert row["state"] == "done"
    assert row["restarts"] == f"1 (last: {cause} at step {stop['step']}, resumed from step {stop['step']})"
    if how != USR1_TO_THE_WHOLE_JOB:  # one W&B run: each start opened (offline) the run whose id is the signature
        pieces = sorted((run / "wandb").glob("offline-run-*"))
        assert len(pieces) == 2 and all(p.name.endswith(f"-{run.name}") for p in pieces), pieces


def test_a_sigterm_from_slurm_while_the_run_stops_lets_it_write_its_checkpoint(sweeps):
    log = sweeps[USR1_TO_THE_WHOLE_JOB].job_log()  # the stop and requeue are checked above, as for the others
    assert "SIGTERM while the run stops: it writes its checkpoint first" in log, log


def test_a_job_shorter_than_its_run_is_signalled_before_its_time_limit_requeued_and_finishes(sweeps):
    sweep = sweeps[TIME_OUT]
    assert sweep.proc.returncode == 0, sweep.tail()
    s = summary(sweep.run)
    assert s["status"] == "done" and [m["epoch"] for m in metrics(sweep.run)] == list(range(1, EPOCHS_TIMED_OUT + 1))
    stops = s["interruptions"]
    assert stops and {stop["cause"] for stop in stops} == {"time-out"}, stops
    assert all(stop["lost_steps"] == 0 for stop in stops)
    assert len(s["resumes"]) == len(stops)
    restarts = int(re.search(r"Restarts=(\d+)", scontrol(sweep.job)).group(1))
    # One requeue per stop; one more where the signal came while the finished run's process was ending
    # (the requeued job then finds the run done).
    assert len(stops) <= restarts <= len(stops) + 1, (restarts, stops)
    assert sweep.job_log().count(f"epoch 1/{EPOCHS_TIMED_OUT}:") == 1, "epoch 1 was trained again"
    assert "TimeLimit=00:02:00" in scontrol(sweep.job)
