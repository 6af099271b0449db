"""Checkpoints written beside training, and another run's weights for fine-tuning.

A checkpoint is written at every epoch end, every `checkpoint.every_min` minutes / `every_steps` steps
within an epoch, and when a signal stops the run (record/checkpoint.py has the files themselves). A
fine-tune starts only from a source whose last checkpoint holds its last step: a run that is done, and
whose final write did not fail.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path
from typing import Any

import torch

from stemsweep.record.checkpoint import (
    LAST_CHECKPOINT_NOT_WRITTEN,
    CorruptCheckpoint,
    NoFinalCheckpoint,
    load_checkpoint,
    save_checkpoint,
)
from stemsweep.record.rundir import CorruptRecord, RunDir
from stemsweep.train.state import global_step_of

log = logging.getLogger(__name__)


class CheckpointWriter:
    """Saves checkpoints, in a background thread when training runs on a GPU.

    In the background, `save` copies the state to host memory, the only part the training step waits
    for (a device-to-host copy on a GPU), and returns; serialising, fsync and the renames go on beside
    training, whose CPU threads mostly wait on the GPU. When training runs on the CPU its threads use
    every core and a writer thread competes with them: there a save is written in the training thread,
    which costs the step less (docs/benchmarks.md, "Checkpoints"). One write at a time: a save first
    waits for the one before. A failed write (a full disk) is logged and the previous checkpoint stays;
    training goes on, and `finish` writes the last state saved once more if its write failed.
    """

    def __init__(self, path: Path, background: bool = True):
        self.path, self.background = path, background
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._unwritten: dict[str, Any] | None = None  # the last state saved, while its write failed
        self.failure: str | None = None  # the last failed write's error, in one line

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
            self._error, self._unwritten = exc, snapshot
        else:
            self._unwritten = None

    def wait(self) -> bool:
        """Wait for the write in progress; False if it failed (logged)."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            self.failure = f"{type(self._error).__name__}: {self._error}".splitlines()[0]
            log.warning("writing %s failed (%s); the previous checkpoint stays", self.path, self.failure)
            self._error = None
            return False
        return True

    def finish(self) -> str | None:
        """Wait for the last write; if it failed, write its state once more (a disk may have been full
        for a moment). None when the last state saved is on disk, else the error that kept it off."""
        self.wait()
        if self._unwritten is None:
            return None
        log.warning("writing %s once more", self.path)
        self._write(self._unwritten)
        return None if self.wait() else self.failure


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


def finetune_source(init_from: str, runs_root: str | Path) -> dict[str, Any]:
    """The checkpoint a fine-tune starts from, as its record names it: the source run's signature, the
    step the checkpoint holds, the file and its sha256. `init_from` names a checkpoint file, taken as it
    is, or a run by its signature, which must be done with its last step in its checkpoint; otherwise
    NoFinalCheckpoint names the source's state and what to do."""
    path = Path(init_from)
    if path.is_file():
        return _source(path, load_checkpoint(path))
    run = RunDir(runs_root, init_from)

    def not_ready(state: str, todo: str, relaunch: str = ", then launch this run again") -> NoFinalCheckpoint:
        return NoFinalCheckpoint(f"init_from={init_from} is not ready: run {init_from} {state}; {todo}{relaunch}")

    try:
        summary = run.read_summary()
    except CorruptRecord as exc:
        raise not_ready(f"has a record that cannot be read ({exc})",
                        "launch it again: it resumes from its checkpoint and rewrites its record") from None
    if summary is None:
        raise not_ready(f"has no record under runs_root={runs_root}", "train it first")
    sweep = summary.get("sweep")
    again = (f"launch its sweep again (python -m stemsweep.run -m +sweeps={sweep} with its overrides)" if sweep
             else "launch it again (the command that started it)") + ": it resumes from its checkpoint"
    epochs = f"{summary.get('epochs_done', 0)}/{summary['epochs']} epochs"
    status = summary["status"]
    if status == "running":
        if run.is_locked():
            raise not_ready(f"is running ({epochs} done)", "wait until it is done")
        raise not_ready(f"was killed after {epochs} (its record still says running)", again)
    if status == "resumable":
        last = (summary.get("interruptions") or [{}])[-1]
        if last.get("cause") == LAST_CHECKPOINT_NOT_WRITTEN:
            raise not_ready(f"is resumable: it trained {epochs} but could not write its last checkpoint "
                            f"({last.get('error')})", f"once it can write to {run.path}, {again}")
        raise not_ready(f"is resumable after {epochs}", f"{again} and finishes")
    if status == "failed":
        raise not_ready(f"failed ({summary.get('error_message')})", "launch it again with retry=true")
    if status == "diverged":
        raise not_ready(f"diverged at epoch {summary.get('diverged_epoch')}: it has no weights to start "
                        "from", "fine-tune from another run", relaunch="")
    retrain = f"move {run.path} away and train it again"
    try:
        state = load_checkpoint(run.checkpoint)
    except FileNotFoundError:
        raise not_ready(f"is done but has no checkpoint ({run.checkpoint} is missing)", retrain) from None
    except CorruptCheckpoint as exc:
        raise not_ready(f"is done but its checkpoint cannot be read ({exc})", retrain) from None
    if (state["epoch"], state.get("step", 0)) != (summary["epochs"], 0):
        held = f"epoch {state['epoch']}/{summary['epochs']}" + (f", step {state['step']}" if state.get("step") else "")
        raise not_ready(f"is done but its checkpoint is from {held}",
                        f"delete {run.summary} and launch it again: it resumes from that checkpoint and finishes")
    return _source(run.checkpoint, state)


def _source(path: Path, state: dict[str, Any]) -> dict[str, Any]:
    with path.open("rb") as f:
        sha256 = hashlib.file_digest(f, "sha256").hexdigest()
    return {"signature": state["signature"], "global_step": global_step_of(state), "checkpoint": str(path.resolve()),
            "sha256": sha256}
