"""Command line: `python -m src.training.main --mode train|test|predict|train-lmmd|...`.

This module only parses flags into a RunConfig and calls the function for the mode.
"""
from __future__ import annotations

import argparse
import importlib.util
import logging
import math
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is first imported

from src.training.config import RunConfig  # noqa: E402

MODES = ("train", "test", "predict", "train-lmmd", "test-cross-corpus")
PRESET_NAMES = ("default", "light")
# Architecture flags left unset take their value from --preset (src.models.model.PRESETS).
ARCHITECTURE_FLAGS = ("filter_size", "dilation_size", "kernel_size", "stack_size", "dropout",
                      "block")
# Modes that evaluate a saved run: --data, --feature_type and the model flags come from the run's
# config.json unless given on the command line.
SAVED_RUN_MODES = ("test", "predict", "test-cross-corpus")
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
}


def build_parser() -> argparse.ArgumentParser:
    d = RunConfig()
    p = argparse.ArgumentParser(prog="python -m src.training.main",
                                description="Train and evaluate speech emotion recognition "
                                            "models (TIM-Net style bidirectional TCN).")
    p.add_argument("--config", default=d.config, metavar="FILE",
                   help="YAML or TOML file of flag values ({flag: value}, e.g. the run.yaml "
                        "saved with every run); flags on the command line override it")
    p.add_argument("--mode", choices=MODES, default=d.mode)
    p.add_argument("--data", default=d.data, help="corpus: EMODB, RAVDESS or a CSV corpus name")
    p.add_argument("--feature_type", default=d.feature_type,
                   choices=("MFCC", "LogMel", "HuBERT", "eGeMAPS", "ComParE", "FUSION"))
    p.add_argument("--model", choices=("tcn", "mlp", "svm", "logreg"), default=d.model,
                   help="tcn: the temporal network (frame-level input; with utterance-level "
                        "streams in FUSION, the fused model); mlp: Keras MLP over one vector per "
                        "utterance; svm / logreg: scikit-learn pipelines (scaler + class-"
                        "balanced classifier) over the same vectors (default %(default)s)")
    p.add_argument("--fusion_streams", default=d.fusion_streams,
                   help="streams of FUSION, comma separated (default MFCC,LogMel)")
    p.add_argument("--feature_set", default=d.feature_set,
                   help="feature-set hash(es) to train on when several extraction settings "
                        "exist: HASH, or MFCC=h1,LogMel=h2 (default: the default-settings set)")
    p.add_argument("--preset", choices=PRESET_NAMES, default=d.preset,
                   help="architecture preset: default (seed: 128 filters, kernel 3, 3 stacks, "
                        "residual blocks, dropout 0.4) or light (TIM-Net sized: 39 filters, "
                        "kernel 2, 1 stack, gated blocks, dropout 0.1; ~13x faster on CPU)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epoch", type=int, default=d.epoch)
    g.add_argument("--batch_size", type=int, default=d.batch_size)
    g.add_argument("--balanced_batches", action="store_true",
                   help="draw each training epoch class-balanced (with replacement) instead of "
                        "as a permutation; train-lmmd: the source batches")
    g.add_argument("--mixup", type=float, default=d.mixup, metavar="ALPHA",
                   help="mix each training file with another of its batch, weight ~ "
                        "Beta(ALPHA, ALPHA) (features and labels; 0 = off, 0.2-0.4 usual); "
                        "train-lmmd: the source batches")
    g.add_argument("--lr", type=float, default=d.lr)
    g.add_argument("--label_smoothing", type=float, default=d.label_smoothing,
                   help="of the (source) cross-entropy (default %(default)s; 0 for the MLP "
                        "with LMMD: smoothed, less confident target predictions blur the "
                        "class-conditional weights)")
    g.add_argument("--beta1", type=float, default=d.beta1)
    g.add_argument("--beta2", type=float, default=d.beta2)
    g.add_argument("--patience", type=int, default=d.patience,
                   help="early-stopping patience in epochs (0 = off)")
    g.add_argument("--monitor", default=d.monitor, choices=("val_loss", "val_accuracy"))
    g = p.add_argument_group("model")
    g.add_argument("--dropout", type=float, default=None,
                   help=f"(default from --preset; seed default {d.dropout})")
    g.add_argument("--activation", default=d.activation)
    for name in ("filter_size", "dilation_size", "kernel_size", "stack_size"):
        g.add_argument(f"--{name}", type=int, default=None,
                       help=f"(default from --preset; seed default {getattr(d, name)})")
    g.add_argument("--block", choices=("residual", "gated"), default=None,
                   help="temporal block: residual sum (seed) or sigmoid gate (TIM-Net); "
                        "default from --preset")
    g.add_argument("--use_dtpm", type=_bool, default=d.use_dtpm, metavar="{true,false}")
    g.add_argument("--use_attention", type=_bool, default=d.use_attention,
                   metavar="{true,false}")
    g.add_argument("--time_masks", type=int, default=d.time_masks,
                   help="SpecAugment: frame spans masked per utterance in training (0 = off)")
    g.add_argument("--freq_masks", type=int, default=d.freq_masks,
                   help="SpecAugment: feature-channel bands masked per utterance (0 = off)")
    g.add_argument("--time_mask_width", type=float, default=d.time_mask_width,
                   help="largest time span, as a fraction of the utterance's frames")
    g.add_argument("--freq_mask_width", type=float, default=d.freq_mask_width,
                   help="largest band, as a fraction of the feature channels")
    g.add_argument("--mlp_units", default=d.mlp_units,
                   help="--model mlp: hidden Dense sizes; the last is the embedding "
                        "(default %(default)s)")
    g.add_argument("--mlp_dropout", type=float, default=d.mlp_dropout,
                   help="--model mlp: dropout after each hidden layer (default %(default)s)")
    g.add_argument("--C", type=float, default=d.C,
                   help="--model svm / logreg: inverse regularisation strength "
                        "(default %(default)s)")
    g.add_argument("--frame_pooling", choices=("none", "mean_std"), default=d.frame_pooling,
                   help="mlp / svm / logreg on frame-level features: mean_std pools each "
                        "stream to its mean and standard deviation over frames (default none: "
                        "utterance-level features only)")
    g.add_argument("--head_units", default=d.head_units,
                   help="Dense sizes of the classifier head, comma separated; none = softmax "
                        "straight on the pooled features, as in TIM-Net (default %(default)s)")
    g = p.add_argument_group("protocol")
    g.add_argument("--protocol", choices=("kfold", "loso"), default=d.protocol)
    g.add_argument("--split_fold", type=int, default=d.split_fold)
    g.add_argument("--loso_groups", type=int, default=d.loso_groups,
                   help="loso: group speakers into this many folds (0 = one speaker per fold)")
    g.add_argument("--val_policy", choices=("train_split", "test_fold"), default=d.val_policy,
                   help="test_fold reproduces the published protocol (optimistic)")
    g.add_argument("--val_fraction", type=float, default=d.val_fraction,
                   help="share of the training folds held out for early stopping and model "
                        "selection; 0 = none, train on all of them (needs --patience 0)")
    g.add_argument("--max_folds", type=int, default=d.max_folds,
                   help="run only the first N folds (quick checks)")
    g.add_argument("--folds", default=d.folds, metavar="LIST",
                   help="train only these folds (3,5 or 2-4; 1-based), e.g. to share a run's "
                        "folds among processes or machines; the report covers every fold of "
                        "the run finished so far")
    g.add_argument("--random_seed", type=int, default=d.random_seed)
    g.add_argument("--max_frames", type=int, default=d.max_frames,
                   help="centre-crop utterances longer than this many frames (0 = keep all)")
    g.add_argument("--speaker_norm", action="store_true",
                   help="standardise each speaker's features with that speaker's own mean and "
                        "variance (train, test and target corpora; predict: each file alone)")
    g.add_argument("--label_set", default=d.label_set,
                   help="comma list of labels to keep (e.g. angry,fear,happy,neutral,sad)")
    g = p.add_argument_group("domain adaptation")
    g.add_argument("--target_data", default=d.target_data)
    g.add_argument("--da_method", choices=("lmmd", "mmd", "dann", "none"), default=d.da_method)
    g.add_argument("--lmmd_weight", type=float, default=d.lmmd_weight)
    g.add_argument("--da_warmup", type=int, default=d.da_warmup,
                   help="epochs of source-only training before the domain loss ramps up "
                        "(default %(default)s)")
    g.add_argument("--collapse_guard", type=_bool, default=d.collapse_guard,
                   metavar="{true,false}",
                   help="with --patience 0: stop and restore the last healthy epoch when the "
                        "source training accuracy collapses (default %(default)s)")
    g.add_argument("--target_entropy", type=float, default=d.target_entropy,
                   help="weight of the mean entropy of target predictions added to the loss "
                        "(entropy minimisation, ramped like the domain term; 0 = off)")
    g.add_argument("--select_epoch", choices=("last", "label_free"), default=d.select_epoch,
                   help="train-lmmd with --patience 0: keep the last epoch, or the epoch with "
                        "the best label-free score (source validation accuracy x balance of the "
                        "target predictions; no target label is read) (default %(default)s)")
    g.add_argument("--kernel_mul", type=float, default=d.kernel_mul)
    g.add_argument("--kernel_num", type=int, default=d.kernel_num)
    g.add_argument("--fix_sigma", type=float, default=d.fix_sigma)
    g.add_argument("--pseudo_label", choices=("soft", "hard"), default=d.pseudo_label)
    g.add_argument("--confidence", type=float, default=d.confidence)
    g.add_argument("--domain_norm", action="store_true")
    g.add_argument("--label_map", default=d.label_map)
    g = p.add_argument_group("paths and output")
    g.add_argument("--test_path", default=d.test_path)
    g.add_argument("--audio", nargs="+", default=[], help="predict: audio files or folders")
    g.add_argument("--output", default=d.output, help="predict: write the table to this CSV")
    g.add_argument("--features_root", default=d.features_root)
    g.add_argument("--results_root", default=d.results_root)
    g.add_argument("--models_root", default=d.models_root)
    g.add_argument("--run_id", default=d.run_id)
    g.add_argument("--overwrite", action="store_true", help="start the run afresh")
    g.add_argument("--visualize", action="store_true")
    g.add_argument("--tensorboard", action="store_true",
                   help="write Keras TensorBoard logs per fold (<run>/fold_XX/tensorboard)")
    g.add_argument("--verbose", type=int, default=d.verbose)
    g.add_argument("--threads", type=int, default=d.threads,
                   help="TensorFlow threads (0 = all cores)")
    g = p.add_argument_group("hardware")
    g.add_argument("--distribute", choices=("none", "mirrored", "multi_worker"),
                   default=d.distribute,
                   help="tf.distribute strategy: mirrored = all GPUs of this machine, "
                        "multi_worker = several machines described by TF_CONFIG. --batch_size "
                        "is the global batch (split over replicas); --lr is not rescaled")
    g.add_argument("--mixed_precision", action="store_true",
                   help="float16 compute with float32 weights (GPUs; slow on CPU)")
    g.add_argument("--jit", action="store_true", help="compile train steps with XLA (GPUs)")
    return p


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def config_from_args(args: argparse.Namespace) -> RunConfig:
    from src.models.model import PRESETS

    values = vars(args).copy()
    preset = PRESETS[args.preset]
    for name in ARCHITECTURE_FLAGS:
        if values.get(name) is None:
            values[name] = getattr(preset, name)
    values["data"] = values["data"].upper()
    if values["target_data"]:
        values["target_data"] = values["target_data"].upper()
    return RunConfig.from_dict(values)


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
    for check in (cfg.head_sizes, cfg.fold_numbers, cfg.mlp_sizes, cfg.label_list):
        try:
            check()
        except ValueError as error:
            parser.error(str(error))


