"""A run's training state and its checkpoint: the keys are written and read here, and only here.

The state is where the run is (epochs done, steps of the next epoch done), what the epoch has summed so
far, the per-epoch metrics, the clocks, and the modules it trains (model, EMA, optimizer). A checkpoint
written by older code reads the same way: one from before mid-epoch checkpoints has no `step`, one from
before the EMA kept its counts has the EMA's weights alone. `iters_per_epoch` says where the
checkpoint is in the run's steps (`global_step_of`: what a fine-tune's record names of its source).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from stemsweep.train.distributed import DistEnv, all_sum
from stemsweep.train.ema import ModelEma


@dataclass
class EpochTotals:
    """An epoch's sums over all processes so far."""

    loss_sum: float = 0.0  # the training loss times the images it was taken over
    wrong: float = 0.0  # training images classified wrongly
    seen: float = 0.0  # training images

    @property
    def train_loss(self) -> float:
        return self.loss_sum / max(self.seen, 1)

    @property
    def train_error(self) -> float:
        return 100.0 * self.wrong / max(self.seen, 1)


class EpochSums:
    """An epoch's running sums on the training device, added to after every step without a sync: one
    float64 tensor of (loss·n, wrong, n). A resumed epoch starts from its checkpoint's totals, counted
    once: on process 0."""

    def __init__(self, device: torch.device, env: DistEnv, start: EpochTotals):
        self.device, self.env = device, env
        self.values = torch.zeros(3, dtype=torch.float64, device=device)
        if start.seen and env.is_main:
            self.values += torch.tensor([start.loss_sum, start.wrong, start.seen], dtype=torch.float64,
                                        device=device)

    def add(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        n = labels.numel()
        self.values += torch.stack([loss.detach().double() * n, (logits.argmax(1) != labels).sum().double(),
                                    torch.tensor(float(n), dtype=torch.float64, device=self.device)])

    def totals(self) -> EpochTotals:
        """The sums over all processes (a collective: every process calls it at the same step)."""
        return EpochTotals(*all_sum(self.values.clone(), self.env).tolist())


@dataclass
class RunState:
    """Where a run is, what it has measured, and its clocks; `state_dict` is its part of a checkpoint."""

    epoch: int = 0  # epochs done
    step: int = 0  # steps of epoch `epoch` done (a checkpoint within an epoch), else 0
    sums: EpochTotals = field(default_factory=EpochTotals)  # epoch `epoch`'s totals after `step` steps
    epoch_seconds: float = 0.0  # training seconds of epoch `epoch` before this launch's part of it
    metrics: list[dict[str, Any]] = field(default_factory=list)  # one row per epoch done
    wall_before: float = 0.0  # wall seconds of the launches before this one
    launched: float = field(default_factory=time.monotonic)  # when this launch began training
    launch_step: int = 0  # the global step this launch began at
    epoch_started: float = field(default_factory=time.monotonic)  # when this launch began the epoch

    def global_step(self, steps_per_epoch: int) -> int:
        return self.epoch * steps_per_epoch + self.step

    def begin_launch(self, steps_per_epoch: int) -> None:
        self.launched, self.launch_step = time.monotonic(), self.global_step(steps_per_epoch)

    def begin_epoch(self) -> None:
        self.epoch_started = time.monotonic()

    def wall_time_s(self) -> float:
        """The run's wall time over all its launches."""
        return self.wall_before + time.monotonic() - self.launched

    def epoch_time_s(self) -> float:
        """The training seconds of the current epoch over all launches."""
        return self.epoch_seconds + time.monotonic() - self.epoch_started

    def within_epoch(self, step: int, sums: EpochTotals) -> None:
        """The position of a checkpoint within the epoch: after `step` steps, with these totals."""
        self.step, self.sums = step, sums

    def end_epoch(self, row: dict[str, Any]) -> None:
        self.metrics.append(row)
        self.epoch, self.step, self.sums, self.epoch_seconds = self.epoch + 1, 0, EpochTotals(), 0.0

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "step": self.step,
                "sums": [self.sums.loss_sum, self.sums.wrong, self.sums.seen],
                "epoch_seconds": self.epoch_time_s() if self.step else 0.0,
                "metrics": self.metrics, "wall_time_s": self.wall_time_s()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.metrics, self.wall_before = state["epoch"], state["metrics"], state["wall_time_s"]
        self.step = state.get("step", 0)  # none: a checkpoint from before mid-epoch ones, at an epoch's end
        if self.step:
            self.sums, self.epoch_seconds = EpochTotals(*state["sums"]), state["epoch_seconds"]
        else:
            self.sums, self.epoch_seconds = EpochTotals(), 0.0


@dataclass
class Built:
    """The modules a run trains; `state_dict` is their part of a checkpoint."""

    model: nn.Module
    ema: ModelEma | None
    optimizer: torch.optim.Optimizer
    channels_last: bool

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "ema": self.ema.state() if self.ema is not None else None,
                "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        if self.ema is not None:
            self.ema.load(_ema_state(state["ema"]))
        self.optimizer.load_state_dict(state["optimizer"])


def checkpoint_state(signature: str, state: RunState, built: Built, steps_per_epoch: int) -> dict[str, Any]:
    """The checkpoint of a run now: its signature, its RunState, its steps per epoch and its modules."""
    return {"signature": signature, **state.state_dict(), "iters_per_epoch": steps_per_epoch, **built.state_dict()}


def global_step_of(checkpoint: dict[str, Any]) -> int | None:
    """The steps the run had trained when the checkpoint was written; None for one written before
    checkpoints said their steps per epoch."""
    iters = checkpoint.get("iters_per_epoch")
    return None if iters is None else checkpoint["epoch"] * iters + checkpoint.get("step", 0)


def resume_from(checkpoint: dict[str, Any], state: RunState, built: Built) -> None:
    built.load_state_dict(checkpoint)
    state.load_state_dict(checkpoint)


def finetuning_weights(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The weights a fine-tuning run starts from: the source's EMA model, else its model."""
    ema = checkpoint.get("ema")
    return checkpoint["model"] if ema is None else _ema_state(ema)["weights"]


def _ema_state(ema: dict[str, Any]) -> dict[str, Any]:
    if "weights" not in ema:  # a checkpoint from before the EMA kept its counts: weights only
        return {"weights": ema, "updates": 1, "initial_share": 0.0}
    return ema
