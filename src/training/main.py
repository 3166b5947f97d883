"""Command line: `python -m src.training.main --mode train|test|predict|train-lmmd|...`.

This module only parses flags into a RunConfig and calls the function for the mode.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is first imported

from src.training import presets  # noqa: E402
from src.training.config import RunConfig  # noqa: E402
from src.training.validation import validate  # noqa: E402

MODES = ("train", "test", "predict", "train-lmmd", "test-cross-corpus")
# Modes that evaluate a saved run: --data, --feature_type and the model flags come from the run's
# config.json unless given on the command line.
SAVED_RUN_MODES = ("test", "predict", "test-cross-corpus")
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
    p.add_argument("--preset", choices=presets.NAMES, default=d.preset,
                   help="default values of the model and schedule flags: default (the seed's: "
                        "128 filters, kernel 3, 3 stacks, residual blocks, dropout 0.4, "
                        "attention, DTPM, 1024/512 head, cosine decay), light (TIM-Net sized "
                        "network, 39 filters, kernel 2, 1 stack, gated blocks, dropout 0.1, with "
                        "attention, DTPM and head; ~13x faster on CPU) or timnet (TIM-Net "
                        "exactly: linear level weights, no attention/DTPM/head, Adam 1e-3 "
                        "constant, batch 64, 500 epochs, last epoch, no validation split; use "
                        "features extracted with run_data_processing --preset timnet)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epoch", type=int, default=None, help=_from_preset(d, "epoch"))
    g.add_argument("--batch_size", type=int, default=None, help=_from_preset(d, "batch_size"))
    g.add_argument("--balanced_batches", action="store_true",
                   help="draw each training epoch class-balanced (with replacement) instead of "
                        "as a permutation; train-lmmd: the source batches")
    g.add_argument("--mixup", type=float, default=d.mixup, metavar="ALPHA",
                   help="mix each training file with another of its batch, weight ~ "
                        "Beta(ALPHA, ALPHA) (features and labels; 0 = off, 0.2-0.4 usual); "
                        "train-lmmd: the source batches")
    g.add_argument("--lr", type=float, default=None, help=_from_preset(d, "lr"))
    g.add_argument("--lr_schedule", choices=("cosine", "constant"), default=None,
                   help="cosine: decay to min_lr over --epoch; constant: no decay (TIM-Net). "
                        + _from_preset(d, "lr_schedule"))
    g.add_argument("--clipnorm", type=float, default=None,
                   help="clip each gradient to this norm (0 = off). "
                        + _from_preset(d, "clipnorm"))
    g.add_argument("--label_smoothing", type=float, default=None,
                   help="of the (source) cross-entropy (0 for the MLP with LMMD: smoothed, less "
                        "confident target predictions blur the class-conditional weights). "
                        + _from_preset(d, "label_smoothing"))
    g.add_argument("--beta1", type=float, default=d.beta1)
    g.add_argument("--beta2", type=float, default=d.beta2)
    g.add_argument("--patience", type=int, default=None,
                   help="early-stopping patience in epochs (0 = off, the last epoch is kept). "
                        + _from_preset(d, "patience"))
    g.add_argument("--monitor", default=d.monitor, choices=("val_loss", "val_accuracy"))
    g = p.add_argument_group("model")
    g.add_argument("--dropout", type=float, default=None, help=_from_preset(d, "dropout"))
    g.add_argument("--activation", default=d.activation)
    for name in ("filter_size", "dilation_size", "kernel_size", "stack_size"):
        g.add_argument(f"--{name}", type=int, default=None, help=_from_preset(d, name))
    g.add_argument("--block", choices=("residual", "gated"), default=None,
                   help="temporal block: residual sum (seed) or sigmoid gate (TIM-Net). "
                        + _from_preset(d, "block"))
    g.add_argument("--level_weights", choices=("softmax", "linear"), default=None,
                   help="weights of the temporal levels: softmax (sum to 1) or linear "
                        "(unconstrained, TIM-Net). " + _from_preset(d, "level_weights"))
    g.add_argument("--use_dtpm", type=_bool, default=None, metavar="{true,false}",
                   help=_from_preset(d, "use_dtpm"))
    g.add_argument("--use_attention", type=_bool, default=None, metavar="{true,false}",
                   help=_from_preset(d, "use_attention"))
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
    g.add_argument("--head_units", default=None,
                   help="Dense sizes of the classifier head, comma separated; none = softmax "
                        "straight on the pooled features, as in TIM-Net. "
                        + _from_preset(d, "head_units"))
    g = p.add_argument_group("protocol")
    g.add_argument("--protocol", choices=("kfold", "loso"), default=d.protocol)
    g.add_argument("--split_fold", type=int, default=d.split_fold)
    g.add_argument("--fold_seed", type=int, default=None,
                   help="kfold: random_state of the shuffled KFold (TIM-Net's code: 46). "
                        + _from_preset(d, "fold_seed"))
    g.add_argument("--loso_groups", type=int, default=d.loso_groups,
                   help="loso: group speakers into this many folds (0 = one speaker per fold)")
    g.add_argument("--val_policy", choices=("train_split", "test_fold"), default=d.val_policy,
                   help="test_fold reproduces the published protocol (optimistic)")
    g.add_argument("--val_fraction", type=float, default=None,
                   help="share of the training folds held out for early stopping and model "
                        "selection; 0 = none, train on all of them (needs --patience 0). "
                        + _from_preset(d, "val_fraction"))
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


def _from_preset(seed: RunConfig, name: str) -> str:
    """Help text of a flag whose default comes from --preset."""
    return f"Default from --preset (seed: {getattr(seed, name)})."


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """Parsed flags -> RunConfig: the flags left unset take --preset's values (applied here,
    once; see src.training.presets)."""
    values = presets.resolve(vars(args))
    values["data"] = values["data"].upper()
    if values["target_data"]:
        values["target_data"] = values["target_data"].upper()
    return RunConfig.from_dict(values)


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