def explicit_flags(argv: list[str] | None) -> set[str]:
    """Names of the flags given on the command line (not left at their defaults)."""
    probe = build_parser()
    for action in probe._actions:
        action.default = argparse.SUPPRESS
    return set(vars(probe.parse_args(argv)))


def from_saved_run(cfg: RunConfig, argv: list[str] | None) -> RunConfig:
    """test / predict / test-cross-corpus: --data and --feature_type not given on the command
    line are left empty, so the saved run's own values are used (and not checked against the
    defaults)."""
    if cfg.mode in SAVED_RUN_MODES:
        given = explicit_flags(argv)
        for name in ("data", "feature_type"):
            if name not in given:
                setattr(cfg, name, "")
    return cfg


def unwritable_message(cfg: RunConfig, err: PermissionError) -> str:
    """One line for a folder the run cannot write to, naming the flag that chose it."""
    reason = err.strerror or "permission denied"
    if not err.filename:
        return f"cannot write a file: {reason.lower()} ({err})"
    path = os.path.abspath(err.filename)
    for flag in ("models_root", "results_root", "output", "features_root"):
        root = getattr(cfg, flag)
        if root and os.path.commonpath([path, os.path.abspath(root)]) == os.path.abspath(root):
            return f"--{flag} {root}: cannot write to {path} ({reason.lower()})"
    return f"cannot write to {path} ({reason.lower()})"


