"""A W&B failure is a warning, never the end of a run."""

import logging

import wandb

from stemsweep.config import LoggerConfig
from stemsweep.record.trackers import NoTracker, WandbTracker, open_tracker


def test_a_failing_wandb_init_is_logged_and_training_goes_on(tmp_path, monkeypatch, caplog):
    def broken_init(**kwargs):
        raise RuntimeError("no route to api.wandb.ai")

    monkeypatch.setattr(wandb, "init", broken_init)
    with caplog.at_level(logging.WARNING):
        tracker = open_tracker(LoggerConfig(name="wandb"), tmp_path, "abc", "ViT_C-XS", None, {})
        tracker.log({"test_error": 10.0}, step=1)
        tracker.finish({"status": "done"})
    assert isinstance(tracker, WandbTracker)
    assert "W&B is off for this run" in caplog.text and "no route" in caplog.text


def test_a_failing_log_turns_the_tracker_off(tmp_path, monkeypatch, caplog):
    class Run:
        def log(self, *args, **kwargs):
            raise OSError("disk full")

    monkeypatch.setattr(wandb, "init", lambda **kwargs: Run())
    tracker = open_tracker(LoggerConfig(name="wandb"), tmp_path, "abc", "ViT_C-XS", None, {})
    with caplog.at_level(logging.WARNING):
        tracker.log({"a": 1}, step=1)
        tracker.log({"a": 2}, step=2)  # off now: no second warning
    assert caplog.text.count("disk full") == 1


def test_wandb_init_gets_the_signature_as_id_with_resume_and_the_sweep_as_group(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(wandb, "init", lambda **kwargs: seen.update(kwargs))
    monkeypatch.delenv("WANDB_MODE", raising=False)
    open_tracker(LoggerConfig(name="wandb"), tmp_path, "3f9c1a2b7d", "ViT_C-4GF", "optimizer", {"epochs": 50})
    assert seen["id"] == "3f9c1a2b7d" and seen["resume"] == "allow" and seen["group"] == "optimizer"
    assert seen["mode"] == "offline" and seen["dir"] == str(tmp_path)  # offline unless configured otherwise


def test_logger_none_tracks_nothing(tmp_path):
    assert isinstance(open_tracker(LoggerConfig(name="none"), tmp_path, "a", "b", None, {}), NoTracker)
