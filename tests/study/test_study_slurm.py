"""A whole study on the real local SLURM: one `stemsweep study run` submits every stage at once, chained by
`afterany` dependencies, and the study finishes on its own, each job binding late to what came before."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import yaml
from tiny import remove_tuning, study, summaries, tuning_path, write_tiny_study

pytestmark = pytest.mark.slurm


def queue() -> dict[str, list[str]]:
    """{job name: [reason or state of each of its jobs]} of this user's jobs."""
    out = subprocess.run(["squeue", "-h", "--array", "-o", "%j|%r|%T"], capture_output=True, text=True).stdout
    found: dict[str, list[str]] = {}
    for line in out.splitlines():
        name, reason, state = line.split("|")
        found.setdefault(name, []).append(reason if state == "PENDING" else state)
    return found


def dependencies() -> dict[str, list[str]]:
    """{job name: [the dependency of each of its jobs]} of this user's pending jobs."""
    out = subprocess.run(["squeue", "-h", "--array", "-t", "PENDING", "-o", "%j|%E"], capture_output=True,
                         text=True).stdout
    found: dict[str, list[str]] = {}
    for line in out.splitlines():
        name, dependency = line.split("|", 1)
        found.setdefault(name, []).append(dependency)
    return found


def wait_until_gone(prefix: str, timeout: float = 480, every: callable = None) -> list:
    """Poll until no job named PREFIX… is queued; returns what `every()` gave on each poll."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if every is not None:
            seen.append(every())
        if not any(name.startswith(prefix) for name in queue()):
            return seen
        time.sleep(3)
    raise AssertionError(f"jobs {prefix}* still queued after {timeout} s: {queue()}")


def slurm_overrides(cluster) -> list[str]:
    return ["hydra/launcher=slurm", f"hydra.launcher.partition={cluster.partition}", "hydra.launcher.wait=false"]


def status_rows(path: Path) -> dict[str, str]:
    result = study("status", str(path))
    assert result.returncode == 0, result.stderr
    return {line.split()[0]: line for line in result.stdout.splitlines()[1:]}


def test_one_command_submits_the_whole_study_and_it_finishes_on_its_own_as_it_would_locally(
        tmp_path, slurm_cluster, local_study):
    runs = tmp_path / "runs"
    path, tuning = write_tiny_study(tmp_path, runs, slurm_overrides(slurm_cluster))
    try:
        started = time.monotonic()
        submitted = study("run", str(path), timeout=120)
        assert submitted.returncode == 0, submitted.stdout + submitted.stderr
        assert time.monotonic() - started < 60  # returns once queued, not when done
        waiting = dependencies()
        for later in ("tiny.tune", "tiny.length", "tiny.finetune", "tiny.report"):  # each waits afterany on its
            # upstream (read from the dependency itself: the scheduler sets the reason only at its next pass)
            assert later in waiting and all("afterany:" in d and "unfulfilled" in d for d in waiting[later]), waiting
        progress = wait_until_gone("tiny.", every=lambda: status_rows(path))
        assert any("waiting on tune" in rows["length"] for rows in progress)  # no signatures before tune

        records = summaries(runs)
        assert all(s["status"] == "done" for s in records.values()), records
        by_sweep: dict[str, list[dict]] = {}
        for s in records.values():
            by_sweep.setdefault(s["sweep"], []).append(s)
        tuned = yaml.safe_load(tuning_path(tuning).read_text())["vit_xs"]["conv"]["adamw"]
        assert {(s["lr"], s["wd"]) for s in by_sweep["tiny_length"]} == {(tuned["lr"], tuned["wd"])}
        assert by_sweep["tiny_finetune"][0]["init_from"] == by_sweep["tiny_pretrain"][0]["signature"]
        assert (tmp_path / "report" / "report.md").is_file()
        final = status_rows(path)
        assert final["length"].split()[2:4] == ["2", "2"] and "done" in final["report"]

        # the same study with the local launcher: the same runs and the same tuned values
        _, local_runs, _, local_tuning, local_result = local_study
        assert local_result.returncode == 0, local_result.stderr
        assert set(summaries(local_runs)) == set(records)
        local_tuned = yaml.safe_load(tuning_path(local_tuning).read_text())
        assert local_tuned["vit_xs"]["conv"]["adamw"] == tuned
    finally:
        remove_tuning(tuning)
        for stage in ("lrwd", "tune", "length", "pretrain", "finetune", "report"):  # one name at a time: a
            subprocess.run(["scancel", f"--name=tiny.{stage}"])  # list of names cancels nothing on this SLURM


def test_a_stage_whose_upstream_failed_for_good_ends_with_its_line_and_run_again_submits_only_the_rest(
        tmp_path, slurm_cluster):
    runs = tmp_path / "runs"
    common = ["model=vit_xs", "stem=conv", "data=synthetic", "data.num_train=64", "data.num_test=32", "logger=none",
              "threads=1", "schedule.warmup_epochs=0", "ema.enabled=false", "epochs=1", *slurm_overrides(slurm_cluster)]
    path = tmp_path / "broken.yaml"

    def write(batches: str) -> None:
        path.write_text(f"overrides: [runs_root={runs}, {', '.join(common)}]\nstages:\n"
                        f"  a: {{overrides: [sweep=broken_a, 'batch_size={batches}']}}\n"
                        "  b: {overrides: [sweep=broken_b, batch_size=16, seed=1], needs: [a]}\n")

    try:
        write("16,100000")  # a batch larger than the data set: that run fails for good
        assert study("run", str(path), timeout=120).returncode == 0
        wait_until_gone("broken.")
        rows = status_rows(path)
        assert rows["a"].split()[2:8] == ["2", "1", "0", "0", "0", "1"], rows["a"]  # runs, done, …, failed
        assert "cannot start" in rows["b"] and "1 runs of stage a are not final" in rows["b"], rows["b"]
        logs = "".join(p.read_text() for p in (runs / ".studies" / "broken").glob("*/*_log.err"))
        assert "stemsweep study: stage b cannot start: 1 runs of stage a are not final" in logs, logs[-2000:]
        assert "Traceback" not in logs and "StageFailed" not in logs, logs[-2000:]  # its one line, no more

        write("16,32")  # fixed: the failed setting is gone, a new one replaces it
        again = study("run", str(path), timeout=120)
        assert again.returncode == 0, again.stdout + again.stderr
        submitted = {line.split()[0]: line for line in again.stdout.splitlines() if line.split()}
        assert submitted["a"].split()[1:3] == ["1", "jobs:"], again.stdout  # the done run is not submitted again
        wait_until_gone("broken.")
        rows = status_rows(path)
        assert rows["b"].split()[2:4] == ["1", "1"], rows["b"]
    finally:
        for stage in ("a", "b"):
            subprocess.run(["scancel", f"--name=broken.{stage}"])
