# Regularisation and front-end probes on EMODB MFCC (10-fold KFold), the rows of README
# "Regularisation and front-end probes". First extract TIM-Net's front end once:
#   python -m src.data_processing.run_data_processing --dataset EMODB --preset timnet --features MFCC
# then
#   bash tune-hyperparameter.sh sweeps/regularisation.sh -j 2
#   bash tune-hyperparameter.sh sweeps/regularisation.sh -j 2 -- --max_folds 3   # the 3-fold probes
# f6c81420 is the hash of that TIM-Net feature set (data/features/EMODB/MFCC/f6c81420).

VARIANTS=(
  ""                                                          # our front end, no masking (baseline)
  "--speaker_norm"                                            # per-speaker standardisation
  "--feature_set f6c81420"                                    # TIM-Net front end
  "--time_masks 2 --freq_masks 2"                             # SpecAugment
  "--feature_set f6c81420 --time_masks 2 --freq_masks 2"      # both
)

FIXED="--mode train --data EMODB --feature_type MFCC --preset light --lr 1e-3 --epoch 60 --patience 0 --split_fold 10"
