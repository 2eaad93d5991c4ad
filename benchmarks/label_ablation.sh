#!/usr/bin/env bash
# Which supervision moves the student: the ablation table of reports/training.md.
# MobileNetV3-Small, the refined recipe's augmentation, EMA and cosine schedule cut to EPOCHS epochs
# (default 3, warm-up 0.3 epochs), with only the supervision changed:
#   distill  - online distillation from the mb05 teacher on every augmented view (WPDC on its 62
#              parameters) + the visible AFLW-21 points (fixed index map) + the AFLW yaw: the
#              supervision of the original aflw-train recipes;
#   refined  - the refined labels (training/labels.py): WPDC + 68-point distance + yaw, no teacher;
#   both     - refined labels and online distillation together.
# The long-schedule row is the recipe itself (training/configs/mobilenetv3-small-refined.yaml).
# Needs the labels file: python -m edgefa.training.labels runs/labels/aflw-train.npz --check
#
#   benchmarks/label_ablation.sh [EPOCHS]     -> runs/ablate-{distill,refined,both}-eEPOCHS
set -euo pipefail
epochs=${1:-3}
recipe=training/configs/mobilenetv3-small-refined.yaml
teacher="teacher=3ddfa-v2-mb05:{shared}/peers/3ddfa_v2_mb05/mb05_120x120.pth"
common=("epochs=$epochs" "schedule.warmup_epochs=0.3" "data.workers=1")
edgefa train --config $recipe "${common[@]}" name=ablate-distill-e$epochs "$teacher" \
    "data.train=aflw-train:{shared}/data/aflw-train,split=train" \
    loss.params=0 loss.landmarks=0 loss.pts21=0.05 loss.distill=1.0 loss.distill_loss=wpdc
edgefa train --config $recipe "${common[@]}" name=ablate-refined-e$epochs
edgefa train --config $recipe "${common[@]}" name=ablate-both-e$epochs "$teacher" \
    loss.distill=1.0 loss.distill_loss=wpdc
