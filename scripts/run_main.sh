#!/usr/bin/env bash
# Command (1): set up .venv, extract EMODB features, train and evaluate a 10-fold model, write the
# Excel report. A CPU schedule (light preset, 30 epochs per fold) that ends in about 15 minutes
# on 2 cores; for the full schedule drop --epoch/--preset (hours on CPU).
source "$(dirname "$0")/env.sh"
DATASET="${DATASET:-EMODB}"
"$PY" -m src.data_processing.run_data_processing --dataset "$DATASET" --features MFCC,LogMel
"$PY" -m src.training.main --mode train --data "$DATASET" --feature_type MFCC \
    --preset light --epoch "${EPOCHS:-30}" --lr 1e-3 --split_fold 10 --verbose 0 "$@"
