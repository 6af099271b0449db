#!/usr/bin/env bash
# The prepared device check (docs/benchmarks.md, "GPU"): on one GPU, in about 5 minutes of its 8,
#   1. the training step of ViT_P-4GF, ViT_C-4GF and RegNetY-4GF at 224² against timm's ViT at the same
#      configuration: images/s and bf16 MFU (model training flops over the measured bf16 GEMM rate),
#      eager, and ViT_C-4GF's with torch.compile;
#   2. a generated ImageNet-style JPEG folder, and on it the GPU input pipeline's images/s against the
#      CPU pipeline's, alone and feeding ViT_C-4GF's training step;
#   3. a 2-epoch real run of ViT_C-4GF on that folder (data.pipeline=auto: the GPU pipeline), its record.
# Everything it prints is also in OUT/gpu_check.log; results as JSON and the run's record under OUT.
#
#   bash bench/gpu_check.sh [--out DIR]        # after `make setup` (PY=python to use another Python)
#   bash bench/gpu_check.sh --dry-run          # the same script end to end on the CPU at toy sizes
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DRY=0 OUT=""
while (($#)); do
  case $1 in
    --dry-run) DRY=1 ;;
    --out) OUT=$2; shift ;;
    *) echo "gpu_check.sh: unknown argument $1 (allowed: --dry-run, --out DIR)" >&2; exit 2 ;;
  esac
  shift
done
OUT=${OUT:-gpu-check/$(date -u +%Y%m%dT%H%M%SZ)$( ((DRY)) && echo -dry-run)}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1
echo "gpu_check: results in $OUT"

if ((DRY)); then  # toy sizes, CPU: every step runs, nothing is measured
  STEP=(--device cpu --vit vit_xs --regnety regnety_xs --image 32 --batch 8 --steps 2 --rounds 1 --gemm 256)
  COMPILE=eager  # dynamo's tracing without inductor's minutes of C++ compilation
  JPEGS=(--classes 4 --train-per-class 16 --val-per-class 4 --size 64)
  PIPE=(--device cpu --vit vit_xs --image 32 --batch 8 --batches 2 --rounds 1 --workers 1)
  RUN=(model=vit_xs data.image_size=32 batch_size=16 device=cpu)
  LIMIT=300
else
  "$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device: use --dry-run'"
  "$PY" -c "import torch; print('GPU:', torch.cuda.get_device_name(), '| torch', torch.__version__)"
  nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit --format=csv || true
  STEP=(--device cuda)
  COMPILE=inductor
  JPEGS=(--classes 10 --train-per-class 1000 --val-per-class 50 --size 320)
  PIPE=(--device cuda)
  RUN=(model=vit_4gf batch_size=256 device=cuda)
  LIMIT=150
fi

echo "== 1. training step ($(date +%T))"
timeout "$LIMIT" "$PY" bench/gpu_check.py step "${STEP[@]}" --out "$OUT"
# compiled: ViT_C-4GF, ours and timm's, the MFU target (inductor takes about a minute a model)
timeout "$LIMIT" "$PY" bench/gpu_check.py step "${STEP[@]}" --compile "$COMPILE" --only ViT_C --out "$OUT"
echo "== 2. input pipelines on a generated JPEG folder ($(date +%T))"
timeout "$LIMIT" "$PY" bench/gpu_check.py jpegs "${JPEGS[@]}" --out "$OUT/jpegs"
timeout "$LIMIT" "$PY" bench/gpu_check.py pipeline "${PIPE[@]}" --root "$OUT/jpegs" --out "$OUT"
echo "== 3. a 2-epoch run on the folder ($(date +%T))"
WANDB_MODE=offline timeout "$LIMIT" "$PY" -m stemsweep.run "${RUN[@]}" stem=conv data=imagenet \
  "data.root=$OUT/jpegs" data.check_shape=false epochs=2 schedule.warmup_epochs=1 aug=paper "runs_root=$OUT/runs" \
  "data.num_workers=$("$PY" -c 'import os; print(max(1, (os.cpu_count() or 2) - 1))')"
for run in "$OUT"/runs/*/; do
  echo "record $run:"
  cat "$run/summary.json" "$run/metrics.jsonl"
done
echo "gpu_check: done ($(date +%T)); results in $OUT"
