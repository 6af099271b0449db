"""What a model's `resources` ask SLURM for: one task per GPU, so that each GPU gets its own DDP process."""

from hydra_plugins.stemsweep_plugins.slurm_launcher import slurm_parameters
from stemsweep.config import Resources


def test_a_gpu_model_gets_one_task_per_gpu_and_a_cpu_model_one_task():
    eight = slurm_parameters(Resources(gpus=8, nodes=2, cpus_per_task=10, mem_gb=480, timeout_min=4320))
    assert eight == {"nodes": 2, "tasks_per_node": 8, "gpus_per_node": 8, "cpus_per_task": 10, "mem_gb": 480,
                     "timeout_min": 4320}
    cpu = slurm_parameters(Resources())
    assert cpu["tasks_per_node"] == 1 and cpu["gpus_per_node"] is None
