"""Preemption, signals, time-outs and requeues on the real local SLURM, as a cluster delivers them: to
every process of the job, the run's DataLoader workers and W&B's service among them. Each run reads an
ImageNet-style folder with 2 DataLoader workers and logs to W&B (offline). It stops after the step in
flight, writes a mid-epoch checkpoint, is requeued (cancelled: launched again) and ends with the
uninterrupted run's metrics, every epoch in one W&B run that ends finished. Sweeps are launched as a
user does (`python -m stemsweep.run -m hydra/launcher=slurm`), blocking, so the sweep itself must wait
through the requeue. The sweeps run side by side (the node advertises 4 CPUs), each interrupted in its
second epoch, once W&B has had the first; the tests read what they left."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stemsweep.record.trackers import history_steps, transaction_log
from stemsweep.sweep.status import status_rows

pytestmark = pytest.mark.slurm

RUN = ["model=vit_xs", "stem=conv", "data=imagenet", "data.check_shape=false", "data.num_workers=2", "batch_size=64",
       "threads=1", "epochs=2", "logger=wandb"]  # 20 steps an epoch on the folder's 1280 training images
INTERRUPT_AT = 25  # steps trained: in epoch 2, after epoch 1 went to W&B
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


def assert_one_finished_wandb_run(run: Path, epochs: int, starts: int) -> None:
    """The run's W&B offline folders, one a start, all of one W&B run (the run's signature), hold every
    epoch once, and the last ends finished (exit code 0). Read with the tracker's reader of W&B's
    transaction logs, which tests/record/test_trackers.py checks against W&B's own."""
    pieces = sorted((run / "wandb").glob("offline-run-*"))  # by start time
    assert len(pieces) == starts and all(p.name.endswith(f"-{run.name}") for p in pieces), pieces
    logs = [piece / f"run-{run.name}.wandb" for piece in pieces]
    steps = [list(history_steps(log)) for log in logs]
    assert sorted(sum(steps, [])) == list(range(1, epochs + 1)), steps
    exits = [record.exit.exit_code for record in transaction_log(logs[-1]) if record.HasField("exit")]
    assert exits == [0], exits


class BlockingSweep:
    """The sweep in a subprocess; `states` collects the run's `stemsweep status` state while it runs.
    `name` names its Hydra sweep folder and output: a sweep launched again over the same runs."""

    def __init__(self, tmp_path: Path, *overrides: str, name: str = "sweep"):
        self.runs, self.sweep_dir, self.output = tmp_path / "runs", tmp_path / name, tmp_path / f"{name}.out"
        self.overrides = overrides
        cmd = [sys.executable, "-m", "stemsweep.run", "-m", "hydra/launcher=slurm", f"runs_root={self.runs}",
               f"hydra.sweep.dir={self.sweep_dir}", *RUN, *overrides]
        with self.output.open("w") as out:
            self.proc = subprocess.Popen(cmd, env={**os.environ, **ENV}, stdout=out, stderr=subprocess.STDOUT,
                                         text=True)
        self.states: list[str] = []
        self.run: Path | None = None
        self.job: str | None = None
        self.interrupted_after: int | None = None  # the steps trained when it was interrupted
        self.before: BlockingSweep | None = None  # the sweep this one launched again

    def poll(self) -> bool:
        """Look once: find the run and its job, note its state; True while the sweep runs."""
        self.run = self.run or the_run(self.runs)
        if self.run and (self.run / "summary.json").exists():
            submitted = (self.run / "slurm_job").read_text().strip()  # written as the launcher submits
            if self.before is None or submitted != self.before.job:  # launched again: its own job, once submitted
                self.job = submitted
            [row] = status_rows(str(self.runs))
            self.states.append(row["state"])
        return self.proc.poll() is None

    def launched_again(self) -> BlockingSweep:
        again = BlockingSweep(self.runs.parent, *self.overrides, name="again")
        again.before, again.interrupted_after = self, self.interrupted_after
        return again

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


def command(*args: str):
    return lambda job: subprocess.run([*args, job], check=True)


