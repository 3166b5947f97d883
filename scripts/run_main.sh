#!/usr/bin/env bash
# Command (1): set up .venv, extract EMODB's openSMILE eGeMAPSv02 and ComParE_2016 functionals,
# then train and evaluate the best configuration that finishes within 10 minutes on 2 CPU cores,
# leave-one-speaker-out (10 folds), per-speaker standardisation: a class-balanced logistic
# regression and an RBF SVM on each feature set, and the late fusion of the four (mean of their
# class probabilities, fixed in advance). Each model writes results/main-<DATASET>-<model>-
# <feature>/report.xlsx, the fusion results/main-<DATASET>-fusion4/ (figures: README).
# Extra flags go to every training (later flags win), e.g.
#   bash scripts/run_main.sh --protocol kfold --fold_seed 46
#   DATASET=RAVDESS bash scripts/run_main.sh
# The deep temporal model on MFCCs (TIM-Net's recipe; about 25 minutes a fold here) is:
#   $PY -m src.data_processing.run_data_processing --dataset EMODB --features MFCC --preset timnet
#   $PY -m src.training.main --mode train --data EMODB --feature_type MFCC --preset timnet \
#       --epoch 100
set -euo pipefail
source "$(dirname "$0")/env.sh"
DATASET="${DATASET:-EMODB}"
"$PY" -m src.data_processing.run_data_processing --dataset "$DATASET" --features eGeMAPS,ComParE
runs=()
for feature in ComParE eGeMAPS; do
    for model in logreg svm; do
        run_id="main-${DATASET}-${model}-${feature}"
        "$PY" -m src.training.main --mode train --data "$DATASET" --feature_type "$feature" \
            --model "$model" --protocol loso --speaker_norm --verbose 0 --run_id "$run_id" "$@"
        runs+=("results/$run_id")
    done
done
"$PY" -m src.experiments.late_fusion "${runs[@]}" --name "main-${DATASET}-fusion4"
