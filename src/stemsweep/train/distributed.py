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


def broadcast_flag(flag: bool, env: DistEnv, device: torch.device) -> bool:
    """Rank 0's decision, for every rank."""
    if not env.enabled:
        return flag
    t = torch.tensor([int(flag)], device=device)
    dist.broadcast(t, src=0)
    return bool(t.item())


def shutdown(env: DistEnv) -> None:
    if env.enabled and dist.is_initialized():
        dist.destroy_process_group()


class StepAgreement:
    """Per-step decisions that every process takes at the same step (stop at a signal, write a
    checkpoint now), where each process sees its own flags (a signal arrives at different moments;
    the checkpoint clock is rank 0's).

    One process: the flags themselves. Several: an asynchronous all-reduce of the flags on a CPU
    (gloo) group, started after step n and read after step n + 1: no step waits on it, and all
    processes read the same values after the same step."""

    def __init__(self, env: DistEnv, flags: int):
        self.group = dist.new_group(backend="gloo") if env.enabled else None
        self.pending = None
        self.values = torch.zeros(flags, dtype=torch.int32)

    def __call__(self, *flags: bool) -> tuple[bool, ...]:
        if self.group is None:
            return flags
        agreed = (False,) * len(flags)
        if self.pending is not None:
            self.pending.wait()
            agreed = tuple(bool(v) for v in self.values.tolist())
        self.values = torch.tensor([int(f) for f in flags], dtype=torch.int32)
        self.pending = dist.all_reduce(self.values, group=self.group, async_op=True)
        return agreed

    def close(self) -> None:
        """Wait for the reduce in flight (every process must have called as often)."""
        if self.pending is not None:
            self.pending.wait()
            self.pending = None


def barrier(env: DistEnv) -> None:
    if env.enabled:
        dist.barrier()
