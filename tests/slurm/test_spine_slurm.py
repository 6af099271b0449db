"""The planning spine's one submitter on the real local SLURM (MaxArraySize 1001): a plain sweep and a study
stage are split at MaxArraySize alike, every array honours array_parallelism (the stages after `tune`
included), a fine-tune in a stage of its own waits on its source's task only, a refused submission leaves
nothing behind, and a task whose place in its stage now holds another run refuses with one line."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from stemsweep.compose import signature_of_overrides

pytestmark = pytest.mark.slurm

TINY = ["model=vit_xs", "stem=conv", "data=synthetic", "data.num_train=64", "data.num_test=32", "batch_size=32",
        "logger=none", "threads=1", "schedule.warmup_epochs=0", "ema.enabled=false", "epochs=1"]


def squeue(name: str) -> list[dict[str, str]]:
    """This cluster's jobs named `name`, one row per array (or job): id, tasks, dependency, reason."""
    out = subprocess.run(["squeue", "-h", f"--name={name}", "-o", "%F|%K|%E|%r"], capture_output=True, text=True,
                         check=True).stdout
    return [dict(zip(("id", "tasks", "dependency", "reason"), line.split("|"))) for line in out.splitlines()]


def cancel(*names: str) -> None:
    for name in names:  # one name at a time: `scancel --name a,b` cancels nothing on this SLURM
        subprocess.run(["scancel", f"--name={name}"], capture_output=True)


def launcher(cluster, name: str | None = None, parallel: int = 64) -> list[str]:
    return ["hydra/launcher=slurm", f"hydra.launcher.partition={cluster.partition}", "hydra.launcher.wait=false",
            "+hydra.launcher.additional_parameters.hold=true", f"hydra.launcher.array_parallelism={parallel}",
            *([f"hydra.launcher.name={name}"] if name else [])]


def stemsweep(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "WANDB_MODE": "offline"})


def test_1002_runs_are_split_at_max_array_size_by_the_launcher_and_by_a_study(tmp_path, slurm_cluster):
    name = f"big{os.getpid()}"
    grid = [*TINY, "seed=range(0,1002)"]
    try:
        sweep = stemsweep("-m", "stemsweep.run", "-m", *grid, f"runs_root={tmp_path / 'sweep'}",
                          *launcher(slurm_cluster, name))
        assert sweep.returncode == 0, sweep.stderr[-3000:]
        arrays = squeue(name)
        # 64 at once, shared by the two pieces; submitit submits a piece of one task as a plain job
        assert sorted(a["tasks"] for a in arrays) == ["0-1000%32", "N/A"], arrays
        assert {a["reason"] for a in arrays} == {"JobHeldUser"}
        assert len(list((tmp_path / "sweep").glob("*/slurm_job"))) == 1002
        cancel(name)

        study = tmp_path / "big.yaml"
        study.write_text(f"overrides: [runs_root={tmp_path / 'study'}, {', '.join(launcher(slurm_cluster))}]\n"
                         f"stages:\n  grid: {{overrides: [{', '.join(repr(o) for o in grid)}]}}\n")
        submitted = stemsweep("-m", "stemsweep.cli", "study", "run", str(study))
        assert submitted.returncode == 0, submitted.stderr[-3000:]
        assert sorted(a["tasks"] for a in squeue("big.grid")) == ["0-1000%32", "N/A"]
    finally:
        cancel(name, "big.grid")


def test_a_submission_sbatch_refuses_is_one_line_and_leaves_no_run_folders(tmp_path, slurm_cluster):
    runs = tmp_path / "runs"
    refused = stemsweep("-m", "stemsweep.run", "-m", *TINY, "seed=0,1", f"runs_root={runs}",
                        *launcher(slurm_cluster), "hydra.launcher.partition=no_such_partition")
    assert refused.returncode != 0
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith("stemsweep: SLURM refused the submission (") and "partition" in last.lower(), last
    assert not runs.exists() or not any(p.is_dir() and not p.name.startswith(".") for p in runs.iterdir())


def test_a_tiny_study_honours_array_parallelism_and_a_moved_task_refuses(tmp_path, slurm_cluster):
    """Submitted held with array_parallelism=1: every sweep stage's array is %1, after tune too, and the
    fine-tune (a stage of its own) waits on its source's task, not the pre-training array. Then the lr/wd
    stage is edited so that another draw sits at task 3's place, and released: task 3 refuses with its
    line, the other three train."""
    runs = tmp_path / "runs"
    pretrain = ["sweep=s_pretrain", "optimizer=adamw", "seed=0"]
    source = signature_of_overrides(" ".join([*TINY, *pretrain]))
    tuning = f"test_{os.getpid()}"
    study = tmp_path / "spine.yaml"

    def write(draws: str) -> None:
        study.write_text(
            f"overrides: [runs_root={runs}, {', '.join(TINY + launcher(slurm_cluster, parallel=1))}]\nstages:\n"
            f"  lrwd: {{overrides: [sweep=s_lrwd, optimizer=adamw, lrwd.seed=0, 'lrwd.draw={draws}']}}\n"
            f"  tune: {{tune: {{from: [lrwd], out: {tuning}}}, needs: [lrwd]}}\n"
            f"  length: {{overrides: [sweep=s_length, tuning={tuning}, optimizer=adamw, 'seed=0,1'], needs: [tune]}}\n"
            f"  pretrain: {{overrides: [{', '.join(pretrain)}]}}\n"
            f"  pre2: {{overrides: [sweep=s_pre2, optimizer=adamw, 'seed=1,2']}}\n"
            f"  finetune: {{overrides: [sweep=s_fine, optimizer=adamw, seed=0, epochs=2, init_from={source}], "
            "needs: [pretrain, pre2]}\n")

    write("0,1,2,3")
    try:
        submitted = stemsweep("-m", "stemsweep.cli", "study", "run", str(study))
        assert submitted.returncode == 0, submitted.stderr[-3000:]
        for stage in ("lrwd", "length", "pre2"):  # after tune too
            [array] = squeue(f"spine.{stage}")
            assert array["tasks"].endswith("%1"), (stage, array)
        [pre] = squeue("spine.pretrain")  # one run: submitit submits it as a plain job
        [fine] = squeue("spine.finetune")
        assert fine["tasks"] == "N/A" and f"afterany:{pre['id']}(" in fine["dependency"], (fine, pre)
        [pre2] = squeue("spine.pre2")
        assert pre2["id"] in fine["dependency"]  # a needed stage that does not hold its source: the whole stage

        write("0,1,2,5")  # another run now sits at task 3's place
        [lrwd] = squeue("spine.lrwd")
        subprocess.run(["scontrol", "update", f"jobid={lrwd['id']}", "ArrayTaskThrottle=4"], check=True)
        subprocess.run(["scontrol", "release", lrwd["id"]], check=True)
        deadline = time.monotonic() + 240
        while squeue("spine.lrwd") and time.monotonic() < deadline:
            time.sleep(2)
        assert not squeue("spine.lrwd"), "the lr/wd tasks did not end in 240 s"
        done = [p for p in runs.glob("*/summary.json") if '"status": "done"' in p.read_text()]
        assert len(done) == 3
        logs = "".join(p.read_text() for p in (runs / ".studies" / "spine").glob(f"{lrwd['id']}_3/*_log.err"))
        assert "stemsweep study: task 3 of stage lrwd was planned to train" in logs and "lrwd.draw=3" in logs, logs
        assert "Traceback" not in logs, logs
    finally:
        cancel(*(f"spine.{s}" for s in ("lrwd", "tune", "length", "pretrain", "pre2", "finetune")))
