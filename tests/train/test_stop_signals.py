"""A signal after the first while a run stops: a person asking twice ends it at once; under SLURM it is
SLURM's (it aborts the step after `scancel --full --signal=USR1`), and the stop checkpoint is written.
A signal to every process of the job reaches the DataLoader workers too: they leave it to the run."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from stemsweep.train import interrupt
from stemsweep.train.interrupt import StopSignals, started
from stemsweep.train.loop import data_loader


@pytest.fixture
def ended(monkeypatch) -> list[int]:
    """The signals the handler re-sent to end the process at once (recorded here instead)."""
    sent: list[int] = []
    monkeypatch.setattr(interrupt.os, "kill", lambda pid, signum: sent.append(signum))
    return sent


def test_under_slurm_a_sigterm_after_a_usr_signal_lets_the_checkpoint_be_written(monkeypatch, ended):
    monkeypatch.setenv("SLURM_JOB_ID", "1234")
    with StopSignals() as stop:
        signal.raise_signal(signal.SIGUSR1)
        signal.raise_signal(signal.SIGTERM)  # SLURM aborting the step
        assert ended == [] and stop.signum == signal.SIGUSR1  # the USR signal still decides how it ends
        signal.raise_signal(signal.SIGINT)  # Ctrl-C twice at an srun/salloc terminal: now
        assert ended == [signal.SIGINT]


def test_a_preemptions_usr2_before_the_checkpoint_decides_how_it_ends_and_the_record_names_its_sigterm(
        monkeypatch, ended):
    """SLURM preempts with SIGTERM, then USR2 a moment later: under load both can come within one step,
    before the record is written. The USR2 asks for the requeue; the record still names the SIGTERM."""
    monkeypatch.setenv("SLURM_JOB_ID", "1234")
    with StopSignals() as stop:
        signal.raise_signal(signal.SIGTERM)
        signal.raise_signal(signal.SIGUSR2)
        assert ended == [] and stop.signum == signal.SIGUSR2 and stop.name == "SIGTERM"


def test_outside_slurm_a_second_sigterm_ends_the_run_at_once(monkeypatch, ended):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    with StopSignals() as stop:
        signal.raise_signal(signal.SIGTERM)
        assert ended == [] and stop.signum == signal.SIGTERM
        signal.raise_signal(signal.SIGTERM)
        assert ended == [signal.SIGTERM]


class WorkerPids(torch.utils.data.Dataset):
    """Each item is the pid of the DataLoader worker that made it."""

    def __len__(self) -> int:
        return 1000

    def __getitem__(self, index: int) -> int:
        time.sleep(0.01)
        return os.getpid()


def test_a_dataloader_worker_leaves_stop_signals_to_its_training_process_and_ends_at_its_loaders_sigterm():
    """SLURM, `kill -- -PGID` and `timeout` signal the workers too: the training process decides. Only
    a SIGTERM from the loader's own process (PyTorch's `terminate()`, multiprocessing's at exit) ends one."""
    batches = started(data_loader(WorkerPids(), batch_size=None, num_workers=1))
    worker = next(batches)
    for name in ("TERM", "INT", "USR1", "USR2"):  # from another process, as SLURM's or `kill`'s
        subprocess.run(["kill", f"-{name}", str(worker)], check=True)
    time.sleep(0.5)
    assert alive(worker) and next(batches) == worker
    os.kill(worker, signal.SIGTERM)  # from this process, the loader's
    deadline = time.monotonic() + 10
    while alive(worker):
        assert time.monotonic() < deadline, "the worker outlived its loader's SIGTERM"
        time.sleep(0.05)


def alive(pid: int) -> bool:
    """Running: neither gone nor a zombie (its loader reaps it)."""
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(") ", 1)[1][0] != "Z"
