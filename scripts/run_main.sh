#!/usr/bin/env bash
# Command (1): set up .venv, extract EMODB's openSMILE ComParE_2016 functionals, then train and
# evaluate the best configuration that finishes within 10 minutes on 2 CPU cores: a class-
# balanced logistic regression on per-speaker standardised ComParE functionals, leave-one-
# speaker-out (10 folds); writes results/<run-id>/report.xlsx (figures: README, Results).
# Extra flags go to the trainer (later flags win), e.g.
#   bash scripts/run_main.sh --model svm
#   DATASET=RAVDESS bash scripts/run_main.sh
# The deep temporal model on MFCCs (the previous command (1)) is:
#   bash scripts/run_main.sh --feature_type MFCC --model tcn --preset light --lr 2e-3 \
#       --dropout 0.3 --epoch 20 --patience 0 --protocol kfold --split_fold 5
set -euo pipefail
source "$(dirname "$0")/env.sh"
DATASET="${DATASET:-EMODB}"
FEATURES="${FEATURES:-ComParE,MFCC}"
"$PY" -m src.data_processing.run_data_processing --dataset "$DATASET" --features "$FEATURES"
"$PY" -m src.training.main --mode train --data "$DATASET" --feature_type ComParE \
    --model logreg --protocol loso --speaker_norm --verbose 0 "$@"
