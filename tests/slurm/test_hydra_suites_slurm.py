"""Hydra's launcher suite checks, ported to the stemsweep app, on the SLURM launcher and the real local
SLURM cluster (tests/sweep/test_hydra_suites.py has the reasons and the local launchers' share).

One blocking 2-run sweep is launched once, as a user launches it, with Hydra's common
`hydra.sweep.subdir=${hydra.job.override_dirname}`; the tests read what each job returned (submitit keeps
the JobReturn the job sent back) and what it left in its output folder.
"""

from __future__ import annotations

import ast
import json
import os
import pickle
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from omegaconf import OmegaConf

pytestmark = pytest.mark.slurm

TINY = ["data=synthetic", "data.num_train=64", "data.num_test=64", "batch_size=64", "threads=1", "logger=none",
        "epochs=1", "schedule.warmup_epochs=0"]


@dataclass
class SlurmSweep:
    runs: Path
    sweep_dir: Path
    launch: subprocess.CompletedProcess
    job_overrides: list[list[str]]  # in the order of the sweep's jobs (their hydra.job.num)


@pytest.fixture(scope="module")
def slurm_sweep(slurm_cluster, tmp_path_factory) -> SlurmSweep:
    root = tmp_path_factory.mktemp("hydra_suites")
    runs, sweep_dir = root / "runs", root / "sweep"
    task = [f"runs_root={runs}", *TINY]
    cmd = [sys.executable, "-m", "stemsweep.run", "-m", "hydra/launcher=slurm", f"hydra.sweep.dir={sweep_dir}",
           "hydra.sweep.subdir=${hydra.job.override_dirname}", "hydra.launcher.timeout_min=5", *task,
           "stem=patch,conv"]
    launch = subprocess.run(cmd, env={**os.environ, "HYDRA_FULL_ERROR": "1"}, capture_output=True, text=True,
                            timeout=300)
    return SlurmSweep(runs, sweep_dir, launch, [[*task, f"stem={stem}"] for stem in ("patch", "conv")])


def job_returns(sweep_dir: Path) -> list:
    """What each job sent back to the launcher (submitit's result file: ("success", JobReturn)), by job number."""
    returns = []
    for path in (sweep_dir / ".submitit").rglob("*_result.pkl"):
        outcome, job_return = pickle.loads(path.read_bytes())
        assert outcome == "success", job_return
        returns.append(job_return)
    return sorted(returns, key=lambda r: r.hydra_cfg.hydra.job.num)


def test_an_override_dirname_sweep_runs_on_slurm(slurm_sweep):
    out = slurm_sweep.launch.stdout + slurm_sweep.launch.stderr
    assert slurm_sweep.launch.returncode == 0, out
    summaries = [json.loads(p.read_text()) for p in slurm_sweep.runs.glob("*/summary.json")]
    assert sorted((s["stem"], s["status"]) for s in summaries) == [("conv", "done"), ("patch", "done")]
    assert all(s["slurm_job_id"] for s in summaries)
    # one array with the model's resources (conf/model/family/cpu.yaml), less the command line's timeout_min:
    # under Hydra 1.4 too, whose jobs may not change hydra.launcher (hydra #3231); the resources are the run's
    submitted = re.search(r"submitted 2 jobs with (\{.*\}): \d+_0 \d+_1", out)
    assert submitted, out
    assert ast.literal_eval(submitted.group(1)) == {"nodes": 1, "tasks_per_node": 1, "gpus_per_node": None,
                                                    "cpus_per_task": 1, "mem_gb": 2}, out


def test_each_job_has_its_overrides_number_output_folder_and_return_value(slurm_sweep):
    # LauncherTestSuite's sweep_2_jobs and verify_dir_outputs, ported
    returns = job_returns(slurm_sweep.sweep_dir)
    assert [r.overrides for r in returns] == slurm_sweep.job_overrides
    assert [r.hydra_cfg.hydra.job.num for r in returns] == [0, 1]
    for job, overrides in zip(returns, slurm_sweep.job_overrides, strict=True):
        assert job.hydra_cfg.hydra.job.name == "run" and job.hydra_cfg.hydra.job.id
        output = Path(job.hydra_cfg.hydra.runtime.output_dir)
        assert output == slurm_sweep.sweep_dir / ",".join(sorted(overrides))  # Hydra's override_dirname
        assert OmegaConf.load(output / ".hydra" / "overrides.yaml") == OmegaConf.create(overrides)
        assert (output / "run.log").is_file()
        [summary] = [json.loads(p.read_text()) for p in slurm_sweep.runs.glob("*/summary.json")
                     if json.loads(p.read_text())["stem"] == job.cfg.stem.name]
        assert job.return_value == summary["study_error"]  # the run's error, what a sweeper optimises
    multirun = OmegaConf.load(slurm_sweep.sweep_dir / "multirun.yaml")
    assert multirun.hydra.overrides.task == [*slurm_sweep.job_overrides[0][:-1], "stem=patch,conv"]
