# Quick sweep: 12 short configurations on EMODB MFCC (light preset, 8 epochs, fold 1 of 5).
#   bash tune-hyperparameter.sh sweeps/quick.sh -j 2
# Meant to finish in about 10 minutes on 2 CPU cores (light preset: ~5-6 s per epoch per
# configuration with 1 thread, so ~1 minute per configuration with start-up and evaluation).
# Figures from one fold and 8 epochs are for checking the tooling and spotting trends, not
# for reporting.

lr=(1e-3 2e-3 4e-3)
dropout=(0.1 0.3)
filter_size=(39 64)

FIXED="--mode train --data EMODB --feature_type MFCC --preset light --epoch 8 --split_fold 5 --max_folds 1 --patience 0"
