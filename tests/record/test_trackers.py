"""A W&B failure is a warning, never the end of a run; a signal that ends W&B's service costs it nothing
in the end (record/trackers.py)."""

import json
import logging
import os
import subprocess
import sys

import pytest
import wandb

from stemsweep.config import LoggerConfig
from stemsweep.record.trackers import (
    NoTracker,
    WandbTracker,
    history_steps,
    open_tracker,
    transaction_log,
    wandb_exit_code,
)


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


def test_wandb_exit_codes_follow_the_shell_for_a_run_a_signal_stopped():
    def stopped_by(name):
        return {"status": "resumable", "interruptions": [{"signal": name}]}

    assert wandb_exit_code({"status": "done"}) == wandb_exit_code({"status": "diverged"}) == 0
    assert wandb_exit_code(stopped_by("SIGTERM")) == 143 and wandb_exit_code(stopped_by("SIGUSR1")) == 138
    assert wandb_exit_code(stopped_by(None)) == 1  # its last checkpoint could not be written
    assert wandb_exit_code({"status": "failed", "interruptions": [{"signal": "SIGTERM"}]}) == 1


@pytest.mark.processes
def test_the_transaction_log_reader_reads_what_wandbs_own_reader_reads(tmp_path):
    """Checked against `wandb leet inspect` (W&B's reader, in Go): a log of several 32 KiB blocks with a
    record longer than one, and the same log cut in the middle of a record, as a killed writer leaves it."""
    run = wandb.init(project="p", id="reader", mode="offline", dir=str(tmp_path))
    for step in range(1, 41):
        run.log({"x": step, "padding": "p" * (40_000 if step == 20 else 1000)}, step=step)
    run.finish(exit_code=138)
    wandb.teardown()
    [log] = tmp_path.glob("wandb/offline-run-*-reader/run-reader.wandb")
    cut = tmp_path / "cut.wandb"
    cut.write_bytes(log.read_bytes()[:60_000])  # inside step 20's record
    for path, steps in ((log, list(range(1, 41))), (cut, list(range(1, 20)))):
        printed = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(path)],
                                 capture_output=True, text=True, check=True).stdout
        theirs = [(r["type"], r.get("history", {}).get("step", {}).get("num"), r.get("exit", {}).get("exit_code"))
                  for r in map(json.loads, printed.splitlines())]
        ours = [(r.WhichOneof("record_type"), r.history.step.num if r.HasField("history") else None,
                 r.exit.exit_code if r.HasField("exit") else None) for r in transaction_log(path)]
        assert ours == theirs and list(history_steps(path)) == steps


# Three starts of one run's tracker, as SLURM stops it: a USR signal to every process of the job (a
# time-out), then a SIGTERM that ends W&B's service before the run's process finishes (a requeue),
# then the start that ends it. Run in a process of its own, which the test reads the output of.
THREE_STARTS = r"""
import logging, os, signal, sys, time
from pathlib import Path
from stemsweep.config import LoggerConfig
from stemsweep.record.trackers import open_tracker

logging.basicConfig(level=logging.INFO, stream=sys.stderr)
run_dir = Path(sys.argv[1])
rows = [{"epoch": e, "test_error": 50.0 - e} for e in (1, 2, 3)]


def wandb_processes():
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            pid, rest = stat.read_text().split(" ", 1)
        except OSError:
            continue
        children.setdefault(int(rest.rsplit(")", 1)[1].split()[1]), []).append(int(pid))
    found, parents = [], [os.getpid()]
    while parents:
        found += (pids := [p for parent in parents for p in children.get(parent, [])])
        parents = pids
    return found


def start():
    time.sleep(1.1)  # each start has an offline folder of its own, named by its second (real starts are apart)
    return open_tracker(LoggerConfig(name="wandb", mode="offline"), run_dir, "sig", "ViT_C-XS", None, {})


tracker = start()
tracker.resume([])
tracker.log(rows[0], step=1)
service = wandb_processes()
assert len(service) >= 2, service  # wandb-core and its system-metrics helper
for pid in service:
    os.kill(pid, signal.SIGUSR1)
    os.kill(pid, signal.SIGUSR2)
time.sleep(0.5)
print("alive after the USR signals:", all(Path(f"/proc/{pid}").exists() for pid in service))
tracker.finish({"status": "resumable", "interruptions": [{"signal": "SIGUSR2"}]})

tracker = start()
tracker.resume(rows[:1])
tracker.log(rows[1], step=2)
[core] = [pid for pid in wandb_processes() if Path(f"/proc/{pid}/comm").read_text().strip() == "wandb-core"]
os.kill(core, signal.SIGTERM)
while Path(f"/proc/{core}").exists() and Path(f"/proc/{core}/stat").read_text().split(") ")[1][0] != "Z":
    time.sleep(0.05)
tracker.finish({"status": "resumable", "interruptions": [{"signal": "SIGTERM"}]})

tracker = start()
tracker.resume(rows[:2])
tracker.log(rows[2], step=3)
tracker.finish({"status": "done"})
"""


@pytest.mark.processes
def test_a_resumed_run_logs_once_every_epoch_that_a_signal_cost_wandb_and_ends_finished(tmp_path):
    ended = subprocess.run([sys.executable, "-c", THREE_STARTS, str(tmp_path)], capture_output=True, text=True,
                           timeout=120, env={**os.environ, "WANDB_MODE": "offline"})
    assert ended.returncode == 0, ended.stderr[-3000:]
    assert "alive after the USR signals: True" in ended.stdout, ended.stdout  # W&B's service kept them blocked
    assert "Traceback" not in ended.stderr, ended.stderr[-3000:]  # nor W&B's exit hook on a dead service
    pieces = sorted(tmp_path.glob("wandb/offline-run-*-sig/run-sig.wandb"))
    assert len(pieces) == 3, pieces
    steps = [list(history_steps(piece)) for piece in pieces]
    assert sorted(sum(steps, [])) == [1, 2, 3], steps  # every epoch, once, under one id
    assert steps[0] == [1] and steps[2] == [2, 3][len(steps[1]):], steps
    if not steps[1]:  # W&B had not written step 2 when its service died: logged again from the metrics
        assert "W&B lacks epochs 2-2 of this run: logging them from metrics.jsonl" in ended.stderr
    records = [[r.WhichOneof("record_type") for r in transaction_log(piece)] for piece in pieces]
    exits = [[r.exit.exit_code for r in transaction_log(piece) if r.HasField("exit")] for piece in pieces]
    assert "preempting" in records[0] and exits[0] == [128 + 12], (records[0], exits)  # SIGUSR2
    assert exits[2] == [0]  # the W&B run ends finished
