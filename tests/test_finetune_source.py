"""A fine-tune starts only from a finished source, and a run whose last checkpoint cannot be written is
not done: short trainings in this process (`stemsweep.run.run`), and the source checks on records."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from run_configs import make_config

from stemsweep.record import checkpoint as checkpoint_files
from stemsweep.record.checkpoint import LAST_CHECKPOINT_NOT_WRITTEN, NoFinalCheckpoint, save_checkpoint
from stemsweep.record.rundir import RunDir
from stemsweep.run import run
from stemsweep.sweep.status import status_rows
from stemsweep.train.checkpoint import CheckpointWriter, finetune_source

TINY = {"data.num_train": 128, "data.num_test": 64, "data.image_size": 16, "data.in_chans": 1,
        "data.num_classes": 4, "batch_size": 32, "threads": 1, "schedule.warmup_epochs": 0.0, "epochs": 2}
SOURCE = "0123456789"


def train(runs: Path, **changes) -> float | None:
    return run(OmegaConf.structured(make_config(runs_root=str(runs), **{**TINY, **changes})))


def record(runs: Path, signature: str) -> dict:
    return json.loads((runs / signature / "summary.json").read_text())


def runs_in(runs: Path) -> set[str]:
    return {p.name for p in runs.iterdir() if not p.name.startswith(".")}


def fail_writes(monkeypatch, failing) -> list[dict]:
    """Checkpoint writes of states for which `failing(state)` holds raise OSError (a full disk)."""
    tried: list[dict] = []
    save = checkpoint_files.save_checkpoint

    def save_or_fail(path, state):
        tried.append(state)
        if failing(state):
            raise OSError(28, "No space left on device")
        save(path, state)
    monkeypatch.setattr("stemsweep.train.checkpoint.save_checkpoint", save_or_fail)
    return tried


@pytest.mark.parametrize("failures,written", [(1, True), (2, False)])
def test_a_failed_last_write_is_retried_once(tmp_path, monkeypatch, failures, written):
    tried = fail_writes(monkeypatch, lambda state: len(tried) <= failures)
    writer = CheckpointWriter(tmp_path / "checkpoint.pt", background=True)
    writer.save({"signature": "abc", "step": 1, "w": torch.ones(2)})
    assert writer.finish() == (None if written else "OSError: [Errno 28] No space left on device")
    assert len(tried) == 2 and (tmp_path / "checkpoint.pt").exists() == written


def test_a_run_whose_last_checkpoint_cannot_be_written_is_resumable_and_its_fine_tune_waits(
        tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    runs, reference = tmp_path / "runs", tmp_path / "reference"
    train(reference)  # the same run, never interrupted
    [signature] = runs_in(reference)

    tried = fail_writes(monkeypatch, lambda state: state["epoch"] == 2)  # the last checkpoint only
    with pytest.raises(NoFinalCheckpoint, match=f"run {signature} trained 2/2 epochs but could not write its "
                                                 r"last checkpoint \(OSError: .*No space left"):
        train(runs)
    assert [state["epoch"] for state in tried] == [1, 2, 2]  # written again once
    source = record(runs, signature)
    assert source["status"] == "resumable" and source["interruptions"][-1]["cause"] == LAST_CHECKPOINT_NOT_WRITTEN
    [row] = status_rows(str(runs))
    assert row["state"] == "resumable" and row["log"].startswith("last checkpoint not written: OSError")

    tuned = {"init_from": signature, "data.num_classes": 3, "epochs": 1}
    with pytest.raises(NoFinalCheckpoint) as refused:
        train(runs, **tuned)
    line = str(refused.value)
    assert f"init_from={signature} is not ready: run {signature} is resumable: it trained 2/2 epochs but could " \
           "not write its last checkpoint (OSError" in line and "launch it again" in line and "\n" not in line
    assert runs_in(runs) == {signature}  # the fine-tune left no record

    monkeypatch.undo()  # the disk has room again
    train(runs)
    assert record(runs, signature)["status"] == "done"
    assert "resuming" in caplog.text and "after epoch 1" in caplog.text
    ended = [json.loads(line) for line in (runs / signature / "metrics.jsonl").read_text().splitlines()]
    expected = [json.loads(line) for line in (reference / signature / "metrics.jsonl").read_text().splitlines()]
    compared = ("epoch", "train_loss", "train_error", "test_error", "ema_test_error", "lr")
    assert [{k: row[k] for k in compared} for row in ended] == [{k: row[k] for k in compared} for row in expected]

    train(runs, **tuned)  # now it trains, and its record names what it started from
    [tuned_signature] = runs_in(runs) - {signature}
    tuned_record = record(runs, tuned_signature)
    checkpoint = runs / signature / "checkpoint.pt"
    assert tuned_record["status"] == "done" and tuned_record["init_from"] == signature
    assert tuned_record["init_source"] == {
        "signature": signature, "global_step": 8, "checkpoint": str(checkpoint.resolve()),
        "sha256": hashlib.sha256(checkpoint.read_bytes()).hexdigest()}  # 2 epochs of 4 steps


def test_a_batch_larger_than_the_training_set_is_one_line(tmp_path):
    with pytest.raises(SystemExit, match="^stemsweep: batch_size=100000000 is not allowed: larger than the 128 "
                                         "training images$"):
        train(tmp_path, batch_size=100000000)


def write_source(runs: Path, status: str, epoch: int = 2, step: int = 0, **fields) -> RunDir:
    """A source run's record (4 epochs, done after `epochs_done`) and a checkpoint of (epoch, step)."""
    source = RunDir(runs, SOURCE)
    source.path.mkdir(parents=True)
    source.write_summary({"status": status, "epochs": 4, "epochs_done": epoch, "sweep": None, **fields})
    save_checkpoint(source.checkpoint, {"signature": SOURCE, "epoch": epoch, "step": step, "iters_per_epoch": 10})
    return source


