#!/usr/bin/env bash
# scripts/install-check.sh — `make install-check`: stemsweep installs, and works, the way docs/cluster.md
# installs it on a cluster without root: `pip install -e .` into a Python of its own with its own torch.
# A fresh venv without the system's site packages (nothing of .venv, nothing apt installed), torch from
# pip (the Makefile's TORCH_PIN, standing in for the cluster's CUDA torch), then `pip install -e
# '.[notebook]'`; then, from a folder outside the clone, it plans a sweep for SLURM, trains a small
# sweep (synthetic data, ViT_C-XS and ViT_P-XS, one epoch: no embedded data set needed), shows its
# status, draws the report of the committed mini-study records and executes a notebook on them.
#   bash scripts/install-check.sh "torch==2.14.1 torchvision==0.29.1"
# Takes about 3 minutes and 7 GB of disk (CUDA torch), removed at the end. .ci/run runs it after `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
torch_pin=${1:?usage: install-check.sh "TORCH_PIN"}
work=$(mktemp -d "${TMPDIR:-/tmp}/stemsweep-install-check.XXXXXX")
trap 'rm -rf "$work"' EXIT
trap 'echo "install-check: FAILED at line $LINENO: $BASH_COMMAND" >&2' ERR
step() { echo "install-check [$((SECONDS))s]: $*"; }

step "a fresh venv without system site packages in $work/venv"
python3 -m venv "$work/venv"
bin=$work/venv/bin
"$bin/python" -c 'import sys; assert sys.prefix != sys.base_prefix and not any("dist-packages" in p for p in sys.path), sys.path'
step "pip install $torch_pin (the cluster's own torch)"
# shellcheck disable=SC2086  # the pin is two requirements
"$bin/pip" install -q $torch_pin
step "pip install -e '.[notebook]'"
"$bin/pip" install -q -e "$repo[notebook]"
"$bin/pip" check

# From elsewhere, with nothing of this machine's set-up: the package finds conf/, sweeps/ and studies/
# through its clone.
cd "$work"
export WANDB_MODE=disabled MPLBACKEND=Agg
unset PYTHONPATH STEMSWEEP_RUNS
step "stemsweep plan mini_optimizer hydra/launcher=slurm"
"$bin/stemsweep" plan mini_optimizer hydra/launcher=slurm | tail -1
step "a sweep of two synthetic runs, one epoch each"
tiny=(data=synthetic data.num_train=256 data.num_test=128 batch_size=64 logger=none threads=1 "runs_root=$work/runs")
"$bin/python" -m stemsweep.run -m stem=patch,conv epochs=1 "${tiny[@]}"
"$bin/stemsweep" status "$work/runs" | tee "$work/status.txt"
test "$(grep -c '^[0-9a-f]\{10\} .* done ' "$work/status.txt")" -eq 2
step "stemsweep report on the committed mini-study records"
"$bin/stemsweep" report "$repo/results/mini-study" --out "$work/report"
test -s "$work/report/figures/lrwd_edf_fashion_mnist.png"
step "jupyter nbconvert --execute analysis/lrwd_edf.ipynb (STEMSWEEP_RUNS unset: the committed records)"
"$bin/jupyter" nbconvert --to notebook --execute "$repo/analysis/lrwd_edf.ipynb" --output-dir "$work" \
  --ExecutePreprocessor.timeout=300 >"$work/nbconvert.log" 2>&1 || { cat "$work/nbconvert.log"; exit 1; }
grep -q 'image/png' "$work/lrwd_edf.ipynb"
if [[ ! -d $repo/runs ]]; then  # with records in runs/, the notebook reads those (docs/analysis.md)
  grep -q "runs in $repo/results/mini-study" "$work/lrwd_edf.ipynb"
fi
step "passed"
