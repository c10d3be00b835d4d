# The flags every run of the BUSI study shares, sourced by study.sh (seed 0) and
# study_seeds.sh (seeds 1, 2): ResNet-18 from scratch at 128x128, 800 iterations of
# batch 4 (about 8 epochs), 3 folds of seed 42, one data-loader worker. Needs $BUSI.
# shellcheck shell=bash
# shellcheck disable=SC2034  # used by the scripts that source this file
COMMON=(--data busi --data-root "$BUSI" --fold all --folds 3 --fold-seed 42
        --backbone resnet18 --image-size 128 --batch-size 4 --lr 0.01
        --schedule iterations --iterations 800 --lr-step-iters 640
        --val-every 200 --ckpt-every 200 --early-stop 0 --workers 1
        --no-progress --no-tensorboard)
# method name -> preset and variant (or network)
declare -A ARGS=(
  [baseline]="--preset paper --variant baseline"
  [ggnet]="--preset paper --variant full"
  [gap]="--preset paper --variant gap"
  [joint]="--preset paper --variant joint"
  [released]="--preset released --variant full"
  [pooled]="--preset paper --variant pooled"
  [unet]="--preset paper --network smp:Unet"
  [unet-guided]="--preset paper --network smp:Unet --retrofit guided"
)
# the methods with guided blocks, probed by study_seeds.sh
PROBED=(ggnet gap joint)
