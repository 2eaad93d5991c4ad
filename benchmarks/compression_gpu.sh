#!/usr/bin/env bash
# The GPU half of reports/compression.md, fitted to a time budget on one GPU machine:
#   1. train the two float sources with their recipes (training/configs/mobilenetv2.yaml,
#      mobilenetv3-large.yaml), side by side, for as many epochs as fit (measured by a 1-epoch probe);
#   2. the study's pruning stages (magnitude -30 % / -50 % MACs, and Taylor -50 % as the alternative),
#      each fine-tuned, through `benchmarks/compression.py run --train-only`.
# QAT and every export run afterwards on the CPU machine, with the same study settings and without
# --train-only: QAT needs litert-torch's quantizer (with ai-edge-litert and jax) and the exports the
# converters, which a bare GPU machine does not have. Needs torch, timm, opencv and torch-pruning.
#
#   EDGEFA_SHARED=PACK benchmarks/compression_gpu.sh BUDGET_SECONDS LOG_DIR [FT_EPOCHS]
#
# PACK: `python -m edgefa.training.pack_data PACK --archive` (aflw-train as WebP, bfm68, the mb05 teacher),
# uploaded as PACK.tgz and unpacked there. Checkpoints land in runs/ (sources runs/NAME/best.pt,
# studies runs/compression/NAME[-taylor]); bring back best.pt, pruned.pt, summary.json, study.json.
# Measured on an H200 with 16 cores (2026-12-04): 110 ms per batch of 128 with the two sources
# side by side, far below what the GPU can do: profile a step before planning a longer run.
set -euo pipefail
budget=${1:?budget seconds}; out=${2:?output folder}; ft_fixed=${3:-}
t0=$(date +%s)
elapsed() { echo $(( $(date +%s) - t0 )); }
mkdir -p "$out" runs
export PYTHONUNBUFFERED=1
MODELS="mobilenetv2 mobilenetv3-large"
STUDY=(--qat-epochs 2 --qat-data "aflw-train,split=train,n=4000" --quiet)
read -r -a extra <<<"${EXTRA:-}"  # key=value overrides for every run (a CPU smoke test: tiny data)

# 1. probe: two short epochs (20 batches) of each recipe, side by side as the real runs will be;
#    the second epoch's time is the steady one (the first pays CUDA start-up)
for m in $MODELS; do
  python3 -m edgefa train --config training/configs/$m.yaml --quiet epochs=2 output=runs/probe-$m \
    "data.train=aflw-train,split=train,n=2560" "data.val=aflw-train,split=val,n=256" data.workers=7 \
    "${extra[@]}" > "$out/probe-$m.log" 2>&1 &
done
wait
read -r epochs ft <<<"$(python3 - "$budget" "$(elapsed)" "$ft_fixed" <<'EOF'
import json, math, sys
budget, spent, ft_fixed = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
def epoch_s(m):
    h = json.load(open(f"runs/probe-{m}/summary.json"))["history"]
    return h[1]["seconds"] - h[0]["seconds"]

step = max(epoch_s(m) for m in ("mobilenetv2", "mobilenetv3-large")) / 20  # s per batch, val included
steps = math.ceil((18392 * 0.95 + 4000) / 128)
left = budget - spent - 60  # the tar and a margin
train_s = 0.5 * left
epochs = max(2, min(60, int((train_s - 30) / (steps * step))))  # 30 s: caching (4,000 synthetic renders)
# pruning: two studies per model at once (magnitude p50 then p30; Taylor p50). Measured on the H200
# (2026-12-04): a fine-tune epoch took ~2x the probe's (four runs share the GPU and the cores, the
# unpruned teacher is heavier than mb05), each stage caches its data again (~30 s) and the channel
# ratio search took 40-110 s; the magnitude study runs two stages back to back
ft = int(ft_fixed) if ft_fixed else max(1, min(20, int((left - train_s - 2 * (30 + 110)) / (2 * steps * step * 2))))
print(epochs, ft)
EOF
)"
echo "probe done at $(elapsed) s: sources $epochs epochs, fine-tunes $ft epochs" | tee "$out/plan.txt"

# 2. the sources, side by side
for m in $MODELS; do
  python3 -m edgefa train --config training/configs/$m.yaml --quiet epochs=$epochs data.workers=7 \
    output=runs/$m "${extra[@]}" > "$out/train-$m.log" 2>&1 &
done
wait
echo "sources done at $(elapsed) s" | tee -a "$out/plan.txt"

# 3. pruning stages (train only), magnitude and Taylor studies of each source at once
for m in $MODELS; do
  for stage in p50 p30; do  # -50 % first: the goal is set on it
    python3 benchmarks/compression.py run --source runs/$m/best.pt -o runs/compression/$m --stages $stage \
      --finetune-epochs "$ft" --workers 4 --train-only "${STUDY[@]}" "${extra[@]}" >> "$out/prune-$m.log" 2>&1
  done &
  python3 benchmarks/compression.py run --source runs/$m/best.pt -o runs/compression/$m-taylor --name $m-taylor \
    --stages p50 --method taylor --finetune-epochs "$ft" --workers 3 --train-only "${STUDY[@]}" \
    "${extra[@]}" > "$out/prune-$m-taylor.log" 2>&1 &
done
wait || true
echo "pruning done at $(elapsed) s" | tee -a "$out/plan.txt"
nvidia-smi --query-gpu=name,memory.used --format=csv >> "$out/plan.txt" 2>&1 || true
