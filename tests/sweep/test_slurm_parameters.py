"""The SLURM launcher: what a model's `resources` ask SLURM for (one task per GPU, so that each GPU gets its own
DDP process), and how a blocking launch waits for a job SLURM requeued."""

import pytest

from stemsweep.config import Resources
from stemsweep.plan.launcher import slurm_parameters


def test_a_gpu_model_gets_one_task_per_gpu_and_a_cpu_model_one_task():
    eight = slurm_parameters(Resources(gpus=8, nodes=2, cpus_per_task=10, mem_gb=480, timeout_min=4320))
    assert eight == {"nodes": 2, "tasks_per_node": 8, "gpus_per_node": 8, "cpus_per_task": 10, "mem_gb": 480,
                     "timeout_min": 4320}
    cpu = slurm_parameters(Resources())
    assert cpu["tasks_per_node"] == 1 and cpu["gpus_per_node"] is None


class RequeuedJob:
    """What submitit's Job does for a job read FAILED between its interrupted start and its requeue:
    results() raises UncompletedJobError until its cached states are cleared."""

    job_id = "4242_0"

    def __init__(self):
        self.cleared = 0
        self.watcher = self

    def clear(self):
        self.cleared += 1

    def results(self):
        from submitit.core.utils import UncompletedJobError

        if not self.cleared:
            raise UncompletedJobError("Job 4242_0 (task: 0) has not produced any output (state: FAILED)")
        return ["the run's result"]


def test_a_blocking_launch_waits_again_for_a_job_slurm_has_requeued(monkeypatch):
    import hydra_plugins.stemsweep_plugins.slurm_launcher as launcher
    from hydra_plugins.stemsweep_plugins.slurm_launcher import job_result

    monkeypatch.setattr(launcher, "slurm_queue", lambda: {"4242_0"})
    job = RequeuedJob()
    assert job_result(job) == "the run's result" and job.cleared == 1


def test_a_blocking_launch_reports_a_job_that_left_the_queue_failed(monkeypatch):
    from submitit.core.utils import UncompletedJobError

    import hydra_plugins.stemsweep_plugins.slurm_launcher as launcher
    from hydra_plugins.stemsweep_plugins.slurm_launcher import job_result

    monkeypatch.setattr(launcher, "slurm_queue", lambda: {"4243_0"})  # another job
    with pytest.raises(UncompletedJobError, match="state: FAILED"):
        job_result(RequeuedJob(), settle_s=0.1)
