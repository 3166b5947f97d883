# Default sweep: the seed's hyper-parameters with a couple of values around each.
#   bash tune-hyperparameter.sh sweeps/default.sh --samples 20 -j 2
# The full grid is large (tens of thousands of points); sample it with --samples N (seeded by
# --seed). Every array is named after a flag of `python -m src.training.main` (without --).
# For --mode train the adaptation-only flags (lmmd_weight, ...) are dropped, so train points
# that differ only in them collapse into one configuration.

mode=(train train-lmmd)          # train-lmmd: --data is the source, the other corpus the target
data=(EMODB RAVDESS)
feature_type=(MFCC LogMel)

lr=(1e-4 3e-4 1e-3)              # seed 3e-4
dropout=(0.2 0.4 0.5)            # seed 0.4
filter_size=(64 128 256)         # seed 128
dilation_size=(6 8 10)           # seed 8
kernel_size=(2 3 5)              # seed 3
stack_size=(2 3 4)               # seed 3
batch_size=(16 32 64)            # seed 32
lmmd_weight=(0.1 0.5 1.0)        # seed 0.5 (train-lmmd only)

# The seed's schedule and protocol (10-fold, 300 epochs, early stopping on a validation split).
FIXED="--preset default --epoch 300 --split_fold 10 --patience 10 --random_seed 46"
