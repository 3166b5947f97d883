#!/usr/bin/env bash
# Command (1): set up .venv, extract EMODB features (MFCC + LogMel), train and evaluate a 5-fold
# model, write the Excel report. CPU schedule: light preset, a fixed 20 epochs per fold at lr 2e-3
# and dropout 0.3 (cosine decay, last epoch kept; the best short schedule of sweeps/quick.sh).
# Extra flags go to the trainer (later flags win), e.g.
#   bash scripts/run_main.sh --lr 1e-3 --dropout 0.1 --epoch 60 --split_fold 10  # README figure
#   DATASET=RAVDESS bash scripts/run_main.sh
set -euo pipefail
source "$(dirname "$0")/env.sh"
DATASET="${DATASET:-EMODB}"
"$PY" -m src.data_processing.run_data_processing --dataset "$DATASET" --features MFCC,LogMel
"$PY" -m src.training.main --mode train --data "$DATASET" --feature_type MFCC \
    --preset light --lr 2e-3 --dropout 0.3 --epoch 20 --patience 0 --split_fold 5 \
    --verbose 0 "$@"
