#!/usr/bin/env bash
# Command (1): set up .venv, extract EMODB's GE2E features (the hidden states of a pretrained
# speaker encoder, summarised per utterance) and openSMILE ComParE_2016 functionals, then train
# and evaluate, leave-one-speaker-out (10 folds) with per-speaker standardisation, the best
# configuration that finishes within 10 minutes on 2 CPU cores: a class-balanced logistic
# regression on GE2E; beside it, in the same job, the same model on ComParE (the field's
# standard baseline, the anchor). Each writes results/main-<DATASET>-logreg-<feature>/report.xlsx
# (figures: README). Extra flags go to every training (later flags win), e.g.
#   bash scripts/run_main.sh --protocol kfold --fold_seed 46
#   DATASET=RAVDESS bash scripts/run_main.sh
# The deep temporal model on MFCCs (TIM-Net's recipe; about 25 minutes a fold here) is:
#   $PY -m src.data_processing.run_data_processing --dataset EMODB --features MFCC --preset timnet
#   $PY -m src.training.main --mode train --data EMODB --feature_type MFCC --preset timnet \
#       --epoch 100
set -euo pipefail
source "$(dirname "$0")/env.sh"
DATASET="${DATASET:-EMODB}"
"$PY" -m src.data_processing.run_data_processing --dataset "$DATASET" --features GE2E,ComParE
for feature in GE2E ComParE; do
    "$PY" -m src.training.main --mode train --data "$DATASET" --feature_type "$feature" \
        --model logreg --protocol loso --speaker_norm --verbose 0 \
        --run_id "main-${DATASET}-logreg-${feature}" "$@"
done
