#!/usr/bin/env bash
# The 3-fold BUSI study of docs/results.md: five methods, one schedule, ResNet-18 from
# scratch at 128x128, 800 iterations of batch 4 (about 8 epochs), evaluated on last.pt.
#   bash docs/results/busi_cv/study.sh /path/to/busi runs/busi_cv
# Trains into RUNS/<method>/fold<k>, evaluates into RUNS/<method>/eval (no CRF) and
# RUNS/<method>/eval_crf, then writes the paired tests into RUNS/compare{,_crf}.
set -euo pipefail
BUSI=${1:?usage: study.sh /path/to/busi RUNS}
RUNS=${2:?usage: study.sh /path/to/busi RUNS}
COMMON=(--data busi --data-root "$BUSI" --fold all --folds 3 --fold-seed 42
        --backbone resnet18 --image-size 128 --batch-size 4 --lr 0.01
        --schedule iterations --iterations 800 --lr-step-iters 640
        --val-every 200 --ckpt-every 200 --early-stop 0 --workers 1 --seed 0
        --no-progress --no-tensorboard)
# method name -> preset and variant
declare -A ARGS=(
  [baseline]="--preset paper --variant baseline"
  [ggnet]="--preset paper --variant full"
  [gap]="--preset paper --variant gap"
  [joint]="--preset paper --variant joint"
  [released]="--preset released --variant full"
)
METHODS=(baseline ggnet gap joint released)
for M in "${METHODS[@]}"; do
  start=$(date +%s)
  # shellcheck disable=SC2086
  nice -n 5 ggnet train "${COMMON[@]}" ${ARGS[$M]} --out "$RUNS/$M"
  echo "train $M: $(( $(date +%s) - start )) s"
  start=$(date +%s)
  ggnet eval --run "$RUNS/$M" --checkpoint last.pt --no-crf --overlays 0 --no-progress
  echo "eval $M (no CRF): $(( $(date +%s) - start )) s"
done
ggnet compare --reference ggnet --out "$RUNS/compare" \
  $(for M in "${METHODS[@]}"; do echo "$M=$RUNS/$M/eval"; done)
for M in "${METHODS[@]}"; do
  start=$(date +%s)
  ggnet eval --run "$RUNS/$M" --checkpoint last.pt --overlays 0 --no-progress
  echo "eval $M (CRF): $(( $(date +%s) - start )) s"
done
ggnet compare --reference ggnet --out "$RUNS/compare_crf" \
  $(for M in "${METHODS[@]}"; do echo "$M=$RUNS/$M/eval_crf"; done)
