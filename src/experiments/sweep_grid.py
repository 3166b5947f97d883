"""Sweep configurations: grid points -> canonical flag dicts, their identity and their command.

Each grid point of a sweep file (sweep_spec.py) becomes a canonical flag dict: values are
converted with the CLI's own types (so `3e-4` and `0.0003` are the same value), choices are
checked, and for `--mode train` the flags that only matter to `train-lmmd` (target_data,
da_method, lmmd_weight, kernel_*, fix_sigma, pseudo_label, confidence, domain_norm, label_map)
are dropped, so grid points that would train the same model collapse into one configuration. A
configuration's identity is the first 8 hex digits of the sha1 of its sorted flags (paths and
display flags -- results_root, models_root, features_root, verbose, threads -- and flags at
their CLI default left out), so it does not depend on flag order.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import itertools
import json
import random
import shlex
from pathlib import Path
from typing import Any, Sequence

from src.training.config import ADAPTATION_ONLY, BOOKKEEPING, RunConfig
from src.training.main import build_parser  # light: no TensorFlow import
from src.training.presets import PRESET_FLAGS

from .sweep_spec import VARIANTS_KEY, SweepError, SweepSpec

DEFAULT_MODULE = "src.training.main"

#: Flags that do not change what is trained: left out of a configuration's identity.
NOT_IN_IDENTITY = BOOKKEEPING
#: Flags that the sweep sets itself.
RESERVED = frozenset({"run_id"})
#: Flags that only `--mode train-lmmd` reads; dropped from `--mode train` configurations.
DA_ONLY = ADAPTATION_ONLY


def _cli_parser() -> argparse.ArgumentParser:
    """The argument parser of `python -m src.training.main`."""
    return build_parser()


def _actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """{dest: action} of every optional flag of `parser` except --help."""
    return {a.dest: a for a in parser._actions if a.option_strings and a.dest != "help"}


def _canonical_value(action: argparse.Action, raw: str, where: str) -> str:
    """`raw` converted with the flag's type and checked against its choices, as a string."""
    flag = action.option_strings[0]
    value: Any = raw
    if action.type is not None:
        try:
            value = action.type(raw)
        except (TypeError, ValueError, argparse.ArgumentTypeError) as err:
            raise SweepError(f"{where}: {flag} {raw!r}: {err}") from None
    if action.choices is not None and value not in action.choices:
        raise SweepError(f"{where}: {flag} {raw!r}: choose from "
                         f"{', '.join(map(str, action.choices))}")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def tokens_to_flags(tokens: Sequence[str], actions: dict[str, argparse.Action],
                    where: str) -> dict[str, Any]:
    """argv-style tokens -> {dest: canonical value string, or True for store_true flags}."""
    by_option = {opt: a for a in actions.values() for opt in a.option_strings}
    flags: dict[str, Any] = {}
    i = 0
    tokens = list(tokens)
    while i < len(tokens):
        token = tokens[i]
        option, eq, inline = token.partition("=")
        action = by_option.get(option if option.startswith("--") else token)
        if action is None:
            raise SweepError(f"{where}: {token!r} is not a flag of python -m {DEFAULT_MODULE}")
        i += 1
        if action.nargs == 0:
            if eq:
                raise SweepError(f"{where}: {option} takes no value")
            flags[action.dest] = True
            continue
        if action.nargs == "+":
            values = [inline] if eq else []
            while i < len(tokens) and not tokens[i].startswith("--"):
                values.append(tokens[i])
                i += 1
            if not values:
                raise SweepError(f"{where}: {option} needs a value")
            flags[action.dest] = " ".join(values)
            continue
        if eq:
            raw = inline
        else:
            if i >= len(tokens):
                raise SweepError(f"{where}: {option} needs a value")
            raw = tokens[i]
            i += 1
        flags[action.dest] = _canonical_value(action, raw, where)
    return flags


def axis_value_flags(key: str, raw: str, actions: dict[str, argparse.Action],
                     where: str) -> dict[str, Any]:
    """One value of one axis -> flags (VARIANTS values are whole flag strings)."""
    if key == VARIANTS_KEY:
        return tokens_to_flags(shlex.split(raw), actions, f"{where} VARIANTS {raw!r}")
    action = actions.get(key)
    if action is None:
        raise SweepError(f"{where}: {key} is not a flag of python -m {DEFAULT_MODULE} "
                         f"(arrays are named after flags without '--', e.g. lr=(3e-4 1e-3))")
    if action.nargs == 0:
        lowered = raw.lower()
        if lowered in ("1", "true", "yes", "on"):
            return {key: True}
        if lowered in ("0", "false", "no", "off"):
            return {key: False}
        raise SweepError(f"{where}: {key} is a switch; use true or false, got {raw!r}")
    if action.nargs == "+":
        raise SweepError(f"{where}: {key} cannot be swept")
    return {key: _canonical_value(action, raw, f"{where} {key}")}


