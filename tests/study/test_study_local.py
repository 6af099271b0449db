"""A whole study with a local launcher, as a user runs it: `stemsweep study run FILE`, real tiny runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml
from tiny import COMMON, study, summaries, tuning_path

pytestmark = pytest.mark.processes  # each stage's sweep is a process of its own


def test_a_local_study_runs_its_stages_in_order_and_binds_each_to_what_came_before(local_study):
    folder, runs, path, tuning, first = local_study
    assert first.returncode == 0, first.stdout + first.stderr
    by_sweep: dict[str, list[dict]] = {}
    for s in summaries(runs).values():
        assert s["status"] == "done", s
        by_sweep.setdefault(s["sweep"], []).append(s)
    assert {k: len(v) for k, v in by_sweep.items()} == {"tiny_lrwd": 4, "tiny_length": 2, "tiny_pretrain": 1,
                                                          "tiny_finetune": 1}
    # tune wrote the best draw, and the training-length runs trained at it
    tuned = yaml.safe_load(tuning_path(tuning).read_text())["vit_xs"]["conv"]["adamw"]
    best = min(by_sweep["tiny_lrwd"], key=lambda s: s["best_error"])
    assert (tuned["lr"], tuned["wd"]) == (best["lr"], best["wd"])
    assert {(s["lr"], s["wd"]) for s in by_sweep["tiny_length"]} == {(best["lr"], best["wd"])}
    # the fine-tuning run started from its own pre-training run
    assert by_sweep["tiny_finetune"][0]["init_from"] == by_sweep["tiny_pretrain"][0]["signature"]
    assert (folder / "report" / "report.md").is_file()
    kept = json.loads((runs / ".studies" / "tiny.json").read_text())["stages"]
    assert {name: stage["state"] for name, stage in kept.items()} == dict.fromkeys(
        ["lrwd", "tune", "length", "pretrain", "finetune", "report"], "done")


def test_run_again_the_study_trains_nothing_and_its_runs_are_the_sweeps_own(local_study):
    folder, runs, path, tuning, _ = local_study
    before = {sig: s["updated"] for sig, s in summaries(runs).items()}
    again = study("run", str(path))
    assert again.returncode == 0, again.stdout + again.stderr
    assert {sig: s["updated"] for sig, s in summaries(runs).items()} == before
    # the same runs launched from a sweep of their own are found done: a run's identity does not
    # depend on how it was launched
    direct = subprocess.run(
        [sys.executable, "-m", "stemsweep.run", "-m", f"runs_root={runs}", *COMMON, "sweep=tiny_length",
         f"tuning={tuning}", "optimizer=adamw", "epochs=2,3"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "WANDB_MODE": "offline"})
    assert "2 runs in the sweep: 2 skipped" in direct.stdout + direct.stderr, direct.stdout + direct.stderr


def test_study_status_shows_each_stage(local_study):
    folder, runs, path, tuning, _ = local_study
    status = study("status", str(path))
    assert status.returncode == 0, status.stderr
    lines = {line.split()[0]: line.split() for line in status.stdout.splitlines()[1:]}
    assert lines["lrwd"][:4] == ["lrwd", "sweep", "4", "4"] and lines["length"][:4] == ["length", "sweep", "2", "2"]
    assert "done" in lines["tune"] and "done" in lines["report"]


def test_the_plan_of_new_runs_costs_them_at_the_speed_the_study_measured(local_study):
    folder, runs, path, tuning, _ = local_study
    # the study's finished runs say where they trained (device, resolution): new seeds of the same models
    # are costed from their measured images/s, done runs cost nothing
    plan = study("plan", str(path), "seed=7")
    assert plan.returncode == 0, plan.stderr
    lines = plan.stdout.splitlines()
    lrwd = [line for line in lines if "lrwd.draw=" in line]
    assert len(lrwd) == 4 and all("measured (" in line and " new " in line for line in lrwd), lines
    done = study("plan", str(path))
    assert all(" 0 CPU-h  done" in line for line in done.stdout.splitlines() if "lrwd.draw=" in line), done.stdout
