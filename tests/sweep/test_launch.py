"""Local sweeps as a user launches them: `python -m stemsweep.run -m ...` in a subprocess, tiny real runs.

What a sweep launches, skips and retries is decided by its records (runs_root/<signature>/), so a sweep
launched again trains nothing it has finished, whichever launcher runs it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stemsweep.compose import signature_of_overrides
from stemsweep.record.rundir import RunDir
from stemsweep.sweep.status import status_rows

TINY = ["data.train_subset=256", "data.test_subset=256", "batch_size=64", "threads=1",
        "logger=none", "epochs=2"]  # the default model, vit_xs; a sweep file may set others


def sweep(runs: Path, *overrides: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "stemsweep.run", "-m", f"runs_root={runs}", *TINY, *overrides]
    env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "1"}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def records(runs: Path) -> dict[str, dict]:
    """{signature: summary} of every run directory."""
    return {p.name: json.loads((p / "summary.json").read_text())
            for p in sorted(runs.iterdir()) if p.is_dir() and not p.name.startswith(".")}


def epochs_logged(run: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def skipped_line(out: str) -> str:
    match = re.search(r"(\d+) runs in the sweep: (\d+) skipped .*, (\d+) to launch", out)
    assert match, out
    return match.group(0)


@pytest.mark.processes
def test_a_local_sweep_records_every_run_and_launched_again_trains_nothing(tmp_path):
    first = sweep(tmp_path, "stem=patch,conv")
    out = first.stdout + first.stderr
    assert first.returncode == 0, out
    assert skipped_line(out).startswith("2 runs in the sweep: 0 skipped") and "Launching 2 jobs locally" in out
    done = records(tmp_path)
    assert len(done) == 2 and {s["stem"] for s in done.values()} == {"patch", "conv"}
    for signature, s in done.items():
        assert s["status"] == "done" and s["epochs_done"] == 2 and s["signature"] == signature
        assert epochs_logged(tmp_path / signature) == [1, 2]
        assert (tmp_path / signature / "config.yaml").exists()

    again = sweep(tmp_path, "stem=patch,conv")
    out = again.stdout + again.stderr
    assert again.returncode == 0, out
    assert "2 skipped" in skipped_line(out) and skipped_line(out).endswith(" 0 to launch")
    assert "Launching" not in out and "epoch 1/2" not in out  # the launcher was not called
    assert records(tmp_path) == done  # nothing rewritten, not even a timestamp


@pytest.mark.processes
def test_a_sweep_file_with_overrides_on_top_runs_two_at_a_time_with_local_parallel(tmp_path):
    # mini_training_length: vit_xs {patch, conv} and regnety_xs at epochs 1,2,4 and seeds 0,1,2; the
    # command line replaces the epochs and seed axes and the file's data settings, and keeps its aug,
    # schedule, tuning and name.
    result = sweep(tmp_path, "+sweeps=mini_training_length", "hydra/launcher=local_parallel",
                   "hydra.launcher.n_jobs=2", "seed=0")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert skipped_line(out) == "3 runs in the sweep: 0 skipped (done, failed or diverged: retry=true runs " \
                                "those again), 3 to launch"
    # its progress as each run ends, read from the records while joblib's batch runs
    progress = re.findall(r"stemsweep: (\d) of 3 runs ended; (\d) to go, ETA \d\d:\d\d \(in \d+ min\)", out)
    assert progress and progress[0][0] in "12" and [int(a) + int(b) for a, b in progress] == [3] * len(progress), out
    assert re.search(r"stemsweep: 3 of 3 runs ended$", out, re.MULTILINE), out
    done = records(tmp_path)
    assert {(s["model"], s["optimizer"]) for s in done.values()} == {
        ("ViT_P-XS", "adamw"), ("ViT_C-XS", "adamw"), ("RegNetY-XS", "sgd")}
    for s in done.values():
        assert s["status"] == "done" and s["epochs"] == 2 and s["epochs_done"] == 2
        assert s["sweep"] == "mini_training_length" and s["aug"] == "none" and s["train_subset"] == 256

    # Two at a time: some two runs were training at once, in two processes other than the sweep's.
    spans = {sig: ((tmp_path / sig / "config.yaml").stat().st_mtime, (tmp_path / sig / "summary.json").stat().st_mtime)
             for sig in done}  # config.yaml is written when training starts, summary.json when it ends
    overlapping = [(a, b) for a in spans for b in spans
                   if a < b and spans[a][0] < spans[b][1] and spans[b][0] < spans[a][1]]
    assert overlapping, spans
    pids = {(tmp_path / sig / "lock").read_text().split()[1] for sig in done}
    assert len(pids) >= 2 and str(os.getpid()) not in pids


@pytest.mark.processes
def test_sigterm_to_a_local_parallel_sweep_stops_its_worker_processes_too(tmp_path):
    # The runs train in joblib's worker processes. `kill SWEEP_PID` used to leave them training on,
    # orphaned; now the sweep passes the SIGTERM on to them, they stop after the step in flight with a
    # checkpoint, and then the sweep stops: the runs are resumable, nothing trained is lost.
    cmd = [sys.executable, "-m", "stemsweep.run", "-m", f"runs_root={tmp_path}", *TINY, "epochs=200",
           "seed=0,1", "hydra/launcher=local_parallel", "hydra.launcher.n_jobs=2"]
    env = {**os.environ, "WANDB_MODE": "offline"}
    sweep_process = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        runs = []
        deadline = time.monotonic() + 120
        while len([r for r in runs if r.trained_steps()]) < 2:  # both runs training, in their workers
            assert time.monotonic() < deadline and sweep_process.poll() is None, "the runs did not start"
            time.sleep(0.5)
            runs = [RunDir(tmp_path, p.name) for p in tmp_path.iterdir() if (p / "config.yaml").exists()]
        sweep_process.send_signal(signal.SIGTERM)  # to the sweep process only, not its group
        out, _ = sweep_process.communicate(timeout=60)
        deadline = time.monotonic() + 30
        while any(r.is_locked() for r in runs):  # the workers are gone: nothing holds a run's lock
            assert time.monotonic() < deadline, [r.lock_holder() for r in runs]
            time.sleep(0.5)
    finally:
        if sweep_process.poll() is None:
            sweep_process.kill()
        for run in runs:  # if the test failed: no orphan left training for the rest of the suite
            if run.is_locked():
                os.kill(int(run.lock_holder().split()[1]), signal.SIGKILL)
    assert sweep_process.returncode == 128 + signal.SIGTERM and "SIGTERM: stopping the sweep" in out, out
    assert "Traceback" not in out and "launched again, the unfinished runs resume" in out, out
    for row in status_rows(tmp_path):
        assert row["state"] == "resumable" and row["restarts"].startswith("1 (last: SIGTERM at step "), row
    for run in runs:
        [stop] = run.read_summary()["interruptions"]
        assert stop["lost_steps"] == 0 and stop["step"] >= 1, stop


@pytest.mark.processes
def test_a_run_another_process_is_training_is_not_launched_again(tmp_path):
    # A second launch of a sweep (another terminal, or a sweep launched again too early) must not start
    # a run whose lock a live process holds, even with retry=true.
    patch, conv = (signature_of_overrides(f"runs_root={tmp_path} {' '.join(TINY)} stem={stem}")
                   for stem in ("patch", "conv"))
    with RunDir(tmp_path, patch).lock() as acquired:  # this test process "is training" ViT_P
        assert acquired
        result = sweep(tmp_path, "stem=patch,conv", "retry=true")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "2 runs in the sweep: 0 skipped (done), 1 training or queued already, 1 to launch" in out, out
    assert f"run {patch} is not launched again: training" in out, out
    assert json.loads((tmp_path / conv / "summary.json").read_text())["status"] == "done"
    assert not (tmp_path / patch / "summary.json").exists()  # ViT_P was left to its "trainer"


@pytest.mark.processes
def test_a_failed_run_is_recorded_skipped_when_launched_again_and_rerun_with_retry(tmp_path):
    empty = tmp_path / "empty"  # an existing folder without Fashion-MNIST: training fails loading it
    empty.mkdir()
    runs = tmp_path / "runs"
    failing = [f"data.root={empty}", "stem=conv"]

    first = sweep(runs, *failing)
    assert first.returncode != 0  # the sweep reports the failure
    [(signature, s)] = records(runs).items()
    assert s["status"] == "failed" and s["error_message"], s
    assert "\n" not in s["error_message"] and str(empty) in s["error_message"], s["error_message"]
    assert (runs / signature / "error.log").read_text().startswith("Traceback")
    [row] = status_rows(str(runs))
    assert row["state"] == "failed" and Path(row["log"]).is_file()  # the status table points at the log

    again = sweep(runs, *failing)
    out = again.stdout + again.stderr
    assert again.returncode == 0, out
    assert skipped_line(out).startswith("1 runs in the sweep: 1 skipped") and "Launching" not in out
    assert records(runs) == {signature: s}

    retried = sweep(runs, *failing, "retry=true")
    out = retried.stdout + retried.stderr
    assert "0 skipped" in skipped_line(out) and "Launching 1 jobs locally" in out, out
    assert "stemsweep: 1 of 1 runs ended, 1 failed" in out, out  # the failures so far, as it ends
    assert retried.returncode != 0  # it fails again, as it must with no data
    [(same, s_retry)] = records(runs).items()
    assert same == signature  # retry is not part of the run's identity
    assert s_retry["status"] == "failed" and s_retry["updated"] >= s["updated"] and s_retry != s


def test_planning_composes_each_run_as_hydra_does():
    # The sweeper composes config groups once per distinct choice and applies the values on top.
    from omegaconf import OmegaConf, open_dict

    from stemsweep.compose import compose_sweep

    for name, extra in [("mini_training_length", ["seed=3", "optimizer.lr=0.01", "+sweeps_note=x"]),
                        ("mini_lrwd_adamw", ["data.train_subset=256"])]:
        jobs, compose = compose_sweep(name, extra)
        assert len(jobs) >= 9
        for job in jobs[:10]:
            hydra = compose.full(job)
            with open_dict(hydra):
                del hydra["hydra"]
            assert OmegaConf.to_yaml(compose(job)) == OmegaConf.to_yaml(hydra), job


def test_only_sweeps_is_added_as_a_config_group():
    # The sweeps/ search path is the repository root: its other folders (.venv, runs, src) are no groups.
    result = subprocess.run([sys.executable, "-m", "stemsweep.run", "--help"], capture_output=True, text=True,
                            timeout=60)
    groups = result.stdout.split("== Configuration groups ==")[1].split("== Config ==")[0]
    names = {line.split(":")[0] for line in groups.splitlines() if ": " in line}
    conf = Path(__file__).resolve().parents[2] / "conf"
    folders = {d.relative_to(conf).as_posix() for d in conf.rglob("*") if d.is_dir()}
    folders = {f for f in folders if f.split("/")[0] != "hydra"}  # Hydra's own groups: --hydra-help
    local = {f for f in folders | names if f.split("/")[0] == "local"}  # this machine's settings (conf/local/:
    # its default.yaml is composed, its tuning/ and hydra/launcher/ answer for conf/'s groups)
    assert names - local == (folders - local) | {"sweeps"}, names
    assert "mini_peak" in groups


def test_a_sweep_with_its_subfolders_named_by_override_dirname_runs_on_both_local_launchers(tmp_path):
    # Hydra's common `hydra.sweep.subdir=${hydra.job.override_dirname}`: each job's folder is named by its
    # own overrides, which Hydra resolves per job (the sweep's config has no job yet). Tiny real runs.
    tiny = ["data=synthetic", "data.num_train=64", "data.num_test=64", "batch_size=64", "threads=1", "logger=none",
            "epochs=1", "schedule.warmup_epochs=0"]
    for launcher in ("basic", "local_parallel"):
        runs, sweep_dir = tmp_path / launcher / "runs", tmp_path / launcher / "sweep"
        cmd = [sys.executable, "-m", "stemsweep.run", "-m", f"hydra/launcher={launcher}", f"runs_root={runs}",
               f"hydra.sweep.dir={sweep_dir}", "hydra.sweep.subdir=${hydra.job.override_dirname}", *tiny,
               "stem=patch,conv"]
        result = subprocess.run(cmd, env={**os.environ, "HYDRA_FULL_ERROR": "1"}, capture_output=True, text=True,
                                timeout=600)
        assert result.returncode == 0, result.stdout + result.stderr
        assert {s["stem"]: s["status"] for s in records(runs).values()} == {"patch": "done", "conv": "done"}
        for stem in ("patch", "conv"):  # Hydra's override_dirname: the job's overrides, sorted, comma-joined
            folder = sweep_dir / ",".join(sorted([f"runs_root={runs}", f"stem={stem}", *tiny]))
            assert (folder / ".hydra" / "overrides.yaml").is_file(), sorted(sweep_dir.rglob("overrides.yaml"))
