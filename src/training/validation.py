"""Checks of flag values that argparse cannot make: numeric ranges and flag combinations,
each failing with one line that names the flag."""
from __future__ import annotations

import argparse
import importlib.util
import math
import os

from src.training.config import RunConfig

_INF = math.inf
# Allowed range of every numeric flag: (lowest, highest, lowest allowed, highest allowed).
NUMERIC_RANGES = {
    "epoch": (1, _INF, True, False), "batch_size": (1, _INF, True, False),
    "mixup": (0, _INF, True, False), "lr": (0, _INF, False, False),
    "beta1": (0, 1, True, False), "beta2": (0, 1, True, False),
    "patience": (0, _INF, True, False), "dropout": (0, 1, True, False),
    "filter_size": (1, _INF, True, False), "dilation_size": (1, _INF, True, False),
    "kernel_size": (1, _INF, True, False), "stack_size": (1, _INF, True, False),
    "time_masks": (0, _INF, True, False), "freq_masks": (0, _INF, True, False),
    "time_mask_width": (0, 1, True, False), "freq_mask_width": (0, 1, True, False),
    "split_fold": (2, _INF, True, False), "loso_groups": (0, _INF, True, False),
    "val_fraction": (0, 1, True, False), "max_folds": (0, _INF, True, False),
    "random_seed": (0, 2 ** 31 - 1, True, True), "max_frames": (0, _INF, True, False),
    "lmmd_weight": (0, _INF, True, False), "da_warmup": (0, _INF, True, False),
    "kernel_mul": (0, _INF, False, False), "kernel_num": (1, _INF, True, False),
    "fix_sigma": (0, _INF, True, False), "confidence": (0, 1, True, True),
    "verbose": (0, _INF, True, False), "threads": (0, _INF, True, False),
    "C": (0, _INF, False, False), "mlp_dropout": (0, 1, True, False),
    "target_entropy": (0, _INF, True, False), "label_smoothing": (0, 1, True, False),
    "clipnorm": (0, _INF, True, False), "fold_seed": (0, 2 ** 32 - 1, True, True),
    "weight_decay": (0, _INF, True, False), "self_training": (0, _INF, True, False),
}


def range_error(name: str, value) -> str | None:
    """The one-line complaint about numeric flag `name` when `value` is outside its range (or
    not finite); None when it is fine."""
    low, high, low_ok, high_ok = NUMERIC_RANGES[name]
    if (math.isfinite(value) and (low < value or (low_ok and value == low))
            and (value < high or (high_ok and value == high))):
        return None
    if high == _INF:
        allowed = f"{'>=' if low_ok else '>'} {low}"
    else:
        allowed = f"in {'[' if low_ok else '('}{low}, {high}{']' if high_ok else ')'}"
    kind = "an integer" if isinstance(value, int) else "a finite number"
    return f"--{name} must be {kind} {allowed}; got {value}"


def validate(cfg: RunConfig, parser: argparse.ArgumentParser) -> None:
    """Flag combinations argparse cannot check; exits with one clear line."""
    for name in NUMERIC_RANGES:
        message = range_error(name, getattr(cfg, name))
        if message:
            parser.error(message)
    checks = [
        (cfg.mode in ("test", "predict", "test-cross-corpus") and not cfg.test_path,
         f"--mode {cfg.mode} needs --test_path (a folder of trained fold models)"),
        (cfg.mode == "predict" and not cfg.audio, "--mode predict needs --audio FILE_OR_FOLDER"),
        (cfg.epoch < 1, "--epoch must be at least 1"),
        (cfg.batch_size < 1, "--batch_size must be at least 1"),
        (cfg.lr <= 0, "--lr must be positive"),
        (not 0 <= cfg.dropout < 1, "--dropout must be in [0, 1)"),
        (min(cfg.filter_size, cfg.kernel_size, cfg.stack_size, cfg.dilation_size) < 1,
         "--filter_size, --kernel_size, --stack_size and --dilation_size must be at least 1"),
        (not 0 <= cfg.val_fraction < 1, "--val_fraction must be in [0, 1)"),
        (cfg.val_fraction == 0 and cfg.patience > 0 and cfg.val_policy == "train_split",
         "--val_fraction 0 leaves no validation set for early stopping: add --patience 0"),
        (not 0 <= cfg.da_warmup < cfg.epoch, "--da_warmup must be in [0, --epoch)"),
        (cfg.mixup < 0, "--mixup must be >= 0 (0 = off)"),
        (not 0 <= cfg.weight_ema < 1, "--weight_ema must be in [0, 1) (0 = off)"),
        (bool(cfg.init_from) and cfg.mode != "train",
         "--init_from needs --mode train (it continues a same-corpus run's fold models)"),
        (bool(cfg.init_from) and cfg.model in ("svm", "logreg"),
         "--init_from continues a Keras model (--model tcn or mlp); svm / logreg have no "
         "weights to start from"),
        (cfg.weight_ema > 0 and cfg.patience > 0,
         "--weight_ema needs --patience 0: early stopping would restore raw weights over the "
         "average"),
        (cfg.select_C == "label_free" and (cfg.mode != "train-lmmd"
                                           or cfg.model not in ("svm", "logreg")),
         "--select_C label_free needs --mode train-lmmd and --model svm or logreg (it picks C "
         "from the target's predictions)"),
        (cfg.self_training and cfg.mode != "train-lmmd",
         "--self_training needs --mode train-lmmd (it pseudo-labels the target corpus)"),
        (cfg.lmmd_targets == "teacher" and (cfg.mode != "train-lmmd" or cfg.da_method != "lmmd"
                                            or cfg.model != "mlp"),
         "--lmmd_targets teacher needs --mode train-lmmd --da_method lmmd --model mlp (the "
         "logreg teacher reads the same utterance-level vectors)"),
        (cfg.st_teacher != "self" and not cfg.self_training,
         "--st_teacher needs --self_training ROUNDS >= 1 (the teacher gives round 1's "
         "pseudo-labels)"),
        (bool(cfg.vtlp) and cfg.mode != "train",
         "--vtlp needs --mode train (it adds warped copies of the training files)"),
        (min(cfg.time_masks, cfg.freq_masks) < 0, "--time_masks and --freq_masks must be >= 0"),
        (not (0 <= cfg.time_mask_width < 1 and 0 <= cfg.freq_mask_width < 1),
         "--time_mask_width and --freq_mask_width must be in [0, 1)"),
        (cfg.label_map and not os.path.isfile(cfg.label_map),
         f"--label_map {cfg.label_map}: no such file (a JSON file {{\"from\": \"to\", ...}})"),
    ]
    if cfg.tensorboard and importlib.util.find_spec("tensorboard") is None:
        checks.append((True, "--tensorboard needs the tensorboard package "
                             "(pip install -r requirements.txt)"))
    for failed, message in checks:
        if failed:
            parser.error(message)
    for check in (cfg.head_sizes, cfg.fold_numbers, cfg.mlp_sizes, cfg.label_list,
                  cfg.vtlp_factors):
        try:
            check()
        except ValueError as error:
            parser.error(str(error))
