#!/usr/bin/env bash
# The seeded 3-fold BUSI study: the same data, folds, schedule and evaluation as
# study.sh, one training at a time, resumable run by run:
#   bash docs/results/busi_cv/study_seeds.sh /path/to/busi RUNS [SEEDS] [METHODS]
# Trains into RUNS/seed<s>/<method>/fold<k> (a run with a checkpoint but no summary is
# resumed with --resume; a finished one is skipped), evaluates last.pt without and with
# the dense CRF, and copies the per-image CSVs next to this script as
# <method>/per_image_seed<s>.csv and <method>/per_image_crf_seed<s>.csv. The methods with
# guided blocks (PROBED) are probed too: probe/<method>_seed<s>.csv (spatial GGB) and
# probe/<method>_channel_seed<s>.csv. The training cost of every fold run is added to
# timings.csv (collect_timings.py).
set -euo pipefail
BUSI=${1:?usage: study_seeds.sh /path/to/busi RUNS [SEEDS] [METHODS]}
RUNS=${2:?usage: study_seeds.sh /path/to/busi RUNS [SEEDS] [METHODS]}
read -r -a SEEDS <<< "${3:-1 2}"
read -r -a METHODS <<< "${4:-baseline ggnet gap joint}"
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=study_flags.sh
source "$HERE/study_flags.sh"

# probe SEED METHOD RUN: what the guided blocks of a PROBED method's run add (once)
probe() {
  [[ " ${PROBED[*]} " == *" $2 "* ]] || return 0
  local dest="$HERE/probe" start
  [[ -f "$dest/$2_channel_seed$1.csv" ]] && return 0
  start=$(date +%s)
  ggnet probe --run "$3" --checkpoint last.pt --out "$3/probe" --overwrite > /dev/null
  mkdir -p "$dest"
  [[ -f "$3/probe/probe.csv" ]] && cp "$3/probe/probe.csv" "$dest/$2_seed$1.csv"
  cp "$3/probe/probe_channel.csv" "$dest/$2_channel_seed$1.csv"
  echo "probe seed $1 $2: $(( $(date +%s) - start )) s"
}
for S in "${SEEDS[@]}"; do
  for M in "${METHODS[@]}"; do
    OUT="$RUNS/seed$S/$M"
    DEST="$HERE/$M"
    if [[ -f "$DEST/per_image_crf_seed$S.csv" ]]; then
      echo "seed $S $M: trained and evaluated"
      probe "$S" "$M" "$OUT"
      continue
    fi
    start=$(date +%s)
    if [[ -d "$OUT" ]]; then
      ggnet train --resume --out "$OUT" --no-progress --no-tensorboard
    else
      # shellcheck disable=SC2086
      ggnet train "${COMMON[@]}" ${ARGS[$M]} --seed "$S" --out "$OUT"
    fi
    echo "train seed $S $M: $(( $(date +%s) - start )) s"
    python "$HERE/collect_timings.py" "$RUNS"
    start=$(date +%s)
    ggnet eval --run "$OUT" --checkpoint last.pt --no-crf --overlays 0 --no-progress --overwrite
    ggnet eval --run "$OUT" --checkpoint last.pt --overlays 0 --no-progress --overwrite
    echo "eval seed $S $M: $(( $(date +%s) - start )) s"
    mkdir -p "$DEST"
    cp "$OUT/eval/per_image.csv" "$DEST/per_image_seed$S.csv"
    cp "$OUT/eval_crf/per_image.csv" "$DEST/per_image_crf_seed$S.csv"
    probe "$S" "$M" "$OUT"
  done
done
