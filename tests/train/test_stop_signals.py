"""A signal after the first while a run stops: a person asking twice ends it at once; under SLURM it is
SLURM's (it aborts the step after `scancel --full --signal=USR1`), and the stop checkpoint is written."""

from __future__ import annotations

import signal

import pytest

from stemsweep.train import interrupt
from stemsweep.train.interrupt import StopSignals


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


def test_outside_slurm_a_second_sigterm_ends_the_run_at_once(monkeypatch, ended):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    with StopSignals() as stop:
        signal.raise_signal(signal.SIGTERM)
        assert ended == [] and stop.signum == signal.SIGTERM
        signal.raise_signal(signal.SIGTERM)
        assert ended == [signal.SIGTERM]
