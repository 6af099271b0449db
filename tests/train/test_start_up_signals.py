"""SLURM's time-limit signal can come while a short job is still starting (its limits are checked on a
coarse tick, up to a minute early): the job keeps it and the run stops after its first step, instead of
the job dying of Python's default for USR1/USR2."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.processes

PROGRAM = textwrap.dedent("""
    import os, signal
    import hydra_plugins.stemsweep_plugins.slurm_launcher  # what a submitit job unpickles first
    os.kill(os.getpid(), signal.SIGUSR2)  # still starting: no handler of submitit's yet
    from stemsweep.train.interrupt import StopSignals
    with StopSignals() as stop:
        print("stop requested:", stop.requested, stop.name)
    with StopSignals() as again:  # acted on once
        print("again:", again.requested)
""")


def _run(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PROGRAM], env=env, capture_output=True, text=True, timeout=120)


def test_a_usr_signal_while_a_submitit_job_starts_stops_the_run_at_its_first_step(tmp_path):
    result = _run({**os.environ, "SUBMITIT_FOLDER": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["stop requested: True SIGUSR2", "again: False"], result.stdout


def test_outside_a_submitit_job_the_signal_keeps_its_default(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "SUBMITIT_FOLDER"}
    result = _run(env)
    assert result.returncode == -signal.SIGUSR2, result  # died of it, as before
    assert "stop requested" not in result.stdout
