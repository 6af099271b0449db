"""The run's state and its checkpoint: a round trip, and checkpoints written by older code still resume
to the metrics of an uninterrupted run (in-process trainings of a few steps on synthetic data)."""

from __future__ import annotations

import pytest
import torch
from run_configs import make_config

from stemsweep.identity import identity_signature, run_identity
from stemsweep.record import summary as record
from stemsweep.record.checkpoint import LATEST, load_checkpoint
from stemsweep.record.rundir import RunDir
from stemsweep.record.trackers import NoTracker
from stemsweep.train.distributed import DistEnv
from stemsweep.train.loop import train
from stemsweep.train.state import EpochTotals, RunState, global_step_of

COMPARED = ("epoch", "train_loss", "train_error", "test_error", "ema_test_error", "ema_initial_share", "lr")


def test_run_state_round_trips_through_its_state_dict():
    state = RunState(epoch=3, step=7, sums=EpochTotals(12.5, 3.0, 64.0), epoch_seconds=2.0,
                     metrics=[{"epoch": 1}, {"epoch": 2}, {"epoch": 3}], wall_before=100.0)
    state.launched -= 5.0
    saved = state.state_dict()
    assert saved["wall_time_s"] >= 105.0 and saved["epoch_seconds"] >= 2.0
    again = RunState()
    again.load_state_dict(saved)
    assert (again.epoch, again.step, again.sums, again.metrics) == (3, 7, EpochTotals(12.5, 3.0, 64.0), state.metrics)
    assert again.wall_before == saved["wall_time_s"] and again.epoch_seconds == saved["epoch_seconds"]
    assert again.global_step(10) == 37
    assert (again.sums.train_loss, again.sums.train_error) == (12.5 / 64, 100.0 * 3 / 64)

    state.end_epoch({"epoch": 4})  # an epoch's end is a checkpoint at step 0: no sums, no seconds
    at_end = state.state_dict()
    assert (at_end["epoch"], at_end["step"], at_end["sums"], at_end["epoch_seconds"]) == (4, 0, [0.0, 0.0, 0.0], 0.0)


def test_a_checkpoint_from_before_mid_epoch_checkpoints_reads_as_an_epoch_end():
    state = RunState(step=5, sums=EpochTotals(1.0, 1.0, 1.0))
    state.load_state_dict({"epoch": 2, "metrics": [{}, {}], "wall_time_s": 9.0})
    assert (state.epoch, state.step, state.sums, state.epoch_seconds, state.wall_before) == (
        2, 0, EpochTotals(), 0.0, 9.0)


class StopAt:
    """A stop signal that arrives when the loop asks for the `n`th time whether one came (it asks after
    every step but an epoch's last, and at an epoch's end)."""

    name = "SIGTERM"

    def __init__(self, n: int | None):
        self.asked, self.n = 0, n

    @property
    def requested(self) -> bool:
        self.asked += 1
        return self.n is not None and self.asked >= self.n

    def cause(self) -> str:
        return self.name


def launch(runs, stop_at: int | None = None, previous_status: str | None = None) -> tuple[RunDir, dict]:
    # 4 steps an epoch; the EMA copies the model during warm-up (the whole run)
    cfg = make_config(epochs=2, batch_size=8, runs_root=str(runs), **{
        "data.num_train": 32, "data.num_test": 16, "data.image_size": 16, "data.in_chans": 1,
        "data.num_classes": 4})
    identity = run_identity(cfg)
    run = RunDir(runs, identity_signature(identity))
    run.path.mkdir(parents=True, exist_ok=True)
    summary = record.start(cfg, identity, None)
    return run, train(cfg, run, summary, NoTracker(), DistEnv(), StopAt(stop_at), previous_status)


def compared(run: RunDir) -> list[dict]:
    return [{k: row[k] for k in COMPARED} for row in run.read_metrics()]


def assert_equal_metrics(got: list[dict], expected: list[dict]) -> None:
    assert len(got) == len(expected) == 2
    for a, b in zip(got, expected):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-9), (a, b)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run, summary = launch(tmp_path_factory.mktemp("uninterrupted"))
    assert summary["status"] == "done" and summary["epochs_done"] == 2
    return compared(run)


def test_a_mid_epoch_checkpoint_as_the_code_before_run_state_wrote_it_resumes_exactly(tmp_path, uninterrupted):
    run, summary = launch(tmp_path, stop_at=2)  # stops after step 2 of epoch 1
    assert summary["status"] == "resumable" and summary["interruptions"][-1]["step"] == 2
    new = load_checkpoint(run.checkpoint)
    assert new["step"] == 2 and global_step_of(new) == 2
    # The keys and values the loop wrote before train/state.py, iters_per_epoch included.
    old = {"signature": new["signature"], "epoch": 0, "step": 2, "sums": list(new["sums"]),
           "epoch_seconds": new["epoch_seconds"], "iters_per_epoch": 4, "metrics": [],
           "wall_time_s": new["wall_time_s"], "model": new["model"], "ema": new["ema"],
           "optimizer": new["optimizer"]}
    torch.save(old, run.path / LATEST)

    run, summary = launch(tmp_path, previous_status="resumable")
    assert summary["status"] == "done" and summary["resumes"][-1]["from_global_step"] == 2
    assert_equal_metrics(compared(run), uninterrupted)


def test_an_epoch_end_checkpoint_from_before_step_and_ema_counts_resumes_exactly(tmp_path, uninterrupted):
    run, summary = launch(tmp_path, stop_at=4)  # 3 asks within epoch 1, then at its end
    assert summary["status"] == "resumable" and summary["interruptions"][-1]["step"] == 4
    new = load_checkpoint(run.checkpoint)
    assert (new["epoch"], new["step"]) == (1, 0)
    # The oldest format: no position within the epoch, and the EMA as its weights alone.
    old = {"signature": new["signature"], "epoch": 1, "metrics": new["metrics"], "wall_time_s": 1.0,
           "model": new["model"], "ema": new["ema"]["weights"], "optimizer": new["optimizer"]}
    torch.save(old, run.path / LATEST)

    run, summary = launch(tmp_path, previous_status="resumable")
    assert summary["status"] == "done" and summary["resumes"][-1]["from_epoch"] == 1
    assert_equal_metrics(compared(run), uninterrupted)
