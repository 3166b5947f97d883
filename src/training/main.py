"""Command line: `python -m src.training.main --mode train|test|predict|train-lmmd|...`.

This module only parses flags into a RunConfig and calls the function for the mode.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import tomllib
import typing
from pathlib import Path
from typing import Any

import yaml

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is first imported

from src.training import presets  # noqa: E402
from src.training.config import RunConfig  # noqa: E402
from src.training.flags import (FIELDS, GROUPS, MODES, RunFlags, flat_items,  # noqa: E402,F401
                                is_switch)
from src.training.validation import validate  # noqa: E402

# Modes that evaluate a saved run: --data, --feature_type and the model flags come from the run's
# config.json unless given on the command line.
SAVED_RUN_MODES = ("test", "predict", "test-cross-corpus")
# RunConfig fields without a command-line flag (settable in --config files only).
NO_FLAG = frozenset(name for name, f in FIELDS.items() if not f.metadata["cli"])


def build_parser() -> argparse.ArgumentParser:
    """The command line, generated from the field declarations (src.training.flags): one
    argument group per field group, one flag per RunConfig field except NO_FLAG."""
    p = argparse.ArgumentParser(prog="python -m src.training.main",
                                description="Train and evaluate speech emotion recognition "
                                            "models (TIM-Net style bidirectional TCN).")
    groups = {name: p.add_argument_group(title) for name, title in GROUPS.items()}
    hints = typing.get_type_hints(RunFlags)
    for name, field in FIELDS.items():
        if name not in NO_FLAG:
            groups[field.metadata["group"]].add_argument(
                f"--{name}", **_argument(name, field, hints[name]))
    return p


def _argument(name: str, field: dataclasses.Field, kind: type) -> dict[str, Any]:
    """add_argument keywords of one field: on/off switches for booleans that default to False,
    true/false values for the other booleans, the field's type for numbers; the flags a
    --preset sets default to None (filled in by `config_from_args`)."""
    meta = field.metadata
    kwargs: dict[str, Any] = {"help": meta["help"]}
    if meta["choices"] is not None:
        kwargs["choices"] = meta["choices"]
    if meta["metavar"] is not None:
        kwargs["metavar"] = meta["metavar"]
    if is_switch(name):
        return {**kwargs, "action": "store_true"}
    if meta["nargs"] is not None:
        return {**kwargs, "nargs": meta["nargs"], "default": list(field.default)}
    if kind is bool:
        kwargs["type"] = _bool
    elif kind in (int, float):
        kwargs["type"] = kind
    if name in presets.PRESET_FLAGS:
        sentence = meta["help"] + ("" if meta["help"].endswith(".") else ".")
        kwargs["help"] = f"{sentence} Default from --preset (seed: {field.default})."
        return {**kwargs, "default": None}
    if field.default != "" and "%(default)" not in kwargs["help"]:
        kwargs["help"] = f"{kwargs['help']} (default %(default)s)".lstrip()
    return {**kwargs, "default": field.default}


def _bool(text: str) -> bool:
    """true/false (1/0, yes/no, on/off) -> bool: the type of the booleans that default to True."""
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
        import keras  # heavy: keras

        keras.mixed_precision.set_global_policy("mixed_float16")
    if cfg.threads:
        import tensorflow as tf  # heavy: tensorflow

        tf.config.threading.set_intra_op_parallelism_threads(cfg.threads)
        tf.config.threading.set_inter_op_parallelism_threads(cfg.threads)


def dispatch(cfg: RunConfig):
    if cfg.mode == "train":
        from src.training.experiment import run_training  # heavy: sklearn
        return run_training(cfg)
    if cfg.mode == "test":
        from src.training.evaluate import run_test  # heavy: sklearn, matplotlib
        return run_test(cfg)
    if cfg.mode == "predict":
        from src.training.evaluate import run_predict  # heavy: sklearn, matplotlib
        return run_predict(cfg)
    from src.training.adaptation import run_adaptation, run_cross_corpus_test  # heavy: sklearn
    return run_adaptation(cfg) if cfg.mode == "train-lmmd" else run_cross_corpus_test(cfg)


def read_config_file(path: str, parser: argparse.ArgumentParser) -> dict:
    """Flag values from a YAML (.yaml/.yml) or TOML (.toml) file: a mapping of flag names
    (with or without the leading --, dashes or underscores; any RunConfig field) to values,
    flat or grouped by the field groups ({optimisation: {lr: 0.001}}, as in the run.yaml
    saved with every run). Exits with one line naming the file on a missing/unreadable file,
    an unknown flag or a flag given twice."""
    try:
        text = Path(path).read_text()
        values = tomllib.loads(text) if path.endswith(".toml") else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as err:
        parser.error(f"--config {path}: cannot read it ({type(err).__name__}: {err})")
    if not isinstance(values, dict):
        parser.error(f"--config {path}: expected a mapping of flag names to values")
    # every RunConfig field, including settings without a flag (min_lr)
    known = {action.dest for action in parser._actions} | set(FIELDS)
    out = {}
    try:
        items = list(flat_items(values))
    except ValueError as err:
        parser.error(f"--config {path}: {err}")
    for name, value in items:
        if name not in known or name in ("help", "config"):
            parser.error(f"--config {path}: unknown flag {name!r}")
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
    from src.training.errors import USER_ERRORS, NothingPredicted  # heavy: sklearn (via experiment)

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

