"""Run identity, atomic record files and the run lock."""

import json
import multiprocessing
import os
import signal
import time

import pytest
from run_configs import make_config

from stemsweep.config import ConfigError
from stemsweep.identity import run_identity, run_signature, setting_signature
from stemsweep.record.files import write_json
from stemsweep.record.rundir import CorruptRecord, RunDir


def signature(**changes) -> str:
    return run_signature(make_config(**changes))


def test_a_fixed_config_keeps_the_signature_and_setting_it_always_had():
    # Golden values: a new identity field, a renamed one or another hash would rename every run directory
    # (the committed ones under results/ too: tests/test_committed_identities.py).
    assert (signature(), setting()) == ("c7c1ba4df6", "0dac9df88e")
    assert (signature(seed=1), setting(seed=1)) == ("dc727d2b6f", "0dac9df88e")


@pytest.mark.parametrize("key,value", [
    ("runs_root", "/elsewhere"), ("data.num_workers", 8), ("logger.name", "wandb"), ("sweep", "optimizer"),
    ("device", "cpu"), ("compile", True), ("threads", 1), ("model.resources.gpus", 8), ("retry", True),
    ("amp", False), ("data.pipeline", "cpu"), ("checkpoint.every_min", 1.0), ("checkpoint.every_steps", 50),
    ("data_roots.imagenet", "/data/in1k"), ("data_roots.imagenet21k", "/data/in21k"), ("data.check_shape", False),
])
def test_paths_workers_logging_and_launching_are_not_identity(key, value):
    assert signature(**{key: value}) == signature()


@pytest.mark.parametrize("key,value", [
    ("model.size", "vit_s"), ("stem.name", "patch"), ("optimizer.lr", 2e-3), ("optimizer.wd", 0.1),
    ("optimizer.name", "sgd"), ("epochs", 20), ("seed", 1), ("batch_size", 64), ("data.train_subset", 100),
    ("aug.mixup_alpha", 0.8), ("schedule.warmup_epochs", 2), ("ema.enabled", False),
])
def test_everything_that_changes_training_is_identity(key, value):
    assert signature(**{key: value}) != signature()


def setting(**changes) -> str:
    return setting_signature(run_identity(make_config(**changes)))


def test_setting_is_the_identity_without_the_seed():
    assert setting(seed=1) == setting() and signature(seed=1) != signature()
    for key, value in [("schedule.warmup_epochs", 2), ("ema.enabled", False), ("optimizer.lr", 2e-3),
                       ("aug.label_smoothing", 0.1)]:
        assert setting(**{key: value}) != setting(), key


def test_fine_tuning_source_is_identity():
    assert signature(init_from="0123456789") != signature() != signature(init_from="0123456788")


def test_a_fine_tuning_source_that_is_neither_a_file_nor_a_signature_is_a_config_error():
    with pytest.raises(ConfigError, match=r"^init_from=no/such/run is not allowed: give a checkpoint file or a "
                                          r"run signature \(10 hex digits\)$"):
        signature(init_from="no/such/run")


def test_summary_and_metrics_round_trip_and_corruption_is_named(tmp_path):
    run = RunDir(tmp_path, "sig")
    assert run.read_summary() is None and run.read_metrics() == []
    run.write_summary({"status": "done", "best_error": 12.5})
    assert run.read_summary()["best_error"] == 12.5 and "updated" in run.read_summary()
    run.write_metrics([{"epoch": 1}, {"epoch": 2}])
    assert [m["epoch"] for m in run.read_metrics()] == [1, 2]
    run.metrics.write_text('{"epoch": 1}\n{"epo')
    with pytest.raises(CorruptRecord, match="metrics.jsonl:2"):
        run.read_metrics()
    run.summary.write_text('{"status": "do')
    with pytest.raises(CorruptRecord, match="summary.json"):
        run.read_summary()
    run.summary.write_text('{"status": "finished"}')
    with pytest.raises(CorruptRecord, match="running, resumable, done, failed, diverged"):
        run.read_summary()


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "summary.json"
    write_json(path, {"a": 1})
    with pytest.raises(TypeError):
        write_json(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no temporary left behind


def _hold_lock(root, ready, release):
    with RunDir(root, "sig").lock() as acquired:
        assert acquired
        ready.set()
        release.wait(30)


def test_lock_is_exclusive_and_a_killed_holder_is_taken_over(tmp_path):
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(tmp_path, ready, release))
    holder.start()
    assert ready.wait(30)
    run = RunDir(tmp_path, "sig")
    assert run.is_locked() and run.lock_holder().endswith(str(holder.pid))
    with run.lock() as acquired:
        assert not acquired
    os.kill(holder.pid, signal.SIGKILL)  # a stale lock: its holder died without releasing it
    holder.join(10)
    deadline = time.monotonic() + 10
    while run.is_locked() and time.monotonic() < deadline:
        time.sleep(0.05)
    with run.lock() as acquired:
        assert acquired
