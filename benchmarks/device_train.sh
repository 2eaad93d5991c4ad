#!/usr/bin/env bash
# Training on a lent GPU machine (the `run` tool: one H200 or H100, 15 minutes of device time in all,
# at most 10 minutes a command, 64 MiB travelling: the tracked tree plus `carry`, 8 files of 16 MiB back).
#
# 1. Here, once:   benchmarks/device_train.sh prepare GROUP
#    packs aflw-train (WebP q50 in one blob, 28 MiB), the compact refined labels (4 MiB), bfm68 and
#    the mb05 teacher into .pack/ (git-ignored), checks that the tree plus what GROUP reads fit the
#    64 MiB and prints the carry: refined reads the labels and no teacher, distill / heads the
#    teacher and no labels, prune the labels and each $SOURCES/best.pt (mb05-refined: 66 MiB, over).
# 2. There, as the run tool's command, with that carry (PYTHONPATH=. : the repo is not installed):
#      bash benchmarks/device_train.sh run BUDGET_SECONDS GROUP [key=value ...]
#    GROUP  refined : the refined-label recipe on every backbone (no teacher; EMA), full schedules
#           distill : the six batch-128 distillation recipes (mobilenetv3-small/large, mobilenetv2,
#                     mobilevit-xs, mobilevitv2-100, mobile-frnet), one mb05 forward serving all
#           heads   : query-decoder and multitask-mobilevit-s (PCGrad; heavier: a command of its own)
#           prune   : the compression study's pruning stages of runs/SOURCE/best.pt (SOURCE in $SOURCES),
#                     through benchmarks/compression.py --train-only (QAT and exports stay on the CPU machine);
#                     $OUT gets NAME-study.json, NAME-p50-pruned.pt and NAME-p50-finetune-best.pt: put
#                     them here as runs/compression/NAME/{study.json,p50/pruned.pt,p50/finetune/best.pt}
#                     and run the logged compression.py command (same overrides) without --train-only:
#                     the recorded stage is not redone, its files are exported and benched
#    Every recipe of the group trains in one process (edgefa.training.device_trainer): a 20 s probe
#    times each model, the recipes whose full schedules fit BUDGET_SECONDS run, the rest are named as
#    left out. Each best checkpoint comes back as fp16 .safetensors in $OUT with device-train.json
#    (plan, step times, histories) and the log; start the next stage here with init=$OUT/NAME.safetensors
#    or evaluate with `edgefa eval --model ...` after `python -m edgefa.training.publish`.
# Trying it on a CPU first (tiny): OUT=/tmp/o EDGEFA_SHARED=.pack bash benchmarks/device_train.sh run 120 refined \
#      epochs=1 "data.train=aflw-train:.pack/data/aflw-train,split=train,n=256,labels=.pack/labels.npz" \
#      "data.val=aflw-train:.pack/data/aflw-train,split=val,n=64" device=cpu data.workers=2
set -euo pipefail
GROUP_NAMES="refined | distill | heads | prune"
SOURCES=${SOURCES:-}
read -ra sources <<< "${SOURCES//$'\n'/ }"  # the prune group's runs/NAME folders, split on any whitespace
carry_of() {  # what each group reads from the pack (each file travels in the 64 MiB)
  case $1 in refined) echo ".pack/data .pack/labels.npz" ;; distill|heads) echo ".pack/data .pack/peers" ;;
    prune) (( ${#sources[@]} )) || { echo "device_train: prune: set SOURCES to the runs/NAME folders to prune" >&2; return 2; }
      (( ${#sources[@]} <= 2 )) || { echo "device_train: prune: at most 2 SOURCES (3 files each come back, 8 at most)" >&2; return 2; }
      echo ".pack/data .pack/labels.npz$(printf ' %s/best.pt' "${sources[@]}")" ;;
    *) echo "device_train: unknown group '$1' ($GROUP_NAMES)" >&2; return 2 ;; esac
}
cmd=${1:?prepare | run BUDGET GROUP}
shift
PY=${PYTHON:-$( [[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3 )}
if [[ $cmd == prepare ]]; then
  group=${1:-distill}
  carry=$(carry_of "$group") || exit 2
  labels=${LABELS:-runs/labels/aflw-train.npz}
  [[ -d .pack ]] || "$PY" -m edgefa.training.pack_data .pack --labels "$labels"
  if [[ -e .pack/data/aflw-train/labels.npz || ! -e .pack/labels.npz ]]; then  # made before labels.npz moved out of data/
    echo "device_train: .pack has the old layout; remove .pack and prepare again" >&2; exit 2
  fi
  for path in $carry; do
    [[ -e $path ]] || { echo "device_train: $path: not found" >&2; exit 2; }
  done
  tree=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
  # shellcheck disable=SC2086  # carry is a list of paths without spaces
  pack=$(du -cb $carry | tail -1 | cut -f1)
  echo "tracked tree $((tree / 1048576)) MiB + $carry $((pack / 1048576)) MiB = $(((tree + pack) / 1048576)) MiB (limit 64)"
  (( tree + pack <= 64 * 1048576 )) || { echo "device_train: over 64 MiB for group $group: drop binaries or repack with a lower --quality" >&2; exit 2; }
  echo "run it with carry [\"${carry// /\", \"}\"]"
  exit 0
fi
[[ $cmd == run ]] || { echo "device_train: unknown command '$cmd' (prepare | run)" >&2; exit 2; }
budget=${1:?budget seconds}
group=${2:?group: $GROUP_NAMES}
shift 2
carry_of "$group" > /dev/null || exit 2
out=${OUT:?OUT: the folder whose files come back}
export EDGEFA_SHARED=${EDGEFA_SHARED:-.pack} PYTHONPATH=${PYTHONPATH:-.} PYTHONUNBUFFERED=1
workers=$(( $(nproc) > 2 ? $(nproc) - 1 : 1 ))
refined_train="data.train=aflw-train:{shared}/data/aflw-train,split=train,labels={shared}/labels.npz"
common=(data.workers=$workers)
case $group in
  refined)  # the refined-label recipe (mobilenetv3-small-refined.yaml) with each backbone
    configs=()
    for m in mobilenetv3_small_100 mobilenetv3_large_100 mobilenetv2_100 mobilevit_xs mobilevitv2_100 mobile_frnet; do
      configs+=(--config "training/configs/mobilenetv3-small-refined.yaml model.name=$m name=refined-${m//_/-}")
    done
    common+=("$refined_train") ;;
  distill) configs=(); for r in mobilenetv3-small mobilenetv3-large mobilenetv2 mobilevit-xs mobilevitv2-100 mobile-frnet; do
             configs+=(--config "training/configs/$r.yaml"); done ;;
  heads) configs=(--config training/configs/query-decoder.yaml --config training/configs/multitask-mobilevit-s.yaml) ;;
  prune)
    for s in "${sources[@]}"; do
      study="runs/compression/$(basename "$s")"
      "$PY" benchmarks/compression.py run --source "$s/best.pt" -o "$study" --stages p50 \
        --method taylor --workers "$workers" --train-only --quiet "$refined_train" "$@" >> "$out/prune.log" 2>&1 \
        || { tail -20 "$out/prune.log" >&2; exit 1; }
      # only $OUT comes back (8 files): the study record, the pruned structure, the fine-tune's best weights
      cp "$study/study.json" "$out/$(basename "$s")-study.json"
      cp "$study/p50/pruned.pt" "$out/$(basename "$s")-p50-pruned.pt"
      cp "$study/p50/finetune/best.pt" "$out/$(basename "$s")-p50-finetune-best.pt"
    done
    exit 0 ;;
esac
"$PY" -m edgefa.training.device_trainer "${configs[@]}" --budget "$budget" --weights-out "$out" "${common[@]}" \
  "$@" 2>&1 | tee "$out/device-train.log"
nvidia-smi --query-gpu=name,memory.used --format=csv >> "$out/device-train.log" 2>&1 || true
