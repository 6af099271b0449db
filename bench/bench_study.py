"""The paper's whole study without training: planning it (about 515 runs) and submitting it to SLURM.

    .venv/bin/python bench/bench_study.py [--repeat 3] [--no-slurm]

Targets: `stemsweep study plan paper` ≤ 3 s, submitting every stage ≤ 15 s. Each plan runs in a fresh
process, as a user's command does (imports included): cold, with an empty folder of kept compositions
(stemsweep/sweep/kept.py), and warm, the same command again. The paper's resources (8 GPUs a run, days) do not
fit the local node, whose partition would reject them at submit, so the submit asks for the launcher's
small resources instead (`hydra.launcher.resources=launcher`) and every job is submitted held (sbatch
--hold) and cancelled at once: nothing trains. The SLURM part needs the local cluster (`scripts/local-slurm.sh
up`, then `eval "$(scripts/local-slurm.sh env)"`). Results go in docs/benchmarks.md, section "Studies".
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time


def plan_seconds(kept: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "stemsweep.cli", "study", "plan", "paper", "--stages-only"], check=True,
                   capture_output=True, env={**os.environ, "STEMSWEEP_COMPOSE_CACHE": kept})
    return time.perf_counter() - started


def cold_and_warm_plan() -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as kept:
        return plan_seconds(kept), plan_seconds(kept)


def submit_seconds(partition: str, kept: str) -> tuple[float, int]:
    """Submit the paper study held, in-process after the imports (what `stemsweep study run` costs once
    its imports are done: finding the launcher, planning, submitting); cancel it."""
    code = f"""
import time
from stemsweep.study.spec import load_study
from stemsweep.study.runner import study_launcher
from stemsweep.study.slurm import submit_study
overrides = ["runs_root={tempfile.mkdtemp()}", "hydra/launcher=slurm", "hydra.launcher.partition={partition}",
             "hydra.launcher.resources=launcher", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1",
             "hydra.launcher.timeout_min=10", "hydra.launcher.wait=false"]
study = load_study("paper")
started = time.perf_counter()
jobs = submit_study(study, overrides, study_launcher(study, overrides), hold=True)
print(time.perf_counter() - started, sum(len(ids) for ids in jobs.values()))
print(" ".join(sorted({{j.split("_")[0] for ids in jobs.values() for j in ids}})))
"""
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                         env={**os.environ, "STEMSWEEP_COMPOSE_CACHE": kept}).stdout.splitlines()
    seconds, count = out[0].split()
    subprocess.run(["scancel", *out[1].split()], check=False)
    return float(seconds), int(count)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-slurm", action="store_true")
    parser.add_argument("--partition", default="debug")
    args = parser.parse_args()
    plans = [cold_and_warm_plan() for _ in range(args.repeat)]
    for name, times in (("cold", [c for c, _ in plans]), ("warm", [w for _, w in plans])):
        each = ", ".join(f"{t:.2f}" for t in times)
        print(f"study plan paper, {name}: median {statistics.median(times):.2f} s over {args.repeat} ({each})")
    if not args.no_slurm:
        for name in ("cold", "warm"):
            submits = []
            for _ in range(args.repeat):
                with tempfile.TemporaryDirectory() as kept:
                    if name == "warm":
                        plan_seconds(kept)
                    submits.append(submit_seconds(args.partition, kept))
            each = ", ".join(f"{s:.2f}" for s, _ in submits)
            print(f"submit the paper study (held), {name}: median {statistics.median(s for s, _ in submits):.2f} s "
                  f"over {args.repeat} ({each}), {submits[0][1]} jobs")


if __name__ == "__main__":
    main()
