"""Checkpoints written beside training, and another run's weights for fine-tuning.

A checkpoint is written at every epoch end, every `checkpoint.every_min` minutes / `every_steps` steps
within an epoch, and when a signal stops the run (record/checkpoint.py has the files themselves).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import torch

from stemsweep.record.checkpoint import save_checkpoint

log = logging.getLogger(__name__)


class CheckpointWriter:
    """Saves checkpoints, in a background thread when training runs on a GPU.

    In the background, `save` copies the state to host memory, the only part the training step waits
    for (a device-to-host copy on a GPU), and returns; serialising, fsync and the renames go on beside
    training, whose CPU threads mostly wait on the GPU. When training runs on the CPU its threads use
    every core and a writer thread competes with them: there a save is written in the training thread,
    which costs the step less (docs/benchmarks.md, "Checkpoints"). One write at a time: a save first
    waits for the one before. A failed write (a full disk) is logged and the previous checkpoint stays;
    training goes on.
    """

    def __init__(self, path: Path, background: bool = True):
        self.path, self.background = path, background
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def save(self, state: dict[str, Any], wait: bool = False) -> None:
        self.wait()
        if not self.background:  # training waits for the write: the state cannot change, no copy
            self._write(state)
            self.wait()  # logs a failed write
            return
        snapshot = host_copy(state)
        # Not a daemon: a process that exits normally first finishes the write it started.
        self._thread = threading.Thread(target=self._write, args=(snapshot,), name="checkpoint-writer")
        self._thread.start()
        if wait:
            self.wait()

    def _write(self, snapshot: dict[str, Any]) -> None:
        try:
            save_checkpoint(self.path, snapshot)
        except BaseException as exc:  # noqa: BLE001 - reported by wait(), in the training thread
            self._error = exc

    def wait(self) -> bool:
        """Wait for the write in progress; False if it failed (logged)."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            log.warning("writing %s failed (%s: %s); the previous checkpoint stays", self.path,
                        type(self._error).__name__, self._error)
            self._error = None
            return False
        return True


def host_copy(tree: Any) -> Any:
    """A copy of a state tree that training cannot change while it is written: every tensor copied to
    the CPU, every list and dict copied (the metrics list grows as training goes on)."""
    if isinstance(tree, torch.Tensor):
        return tree.detach().to("cpu", copy=True)
    if isinstance(tree, dict):
        return {key: host_copy(value) for key, value in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(host_copy(value) for value in tree)
    return tree


def load_weights_for_finetuning(model: torch.nn.Module, source: dict[str, Any]) -> list[str]:
    """Load another run's model weights; a head whose shape differs (another class count) keeps its
    fresh initialisation. Returns the names of the tensors that were not loaded."""
    own = model.state_dict()
    weights = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(weights, strict=False)
    return sorted(set(own) - set(weights))
