"""submitit on the real local SLURM cluster: a job, a capped job array, preemption + requeue + resume."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import cloudpickle
import pytest
import submitit
from submitit.helpers import Checkpointable

pytestmark = pytest.mark.slurm

# The job's Python cannot import this module (pytest put tests/slurm on sys.path, the job has not):
# pickle its functions and classes by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def executor(folder, cluster, **params) -> submitit.AutoExecutor:
    ex = submitit.AutoExecutor(folder=folder / "%j")  # fresh folder: ids + stale pickles never mix
    assert ex.cluster == "slurm"
    ex.update_parameters(slurm_partition=cluster.partition, cpus_per_task=1, mem_gb=1, **params)
    return ex


def square(x):
    return x * x


def timed_square(x, seconds):
    start = time.time()
    time.sleep(seconds)
    return x * x, start, time.time(), os.environ["SLURM_ARRAY_JOB_ID"], os.environ["SLURM_ARRAY_TASK_ID"]


def test_job_and_capped_array(slurm_cluster, tmp_path):
    ex = executor(tmp_path, slurm_cluster, timeout_min=5)
    assert ex.submit(square, 7).result() == 49

    assert slurm_cluster.cpus >= 3, "the cap below is only seen with room for more than 2 jobs"
    ex.update_parameters(slurm_array_parallelism=2)
    jobs = ex.map_array(timed_square, [1, 2, 3, 4], [2.0] * 4)
    results = [job.result() for job in jobs]

    assert [r[0] for r in results] == [1, 4, 9, 16]
    array_id = results[0][3]
    assert {r[3] for r in results} == {array_id} and sorted(r[4] for r in results) == ["0", "1", "2", "3"]
    info = subprocess.run(["scontrol", "show", "job", array_id], capture_output=True, text=True).stdout
    assert "ArrayTaskThrottle=2" in info, info
    most = max(sum(s <= t < e for _, s, e, *_ in results) for _, t, *_ in results)
    assert most <= 2, f"{most} array tasks ran at once despite slurm_array_parallelism=2"


class Counter(Checkpointable):
    """Counts to n, writing progress to a file; submitit pickles it (with its count) on preemption."""

    def __init__(self, progress_file):
        self.progress_file = progress_file
        self.count = 0
        self.starts = []  # (count when this run started, SLURM_RESTART_COUNT)

    def __call__(self, n, step_s):
        self.starts.append((self.count, os.environ.get("SLURM_RESTART_COUNT", "0")))
        while self.count < n:
            time.sleep(step_s)
            self.count += 1
            with open(self.progress_file, "w") as f:
                f.write(str(self.count))
        return self.count, self.starts


def preempt(job):
    """A preemption as SLURM delivers it (SIGTERM, then USR2), with a gap: job._interrupt() sends both
    back to back, and on one host a SIGTERM arriving after USR2 can kill submitit's
    `scontrol requeue` (the scontrol shim from local-slurm.sh guards against that too)."""
    subprocess.run(["scancel", "--signal=TERM", job.job_id], check=True)
    time.sleep(1)
    subprocess.run(["scancel", "--signal=USR2", job.job_id], check=True)


def test_preempt_requeue_resume(slurm_cluster, tmp_path):
    # timeout_min >= 15: with less, submitit reads every USR2 as a timeout rather than a preemption.
    ex = executor(tmp_path, slurm_cluster, timeout_min=60)
    progress = tmp_path / "progress"
    job = ex.submit(Counter(str(progress)), 12, 0.5)

    deadline = time.time() + 60
    while not (progress.exists() and int(progress.read_text() or 0) >= 3):
        assert time.time() < deadline, f"job {job.job_id} made no progress; state {job.state}"
        time.sleep(0.2)
    preempt(job)

    count, starts = job.result()
    assert count == 12
    assert len(starts) == 2, starts
    assert starts[0] == (0, "0")
    assert starts[1][0] >= 3 and starts[1][1] == "1", f"did not resume from the checkpoint: {starts}"