@pytest.mark.parametrize("status,fields,epoch,step,state", [
    ("resumable", {"interruptions": [{"cause": "SIGTERM"}]}, 1, 3,
     "is resumable after 1/4 epochs; launch it again (the command that started it): it resumes"),
    ("running", {}, 2, 0, "was killed after 2/4 epochs (its record still says running); launch it again"),
    ("failed", {"error_message": "RuntimeError: boom"}, 1, 0,
     "failed (RuntimeError: boom); launch it again with retry=true"),
    ("diverged", {"diverged_epoch": 3}, 2, 0, "diverged at epoch 3: it has no weights to start from"),
    ("done", {}, 3, 0, "is done but its checkpoint is from epoch 3/4; delete "),
])
def test_a_source_that_is_not_finished_is_named_with_its_state(tmp_path, status, fields, epoch, step, state):
    write_source(tmp_path, status, epoch, step, **fields)
    with pytest.raises(NoFinalCheckpoint, match=f"^init_from={SOURCE} is not ready: run {SOURCE} ") as refused:
        finetune_source(SOURCE, tmp_path)
    assert state in str(refused.value)
    assert str(refused.value).endswith("then launch this run again") == (status != "diverged")


def test_a_source_training_now_or_never_trained_is_named_so(tmp_path):
    with pytest.raises(NoFinalCheckpoint, match=f"run {SOURCE} has no record under runs_root={tmp_path}; "
                                                "train it first"):
        finetune_source(SOURCE, tmp_path)
    source = write_source(tmp_path, "running", sweep="mini_peak")
    with source.lock(), pytest.raises(NoFinalCheckpoint, match=r"is running \(2/4 epochs done\); wait until"):
        finetune_source(SOURCE, tmp_path)


def test_a_checkpoint_file_is_taken_as_it_is(tmp_path):
    write_source(tmp_path, "resumable", 1, 3)
    source = finetune_source(str(tmp_path / SOURCE / "checkpoint.pt"), tmp_path / "elsewhere")
    assert (source["signature"], source["global_step"]) == (SOURCE, 13)