def _prune(flags: dict[str, Any]) -> dict[str, Any]:
    """Drop the train-lmmd-only flags (DA_ONLY) from a `--mode train` configuration."""
    if flags.get("mode", "train") == "train":
        return {k: v for k, v in flags.items() if k not in DA_ONLY}
    return flags


def config_hash(flags: dict[str, Any], defaults: dict[str, Any] | None = None) -> str:
    """8 hex digits of sha1 over the sorted (flag, value) pairs that change the trained model.

    Flags equal to the CLI default (`defaults`, canonical strings) are left out, so spelling a
    default out (`--use_dtpm true`) does not make a new configuration."""
    defaults = defaults or {}
    items = sorted((k, v) for k, v in flags.items()
                   if k not in NOT_IN_IDENTITY and defaults.get(k, object()) != v)
    return hashlib.sha1(json.dumps(items).encode()).hexdigest()[:8]


# Flags whose default came from --preset before presets set schedules too: a value given for
# them always counted as set, so it still does (configuration hashes of earlier sweeps stay).
_ALWAYS_SET = frozenset({"filter_size", "dilation_size", "kernel_size", "stack_size", "dropout",
                         "block"})


def cli_defaults(actions: dict[str, argparse.Action]) -> dict[str, Any]:
    """Canonical default value of every valued flag that has one; a flag whose default comes
    from --preset counts at its seed default (RunConfig), as before presets set it."""
    seed = RunConfig()
    defaults = {}
    for dest, action in actions.items():
        default = action.default
        if default is None and dest in PRESET_FLAGS and dest not in _ALWAYS_SET:
            default = getattr(seed, dest)
        if action.nargs in (0, "+") or default is None:
            continue
        try:
            defaults[dest] = _canonical_value(action, str(default), "default")
        except SweepError:
            pass
    return defaults


def flags_to_argv(flags: dict[str, Any]) -> list[str]:
    """A flag dict back to argv tokens (`True` -> a bare switch; `audio` takes several values)."""
    argv: list[str] = []
    for key, value in flags.items():
        if value is True:
            argv.append(f"--{key}")
        elif key == "audio":
            argv += [f"--{key}", *str(value).split(" ")]
        else:
            argv += [f"--{key}", str(value)]
    return argv


@dataclasses.dataclass
class Config:
    """One configuration of a sweep: its identity (config_hash) and its canonical flags."""

    hash: str
    flags: dict[str, Any]

    @property
    def run_id(self) -> str:
        """The run id the sweep gives this configuration: `sweep-<hash>`."""
        return f"sweep-{self.hash}"


def expand(spec: SweepSpec, extra: Sequence[str] = ()) -> tuple[list[Config], int]:
    """All distinct configurations of the grid (file order) and the raw grid size."""
    actions = _actions(_cli_parser())
    defaults = cli_defaults(actions)
    fixed = tokens_to_flags(spec.fixed, actions, f"{spec.name}: FIXED")
    extra_flags = tokens_to_flags(extra, actions, "extra flags after --")
    per_axis = [[axis_value_flags(key, raw, actions, spec.name) for raw in values]
                for key, values in spec.axes]
    for key in RESERVED:
        for source, flags in [("FIXED", fixed), ("extra flags", extra_flags)] + [
                (f"array {k}", f) for (k, _), axis in zip(spec.axes, per_axis) for f in axis]:
            if key in flags:
                raise SweepError(f"{spec.name}: {source} sets --{key}; the sweep names runs "
                                 f"itself (sweep-<hash>)")
    configs: dict[str, Config] = {}
    for point in itertools.product(*per_axis):
        flags = dict(fixed)
        for part in point:
            flags.update(part)
        flags.update(extra_flags)
        flags = _prune({k: v for k, v in flags.items() if v is not False})
        digest = config_hash(flags, defaults)
        configs.setdefault(digest, Config(digest, flags))
    return list(configs.values()), spec.grid_size()


def sample(configs: list[Config], n: int | None, seed: int) -> list[Config]:
    """A seeded random subset of `n` configurations, kept in grid order (all when n is None)."""
    if n is None or n >= len(configs):
        return list(configs)
    if n < 1:
        raise SweepError("--samples must be at least 1")
    keep = sorted(random.Random(seed).sample(range(len(configs)), n))
    return [configs[i] for i in keep]


def command_for(config: Config, python: str, module: str, threads: int,
                results_root: Path | None) -> list[str]:
    """The argv that trains `config`: `python -m module <flags> --run_id sweep-<hash> ...`."""
    argv = [python, "-m", module, *flags_to_argv(config.flags)]
    if results_root is not None and "results_root" not in config.flags:
        argv += ["--results_root", str(results_root)]
    return argv + ["--run_id", config.run_id, "--verbose", "0", "--threads", str(threads)]