def configure_runtime(cfg: RunConfig) -> None:
    if cfg.mixed_precision:
        import keras

        keras.mixed_precision.set_global_policy("mixed_float16")
    if cfg.threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(cfg.threads)
        tf.config.threading.set_inter_op_parallelism_threads(cfg.threads)


def dispatch(cfg: RunConfig):
    if cfg.mode == "train":
        from src.training.experiment import run_training
        return run_training(cfg)
    if cfg.mode == "test":
        from src.training.evaluate import run_test
        return run_test(cfg)
    if cfg.mode == "predict":
        from src.training.evaluate import run_predict
        return run_predict(cfg)
    from src.training.adaptation import run_adaptation, run_cross_corpus_test
    return run_adaptation(cfg) if cfg.mode == "train-lmmd" else run_cross_corpus_test(cfg)


def read_config_file(path: str, parser: argparse.ArgumentParser) -> dict:
    """Flag values from a YAML (.yaml/.yml) or TOML (.toml) file: a mapping of flag names
    (with or without the leading --, dashes or underscores; any RunConfig field) to values.
    Exits with one line naming the file on a missing/unreadable file or an unknown flag."""
    import dataclasses
    import tomllib

    import yaml

    try:
        text = Path(path).read_text()
        values = tomllib.loads(text) if path.endswith(".toml") else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as err:
        parser.error(f"--config {path}: cannot read it ({type(err).__name__}: {err})")
    if not isinstance(values, dict):
        parser.error(f"--config {path}: expected a mapping of flag names to values")
    # every RunConfig field, including settings without a flag (clipnorm, min_lr, ...)
    known = {action.dest for action in parser._actions} | {
        f.name for f in dataclasses.fields(RunConfig)}
    out = {}
    for key, value in values.items():
        name = str(key).lstrip("-").replace("-", "_")
        if name not in known or name in ("help", "config"):
            parser.error(f"--config {path}: unknown flag {key!r}")
        out[name] = list(value) if name == "audio" and value else value
    return out


def parse_config(argv: list[str] | None, parser: argparse.ArgumentParser) -> RunConfig:
    """argv (after an optional --config FILE, whose values become the defaults) -> RunConfig."""
    first, _ = parser.parse_known_args(argv)
    if first.config:
        parser.set_defaults(**read_config_file(first.config, parser))
    return config_from_args(parser.parse_args(argv))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    cfg = from_saved_run(parse_config(argv, parser), argv)
    validate(cfg, parser)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from src.training.errors import USER_ERRORS, NothingPredicted

    try:
        configure_runtime(cfg)
        dispatch(cfg)
    except NothingPredicted as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except PermissionError as err:
        print(f"error: {unwritable_message(cfg, err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished folds are kept; re-run the same command to resume",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # e.g. Ctrl-C while TensorFlow is being imported
        print("interrupted before the run started; nothing was written", file=sys.stderr)
        sys.exit(130)

