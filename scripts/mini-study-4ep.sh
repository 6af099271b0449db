#!/usr/bin/env bash
# A fairer check of the mini study's ViT results (docs/mini-study.md, "Tuned at 4 epochs"): the
# mini study tunes lr/wd on 1-epoch runs, its shortest schedule; here the two ViTs are tuned on
# 4-epoch runs and the training-length, optimizer and peak runs are repeated at those values.
#   1. mini4_lrwd: 16 (lr, wd) draws per ViT and optimizer, 4 epochs (the mini lr/wd sweeps' draws);
#   2. stemsweep tune → conf/tuning/mini4.yaml;
#   3. mini4_tuned: 1, 2, 4 epochs × AdamW, SGD × 3 seeds; mini4_peak: AdamW, 8 epochs, 3 seeds;
#   4. stemsweep export → results/mini-study-4ep/, stemsweep report from it → docs/mini-study-4ep/.
# Everything else is the mini study's (+study=mini). Resumable like scripts/mini-study.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
RUNS=${RUNS:-runs/mini4}
RESULTS=${RESULTS:-results/mini-study-4ep}
OUT=${OUT:-docs/mini-study-4ep}
JOBS=${JOBS:-2}
THREADS=${THREADS:-1}
export WANDB_MODE=${WANDB_MODE:-offline}
source scripts/study-steps.sh
common=(+study=mini model=vit_xs stem=patch,conv "runs_root=$RUNS" hydra/launcher=local_parallel
        "hydra.launcher.n_jobs=$JOBS" "threads=$THREADS")

timed mini4_lrwd "$PY" -m stemsweep.run -m "${common[@]}" sweep=mini4_lrwd optimizer=adamw,sgd epochs=4 \
  lrwd.seed=0 'lrwd.draw=range(0,16)'
timed tune "$PY" -m stemsweep.cli tune "$RUNS" --sweeps mini4_lrwd --out conf/tuning/mini4.yaml
timed mini4_tuned "$PY" -m stemsweep.run -m "${common[@]}" tuning=mini4 sweep=mini4_tuned optimizer=adamw,sgd \
  epochs=1,2,4 seed=0,1,2
timed mini4_peak "$PY" -m stemsweep.run -m "${common[@]}" tuning=mini4 sweep=mini4_peak optimizer=adamw epochs=8 \
  seed=0,1,2
export_and_report
