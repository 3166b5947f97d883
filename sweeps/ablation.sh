# Ablation studies on EMODB (10-fold), one configuration per row of the seed's ablation tables.
#   bash tune-hyperparameter.sh sweeps/ablation.sh -j 2
#   python analyze_results.py --data EMODB        # -> results/analysis/tables.md, "Ablations"
# VARIANTS is one axis whose values are whole flag strings (the rows below are not a Cartesian
# product). The full model (MFCC, DTPM + attention) is a row of both studies; it runs once.

VARIANTS=(
  # --- feature ablation (full model: TCN + DTPM + attention) ---
  "--feature_type MFCC"
  "--feature_type LogMel"
  # "--feature_type HuBERT"                                         # needs HuBERT features (weights: --hubert_path)
  "--feature_type FUSION --fusion_streams MFCC,LogMel"
  # "--feature_type FUSION --fusion_streams MFCC,LogMel,HuBERT"     # all streams; needs HuBERT features

  # --- component ablation (MFCC) ---
  "--feature_type MFCC --use_dtpm false --use_attention false"      # TCN only
  "--feature_type MFCC --use_dtpm true --use_attention false"       # + DTPM
  "--feature_type MFCC --use_dtpm true --use_attention true"        # + attention (full model)
  "--feature_type MFCC --head_units none"                           # full model, softmax on the pooled features
  "--feature_type MFCC --use_dtpm false --use_attention false --head_units none"   # TIM-Net's classifier
  "--feature_type MFCC --use_dtpm true --use_attention true --mode train-lmmd --target_data RAVDESS --da_method lmmd"   # + LMMD (EMODB -> RAVDESS)
)

FIXED="--mode train --data EMODB --preset default --epoch 300 --split_fold 10 --patience 10"
