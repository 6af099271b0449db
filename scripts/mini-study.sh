#!/usr/bin/env bash
# The mini study end to end (`make mini-study`): tune, then run every mini sweep, then the report.
#   1. mini_lrwd_adamw, mini_lrwd_sgd: 16 (lr, wd) draws per model, 1 epoch;
#   2. stemsweep tune: each model's best draw per optimizer → conf/tuning/mini.yaml;
#   3. mini_training_length, mini_optimizer (3 seeds a point), mini_peak at the tuned values;
#   4. stemsweep export → results/mini-study/ (the records, committed), stemsweep report from them →
#      docs/mini-study/.
# Resumable: launched again, a sweep skips its finished runs and resumes broken ones from their
# checkpoints, and tuning gives the same values from the same runs. Each step's wall time is appended
# to $RESULTS/wall_time.csv.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
RUNS=${RUNS:-runs/mini-study}
RESULTS=${RESULTS:-results/mini-study}
OUT=${OUT:-docs/mini-study}
JOBS=${JOBS:-2}        # runs at once
THREADS=${THREADS:-1}  # torch threads per run: JOBS × THREADS = the cores to use
export WANDB_MODE=${WANDB_MODE:-offline}
source scripts/study-steps.sh

sweep() {
  timed "$1" "$PY" -m stemsweep.run -m "+sweeps=$1" "runs_root=$RUNS" hydra/launcher=local_parallel \
    "hydra.launcher.n_jobs=$JOBS" "threads=$THREADS"
}

sweep mini_lrwd_adamw
sweep mini_lrwd_sgd
timed tune "$PY" -m stemsweep.cli tune "$RUNS" --sweeps mini_lrwd_adamw mini_lrwd_sgd --out conf/tuning/mini.yaml
sweep mini_training_length
sweep mini_optimizer
sweep mini_peak
export_and_report
