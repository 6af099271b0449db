"""Sweeps at scale, without training: re-launching a finished 64-run sweep, submitting a 64-task job
array to the local SLURM cluster in detached mode, and `stemsweep status` over 1,000 run records.

    .venv/bin/python bench/bench_sweep.py [--repeat 3] [--no-slurm]

Targets: re-launch ≤ 2 s (every run skipped), detached submit ≤ 5 s (returns once queued). The SLURM
part needs the local cluster (`scripts/local-slurm.sh up`, then `eval "$(scripts/local-slurm.sh env)"`);
its array is submitted held (sbatch --hold) and cancelled at once, so nothing trains.
Results go in docs/benchmarks.md, section "Sweeps and launching".
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.utils import create_config_search_path
from omegaconf import open_dict

from stemsweep.compose import JobComposer, expand_grids
from stemsweep.config import CONF_DIR
from stemsweep.plan.launcher import LauncherSettings
from stemsweep.plan.runs import plan_jobs
from stemsweep.record.rundir import RunDir

N_RUNS = 64
PLANNED = re.compile(r"(\d+) runs in the sweep: (\d+) skipped .*, (\d+) to launch; planned in ([\d.]+) s")


def sweep_overrides(runs: Path) -> list[str]:
    return [f"runs_root={runs}", "model=vit_xs", "optimizer=adamw", "logger=none", f"lrwd.draw=range(0,{N_RUNS})"]


def launch(runs: Path, *extra: str) -> tuple[float, str]:
    cmd = [sys.executable, "-m", "stemsweep.run", "-m", *sweep_overrides(runs), *extra]
    tic = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HYDRA_FULL_ERROR": "1"})
    wall = time.perf_counter() - tic
    out = result.stdout + result.stderr
    if result.returncode != 0:
        sys.exit(f"the sweep failed:\n{out}")
    return wall, out


def fresh_python(code: str) -> float:
    """Seconds `code` takes in a new interpreter (what it prints)."""
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def summary_for(signature: str, status: str, **fields) -> dict:
    return {"signature": signature, "status": status, "model": "ViT_C-XS", "size": "vit_xs", "stem": "conv",
            "optimizer": "adamw", "lr": 0.016, "wd": 0.05, "epochs": 2, "epochs_done": 2, "final_error": 30.0,
            "best_error": 29.0, "final_ema_error": 29.5, "best_ema_error": 28.5, "diverged_epoch": None,
            "error_message": None, "slurm_job_id": None, "log_path": None, **fields}


def median_range(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} s ({min(values):.2f}–{max(values):.2f})"


def bench_relaunch(tmp: Path, repeat: int) -> None:
    runs = tmp / "relaunch"
    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(CONF_DIR))
    jobs = expand_grids(None, sweep_overrides(runs))
    planned = plan_jobs(jobs, JobComposer(loader), LauncherSettings())
    assert len({run.signature for run in planned}) == N_RUNS
    for run in planned:
        RunDir(runs, run.signature).write_summary(summary_for(run.signature, "done"))

    walls, plans = [], []
    for i in range(repeat):
        wall, out = launch(runs, f"hydra.sweep.dir={tmp / f'relaunch-sweep-{i}'}")
        match = PLANNED.search(out)
        assert match and match.groups()[:3] == (str(N_RUNS), str(N_RUNS), "0"), out
        walls.append(wall)
        plans.append(float(match.group(4)))
    torch_import = [fresh_python("import time; t = time.perf_counter(); import stemsweep.models; "
                                 "print(time.perf_counter() - t)") for _ in range(repeat)]
    startup = [fresh_python("import time, subprocess, sys; t = time.perf_counter(); "
                            "subprocess.run([sys.executable, '-m', 'stemsweep.run', '--help'], capture_output=True); "
                            "print(time.perf_counter() - t)") for _ in range(repeat)]

    # In this process, torch already imported: the planning itself, cached composition vs Hydra's per job.
    tic = time.perf_counter()
    plan_jobs(jobs, JobComposer(loader), LauncherSettings())
    cached = time.perf_counter() - tic
    composer = JobComposer(loader)

    def hydra_per_job(overrides):
        cfg = composer.full(overrides)
        with open_dict(cfg):
            del cfg["hydra"]
        return cfg

    tic = time.perf_counter()
    plan_jobs(jobs, hydra_per_job, LauncherSettings())
    uncached = time.perf_counter() - tic

    print(f"\n## re-launch of a finished {N_RUNS}-run sweep (all skipped), {repeat} times")
    print(f"python -m stemsweep.run -m ... wall:          {median_range(walls)}")
    print(f"  in the sweeper, 'planned in':             {median_range(plans)}")
    print(f"  of which import stemsweep.models (torch): {median_range(torch_import)}   (fresh interpreter)")
    print(f"  python -m stemsweep.run --help (start-up): {median_range(startup)}")
    print(f"planning {N_RUNS} runs, torch already imported: {cached:.2f} s "
          f"(one Hydra composition per job instead: {uncached:.2f} s)")


def bench_detached_submit(tmp: Path, repeat: int) -> None:
    walls, plans, submits = [], [], []
    for i in range(repeat):
        runs = tmp / f"submit-{i}"
        wall, out = launch(runs, "hydra/launcher=slurm", "hydra.launcher.wait=false",
                           f"hydra.sweep.dir={tmp / f'submit-sweep-{i}'}",
                           "+hydra.launcher.additional_parameters.hold=true")  # held: nothing runs
        array = re.search(r"submitted (\d+) jobs with .*: (\d+)_0 ", out)
        assert array and array.group(1) == str(N_RUNS), out
        queued = subprocess.run(["squeue", "-h", "-r", "-j", array.group(2), "-o", "%i"], capture_output=True,
                                text=True).stdout.split()
        subprocess.run(["scancel", array.group(2)], check=True)
        assert len(queued) == N_RUNS, queued
        planned_at, submitted_at = (_log_time(out, "runs in the sweep"), _log_time(out, "submitted"))
        walls.append(wall)
        plans.append(float(PLANNED.search(out).group(4)))
        submits.append(submitted_at - planned_at)
    print(f"\n## detached submit of a {N_RUNS}-task job array to the local SLURM, {repeat} times")
    print(f"python -m stemsweep.run -m ... hydra/launcher=slurm hydra.launcher.wait=false: {median_range(walls)}")
    print(f"  planning ('planned in'):                  {median_range(plans)}")
    print(f"  planned → submitted (launcher, sbatch):   {median_range(submits)}")


def _log_time(out: str, text: str) -> float:
    line = next(line for line in out.splitlines() if text in line)
    stamp = re.match(r"\[(\d+-\d+-\d+ \d+:\d+:\d+),(\d+)\]", line)
    return time.mktime(time.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S")) + int(stamp.group(2)) / 1000


def bench_status(tmp: Path, repeat: int, n: int = 1000) -> None:
    runs = tmp / "status"
    states = ["done"] * 900 + ["running"] * 50 + ["failed"] * 30 + ["diverged"] * 20
    for i, state in enumerate(states[:n]):
        signature = f"{i:010x}"
        fields = {"failed": {"error_message": "RuntimeError: x", "log_path": "/x/log.err"},
                  "diverged": {"diverged_epoch": 2}, "running": {"epochs_done": 1}}.get(state, {})
        RunDir(runs, signature).write_summary(summary_for(signature, state, slurm_job_id=f"1000_{i}", **fields))
    walls = []
    for _ in range(repeat):
        tic = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "stemsweep.cli", "status", str(runs)], capture_output=True,
                                text=True, check=True)
        walls.append(time.perf_counter() - tic)
    last = result.stdout.splitlines()[-1]
    assert last.startswith(f"{n} runs:"), last
    startup = [fresh_python("import time, subprocess, sys; t = time.perf_counter(); subprocess.run([sys.executable, "
                            "'-m', 'stemsweep.cli', '--help'], capture_output=True); print(time.perf_counter() - t)")
               for _ in range(repeat)]
    print(f"\n## stemsweep status over {n} run records, {repeat} times")
    print(f"stemsweep status RUNS wall: {median_range(walls)}   ({last})")
    print(f"  of which start-up (stemsweep --help): {median_range(startup)}")


def slurm_up() -> bool:
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-slurm", action="store_true", help="skip the SLURM submit benchmark")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs, load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="bench_sweep_") as tmp:
        bench_relaunch(Path(tmp), args.repeat)
        if args.no_slurm:
            pass
        elif slurm_up():
            bench_detached_submit(Path(tmp), args.repeat)
        else:
            print("\n(no local SLURM cluster: scripts/local-slurm.sh up, then eval \"$(scripts/local-slurm.sh env)\")")
        bench_status(Path(tmp), args.repeat)
    print(f"\nload average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
