"""Data-parallel processes: started by torchrun, or as SLURM tasks (srun / submitit)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def _export_slurm_env() -> None:
    """Several SLURM tasks and no torchrun: derive torch's variables from SLURM's (submitit does it)."""
    import submitit

    submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def init_distributed(device_type: str) -> DistEnv:
    if "RANK" not in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        _export_slurm_env()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistEnv()
    env = DistEnv(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(env.local_rank)
        dist.init_process_group(backend=backend, rank=env.rank, world_size=env.world_size)
    return env


def all_sum(values: torch.Tensor, env: DistEnv) -> torch.Tensor:
    if env.enabled:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def shutdown(env: DistEnv) -> None:
    if env.enabled and dist.is_initialized():
        dist.destroy_process_group()


class AnyProcess:
    """Flags that every process reads alike, each True where any process set it: a stop signal arrives
    at different moments on each process, the checkpoint clock and the run's lock are process 0's.

    One process: the flags themselves. Several: an all-reduce of the flags on a CPU (gloo) group, so
    that no flag waits on the device's stream. `now` waits for the answer. `after_next_step` is for
    the decisions taken after every step (stop, checkpoint): the reduce started after step n is read
    after step n + 1, so no step waits on it, and all processes read the same values after the same
    step (it answers all False the first time). Every process must make the same calls in the same
    order."""

    def __init__(self, env: DistEnv):
        self.group = dist.new_group(backend="gloo") if env.enabled else None
        self.pending: tuple[dist.Work, torch.Tensor] | None = None

    def now(self, *flags: bool) -> tuple[bool, ...]:
        if self.group is None:
            return flags
        values = self._values(flags)
        dist.all_reduce(values, group=self.group)
        return tuple(bool(v) for v in values.tolist())

    def after_next_step(self, *flags: bool) -> tuple[bool, ...]:
        if self.group is None:
            return flags
        agreed = (False,) * len(flags)
        if self.pending is not None:
            agreed = self._wait()
        values = self._values(flags)
        self.pending = dist.all_reduce(values, group=self.group, async_op=True), values
        return agreed

    def close(self) -> None:
        """Wait for the reduce in flight (every process must have called as often)."""
        if self.pending is not None:
            self._wait()

    def _wait(self) -> tuple[bool, ...]:
        work, values = self.pending
        work.wait()
        self.pending = None
        return tuple(bool(v) for v in values.tolist())

    @staticmethod
    def _values(flags: tuple[bool, ...]) -> torch.Tensor:
        return torch.tensor([int(f) for f in flags], dtype=torch.int32)


def barrier(env: DistEnv) -> None:
    if env.enabled:
        dist.barrier()
