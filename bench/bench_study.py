"""The paper's whole study without training: planning it (about 515 runs) and submitting it to SLURM.

    .venv/bin/python bench/bench_study.py [--repeat 3] [--no-slurm]

Targets: `stemsweep study plan paper` ≤ 10 s in a fresh process (imports included, as a user's command),
median of 3; submitting every stage ≤ 15 s. Nothing is kept between commands (the kept compositions of
stemsweep/sweep/kept.py are gone: a pickle read from a folder others can write is code execution), so each
plan is cold. The paper's resources (8 GPUs a run, days) do not
fit the local node, whose partition would reject them at submit, so the submit asks for the launcher's
small resources instead (`hydra.launcher.resources=launcher`) and every job is submitted held (sbatch
--hold) and cancelled at once: nothing trains. The SLURM part needs the local cluster (`scripts/local-slurm.sh
up`, then `eval "$(scripts/local-slurm.sh env)"`). Results go in docs/benchmarks.md, section "Studies".
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time


def plan_seconds(study: str = "paper") -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "stemsweep.cli", "study", "plan", study, "--stages-only"], check=True,
                   capture_output=True)
    return time.perf_counter() - started


def submit_seconds(partition: str) -> tuple[float, int]:
    """Submit the paper study held, in-process after the imports (what `stemsweep study run` costs once
    its imports are done: finding the launcher, planning, submitting); cancel it."""
    code = f"""
import time
from stemsweep.study.plan import plan_study
from stemsweep.study.spec import load_study
from stemsweep.study.slurm import submit_study
overrides = ["runs_root={tempfile.mkdtemp()}", "hydra/launcher=slurm", "hydra.launcher.partition={partition}",
             "hydra.launcher.resources=launcher", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1",
             "hydra.launcher.timeout_min=10"]
study = load_study("paper")
started = time.perf_counter()
plans = plan_study(study, overrides)
launcher = next(p.launcher for p in plans if p.launcher is not None)
jobs = submit_study(study, overrides, launcher, hold=True, plans=plans)
print(time.perf_counter() - started, sum(len(ids) for ids in jobs.values()))
print(" ".join(sorted({{j.split("_")[0] for ids in jobs.values() for j in ids}})))
"""
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.splitlines()
    seconds, count = out[0].split()
    subprocess.run(["scancel", *out[1].split()], check=False)
    return float(seconds), int(count)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-slurm", action="store_true")
    parser.add_argument("--partition", default="debug")
    args = parser.parse_args()
    for study in ("paper", "paper_adaptive"):
        times = [plan_seconds(study) for _ in range(args.repeat)]
        each = ", ".join(f"{t:.2f}" for t in times)
        print(f"study plan {study}: median {statistics.median(times):.2f} s over {args.repeat} ({each})")
    if not args.no_slurm:
        submits = [submit_seconds(args.partition) for _ in range(args.repeat)]
        each = ", ".join(f"{s:.2f}" for s, _ in submits)
        print(f"submit the paper study (held): median {statistics.median(s for s, _ in submits):.2f} s "
              f"over {args.repeat} ({each}), {submits[0][1]} jobs")


if __name__ == "__main__":
    main()
