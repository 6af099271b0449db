"""Checkpoint files: written atomically beside the previous one, read back, and a damaged one named."""

from __future__ import annotations

import pytest
import torch

from stemsweep.record.checkpoint import LATEST, PREVIOUS, CorruptCheckpoint, load_checkpoint, load_latest
from stemsweep.train.checkpoint import CheckpointWriter


@pytest.mark.parametrize("background", [True, False])
def test_each_save_keeps_the_one_before_and_the_state_cannot_change_under_the_writer(tmp_path, background):
    writer = CheckpointWriter(tmp_path / LATEST, background=background)
    weights = torch.zeros(3)
    metrics = [{"epoch": 1}]
    state = {"signature": "abc", "step": 1, "model": {"w": weights}, "metrics": metrics}
    writer.save(state)
    weights += 1  # training goes on while the first write may still be running
    metrics.append({"epoch": 2})
    writer.save({**state, "step": 2})
    assert writer.wait()
    latest, previous = load_checkpoint(tmp_path / LATEST), load_checkpoint(tmp_path / PREVIOUS)
    assert (latest["step"], previous["step"]) == (2, 1)
    assert torch.equal(previous["model"]["w"], torch.zeros(3)) and previous["metrics"] == [{"epoch": 1}]
    assert torch.equal(latest["model"]["w"], torch.ones(3)) and len(latest["metrics"]) == 2
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind


def test_a_damaged_latest_checkpoint_is_named_and_the_previous_one_is_used(tmp_path, caplog):
    writer = CheckpointWriter(tmp_path / LATEST)
    for step in (1, 2):
        writer.save({"signature": "abc", "step": step, "model": {"w": torch.arange(1000.0)}}, wait=True)
    data = (tmp_path / LATEST).read_bytes()
    (tmp_path / LATEST).write_bytes(data[: len(data) // 3])
    with pytest.raises(CorruptCheckpoint, match=f"{tmp_path / LATEST}: not a readable checkpoint"):
        load_checkpoint(tmp_path / LATEST)
    state, which = load_latest(tmp_path)
    assert (state["step"], which) == (1, PREVIOUS)
    [warning] = [r.getMessage() for r in caplog.records if "not a readable checkpoint" in r.getMessage()]
    assert warning.endswith(f"falling back to {PREVIOUS}") and "\n" not in warning
    (tmp_path / PREVIOUS).write_bytes(b"not a checkpoint")
    assert load_latest(tmp_path) == (None, None)


def test_a_failed_write_is_reported_and_training_goes_on(tmp_path, caplog):
    writer = CheckpointWriter(tmp_path / "no_such_folder" / "sub" / LATEST)
    (tmp_path / "no_such_folder").write_text("a file where the folder should be")
    writer.save({"signature": "abc", "model": {}})
    assert writer.wait() is False
    assert any("the previous checkpoint stays" in r.getMessage() for r in caplog.records)