# Each reaches every process of the job step: the run's, its DataLoader workers, W&B's service and its
# system-metrics helper. `--full` reaches the batch shell too, which dies of USR1; SLURM then aborts
# the step with SIGTERM while the run is about to write its checkpoint. W&B's service ignores (keeps
# blocked) the USR signals and dies of SIGTERM.
USR1_TO_THE_WHOLE_JOB = "scancel --full --signal=USR1"
CANCELLED = "scancel"
INTERRUPTIONS = {  # how: (what is done to the running job, the cause the record gives, the signal it names)
    "preemption (TERM, then USR2)": (preempt, "preemption", "SIGTERM"),
    USR1_TO_THE_WHOLE_JOB: (command("scancel", "--full", "--signal=USR1"), "preemption", "SIGUSR1"),
    "scancel --signal=USR1": (command("scancel", "--signal=USR1"), "preemption", "SIGUSR1"),
    "scontrol requeue": (command("scontrol", "requeue"), "SIGTERM", "SIGTERM"),
    CANCELLED: (command("scancel"), "SIGTERM", "SIGTERM"),  # not requeued: launched again
}
TIME_OUT = "a 2-minute time limit"
# SLURM sends the time-limit signal on a coarse tick, up to 60 s earlier than asked: measured, a
# 1-minute limit with the signal 30 s before it signals 0-30 s into a start, while the job may still be
# importing; a 2-minute limit with signal_delay_s=50 signals 10-70 s in. The run needs longer than a
# start (~23k images, 75+ s at ~300 images/s). submitit counts each such stop against max_num_timeout (20).
EPOCHS_TIMED_OUT = 18
TIMED_OUT = [f"epochs={EPOCHS_TIMED_OUT}", "data.test_subset=100"]
TIME_LIMIT = ["hydra.launcher.timeout_min=2", "hydra.launcher.signal_delay_s=50"]


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """10 classes of 128 training and 20 test images, 32×32 JPEGs."""
    from stemsweep.data.imagenet import write_fashion_mnist_folder

    return write_fashion_mnist_folder(tmp_path_factory.mktemp("images"), num_classes=10, train_per_class=128,
                                      val_per_class=20, size=32)


