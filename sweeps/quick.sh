# Quick sweep: 8 short configurations on EMODB MFCC (light preset, 10 epochs, fold 1 of 10):
# residual vs gated blocks x two learning rates x two dropout rates.
#   bash tune-hyperparameter.sh sweeps/quick.sh -j 2
# About 5 minutes on 2 CPU cores with -j 2. Figures from one fold and 10 epochs are for checking
# the tooling and spotting trends, not for reporting.

block=(residual gated)
lr=(1e-3 2e-3)
dropout=(0.1 0.3)

FIXED="--mode train --data EMODB --feature_type MFCC --preset light --epoch 10 --split_fold 10 --max_folds 1 --patience 0"
