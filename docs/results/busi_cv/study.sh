#!/usr/bin/env bash
# The 3-fold BUSI study of docs/results.md: five methods, one schedule, ResNet-18 from
# scratch at 128x128, 800 iterations of batch 4 (about 8 epochs), evaluated on last.pt.
#   bash docs/results/busi_cv/study.sh /path/to/busi runs/busi_cv
# Trains into RUNS/<method>/fold<k>, evaluates into RUNS/<method>/eval (no CRF) and
# RUNS/<method>/eval_crf, then writes the paired tests into RUNS/compare{,_crf}.
set -euo pipefail
BUSI=${1:?usage: study.sh /path/to/busi RUNS}
RUNS=${2:?usage: study.sh /path/to/busi RUNS}
# shellcheck source=study_flags.sh
source "$(dirname "$0")/study_flags.sh"
COMMON+=(--seed 0)
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