def uninterrupted(tmp_path: Path, *overrides: str) -> subprocess.Popen:
    """The run trained in one go, locally (the launcher and the logger are not part of a run's identity)."""
    log = (tmp_path / "train.log").open("w")
    return subprocess.Popen([sys.executable, "-m", "stemsweep.run", f"runs_root={tmp_path}", *RUN, *overrides,
                             "logger=none"], env={**os.environ, **ENV}, stdout=log, stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def sweeps(slurm_cluster, image_folder, tmp_path_factory) -> dict[str, BlockingSweep | list[dict]]:
    """Each way of stopping a job, and a job shorter than its run, at once, and beside them the two runs
    trained without interruption; all run to their end. The cancelled run is launched again once its
    sweep has ended. Holds each sweep (the last launch) and, under "uninterrupted" and TIME_OUT +
    "uninterrupted", the references' metrics."""
    root = f"data.root={image_folder}"
    references = {"uninterrupted": tmp_path_factory.mktemp("uninterrupted"),
                  f"{TIME_OUT} uninterrupted": tmp_path_factory.mktemp("timeout-uninterrupted")}
    training = {name: uninterrupted(folder, root, *([] if name == "uninterrupted" else TIMED_OUT))
                for name, folder in references.items()}
    # The longest first: the node runs 4 jobs at once, the others wait for a place.
    started = {TIME_OUT: BlockingSweep(tmp_path_factory.mktemp("timeout"), root, *TIMED_OUT, *TIME_LIMIT)}
    started.update({how: BlockingSweep(tmp_path_factory.mktemp("interrupt"), root) for how in INTERRUPTIONS})
    deadline = time.monotonic() + 900
    try:
        while True:
            running = [sweep.poll() for sweep in started.values()]
            for how, (interrupt, _, _) in INTERRUPTIONS.items():
                sweep = started[how]
                if sweep.interrupted_after is None and sweep.job and trained_steps(sweep.run) >= INTERRUPT_AT:
                    sweep.interrupted_after = trained_steps(sweep.run)
                    interrupt(sweep.job)  # vit_xs asks for 60 min: USR2 reads as a preemption, not a time-out
                    assert sweep.interrupted_after < 40, "the run ended before its job was interrupted"
            cancelled = started[CANCELLED]
            if cancelled.before is None and cancelled.proc.poll() is not None:  # its state is noted: ended
                started[CANCELLED] = cancelled.launched_again()
            elif not any(running):
                break
            assert time.monotonic() < deadline, {how: sweep.tail() for how, sweep in started.items()}
            time.sleep(0.2)
    finally:
        for sweep in [*started.values(), started[CANCELLED].before]:
            if sweep is not None:
                sweep.stop()
    for name, proc in training.items():
        assert proc.wait(timeout=600) == 0, (references[name] / "train.log").read_text()[-3000:]
    return {**started, **{name: metrics(the_run(folder)) for name, folder in references.items()}}


@pytest.mark.parametrize("how", list(INTERRUPTIONS))
def test_a_job_signalled_in_all_its_processes_is_requeued_and_ends_as_if_never_interrupted(sweeps, how):
    sweep, (_, cause, signal) = sweeps[how], INTERRUPTIONS[how]
    assert sweep.proc.returncode == 0, sweep.tail()
    first = sweep.before or sweep  # the cancelled run's first launch
    run, job = sweep.run, first.job
    s = summary(run)
    [stop] = s["interruptions"]
    assert (stop["cause"], stop["signal"]) == (cause, signal), stop
    assert stop["lost_steps"] == 0 and stop["slurm_job_id"] == job and stop["epoch"] == 2, stop
    assert INTERRUPT_AT <= stop["step"] < 40 and s["resumes"][-1]["from_global_step"] == stop["step"], s
    assert s["status"] == "done" and s["slurm_job_id"] == sweep.job
    got, expected = metrics(run), sweeps["uninterrupted"]
    assert len(got) == len(expected) == 2
    assert all(a == pytest.approx(b, rel=1e-6) for a, b in zip(got, expected)), (got, expected)
    within = stop["step"] - 20
    assert f"resuming {run.name} from checkpoint.pt after epoch 1, step {within}/20 of epoch 2" in sweep.job_log()
    # `stemsweep status`: resumable or back in the queue, then training again, then done.
    states = first.states + (sweep.states if sweep.before else [])
    stopped = [i for i, state in enumerate(states) if state in ("resumable", "requeued")]
    assert stopped and "running" in states[stopped[0]:], states
    [row] = status_rows(str(sweep.runs))
    assert row["state"] == "done"
    assert row["restarts"] == f"1 (last: {cause} at step {stop['step']}, resumed from step {stop['step']})"
    assert_one_finished_wandb_run(run, epochs=2, starts=2)
    if how == CANCELLED:  # SLURM ended the job; its sweep said so, and the record stayed resumable
        assert first.proc.returncode != 0 and first.states[-1] == "resumable", (first.states, first.tail())
        assert "JobState=CANCELLED" in scontrol(job) and sweep.job != job
    else:
        assert "Restarts=1" in scontrol(job), scontrol(job)  # requeued once


def test_a_sigterm_from_slurm_while_the_run_stops_lets_it_write_its_checkpoint(sweeps):
    log = sweeps[USR1_TO_THE_WHOLE_JOB].job_log()  # the stop and requeue are checked above, as for the others
    assert "SIGTERM while the run stops: it writes its checkpoint first" in log, log


def test_a_job_shorter_than_its_run_is_signalled_before_its_time_limit_requeued_and_finishes(sweeps):
    sweep = sweeps[TIME_OUT]
    assert sweep.proc.returncode == 0, sweep.tail()
    s = summary(sweep.run)
    assert s["status"] == "done"
    got, expected = metrics(sweep.run), sweeps[f"{TIME_OUT} uninterrupted"]
    assert len(got) == len(expected) == EPOCHS_TIMED_OUT
    assert all(a == pytest.approx(b, rel=1e-6) for a, b in zip(got, expected)), (got, expected)
    stops = s["interruptions"]
    assert stops and {(stop["cause"], stop["signal"]) for stop in stops} == {("time-out", "SIGUSR2")}, stops
    assert all(stop["lost_steps"] == 0 for stop in stops)
    assert len(s["resumes"]) == len(stops)
    restarts = int(re.search(r"Restarts=(\d+)", scontrol(sweep.job)).group(1))
    # One requeue per stop; one more where the signal came while the finished run's process was ending
    # (the requeued job then finds the run done).
    assert len(stops) <= restarts <= len(stops) + 1, (restarts, stops)
    assert sweep.job_log().count(f"epoch 1/{EPOCHS_TIMED_OUT}:") == 1, "epoch 1 was trained again"
    assert "TimeLimit=00:02:00" in scontrol(sweep.job)
    assert_one_finished_wandb_run(sweep.run, epochs=EPOCHS_TIMED_OUT, starts=len(stops) + 1)
