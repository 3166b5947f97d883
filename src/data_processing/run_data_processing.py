"""Extract MFCC / LogMel / HuBERT / openSMILE (eGeMAPS, ComParE) / GE2E feature sets for a corpus.

    python -m src.data_processing.run_data_processing --dataset EMODB --features MFCC,LogMel

Each feature goes to data/features/<DATASET>/<FEATURE>/<hash>/ (see store.py). MFCC and LogMel
come from one STFT per file, openSMILE's sets from its library and GE2E from a pretrained speaker
encoder (speaker_encoder.py), computed in worker processes (`--smile_level functionals|lld`); HuBERT runs in this process, batched (the
pipeline is pipeline.py; this module is its command line).
A rerun skips files whose arrays already exist (resume after an interruption); --overwrite
recomputes them. Unusable files are listed in failures.csv with the reason.

A CSV manifest's sets go to data/features/<NAME>/ with NAME from --name or the manifest's file
name (lists/my-set.csv -> MY_SET). Two extractions of one set never run at once: the second
waits for the first (one line on stderr).

Exit status: 0 when the sets were written; 1 when no file could be used (or, with --strict, when
any file failed); 2 for bad flags, a missing corpus or unavailable HuBERT weights (one line on
stderr, no traceback); 130 when interrupted.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import re
import sys
from pathlib import Path

import pandas as pd

from . import store
from .audio import fixed_length_warning
from .config import FEATURE_TYPES, SMILE_LEVELS, ExtractionConfig, timnet_config
from .corpora import CorpusError, canonical_dataset, load_corpus, resolve_raw_dir
from .download import DownloadError, download_corpus
from .features import check_features
from .hubert import HubertUnavailable
from .pipeline import ExtractionError, extract_dataset
from .speaker_encoder import EncoderUnavailable

__all__ = ["ExtractionError", "build_parser", "config_from_args", "extract_dataset",
           "format_summary", "main"]


def format_summary(dataset: str, feature: str, info: dict) -> str:
    """One line per set: files ok / failed / reused, where it went and the x-real-time speed."""
    speed = info["audio_seconds"] / info["seconds"] if info["seconds"] > 0 else 0.0
    where = info["dir"]
    try:
        relative = os.path.relpath(where)
        if not relative.startswith(".."):
            where = relative
    except ValueError:
        pass
    reused = f", {info['n_reused']} reused" if info.get("n_reused") else ""
    return (f"{dataset} {feature}: {info['n_ok']} ok, {info['n_failed']} failed{reused} -> {where} "
            f"({speed:.0f}x real time)")


# ------------------------------------------------------------------------------------- CLI
class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line and exit 2."""

    def error(self, message: str):  # one line, exit 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def _parse_features(text: str) -> tuple[str, ...]:
    try:
        return check_features([t for t in text.split(",") if t.strip()], FEATURE_TYPES)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _dataset_arg(text: str) -> str:
    try:
        return canonical_dataset(text)
    except CorpusError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, not {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command line of `python -m src.data_processing.run_data_processing`."""
    p = _Parser(prog="python -m src.data_processing.run_data_processing",
                description="Extract MFCC / LogMel / HuBERT / eGeMAPS / ComParE feature sets for "
                            "a speech emotion corpus.")
    p.add_argument("--dataset", required=True, type=_dataset_arg,
                   help="EMODB, RAVDESS or CSV (with --manifest); any case")
    p.add_argument("--raw_dir", help="folder holding the corpus audio (searched recursively)")
    p.add_argument("--manifest", help="CSV with columns path,label[,speaker] (for --dataset CSV)")
    p.add_argument("--name", help="folder name for a CSV corpus's feature sets (default: the "
                                  "manifest's file name, upper-cased, e.g. my-set.csv -> MY_SET)")
    p.add_argument("--features", type=_parse_features, default=("MFCC", "LogMel"),
                   help="comma-separated subset of MFCC,LogMel,HuBERT,eGeMAPS,ComParE,GE2E "
                        "(default MFCC,LogMel)")
    p.add_argument("--workers", type=_non_negative_int, default=os.cpu_count() or 1,
                   help="worker processes for MFCC/LogMel (default: CPU count; 0 = in-process)")
    p.add_argument("--download", action="store_true",
                   help="download the corpus into data/raw/<DATASET> when it is not found")
    p.add_argument("--overwrite", action="store_true", help="recompute existing arrays")
    p.add_argument("--strict", action="store_true", help="exit 1 when any file fails")
    p.add_argument("--features_root", default=str(store.DEFAULT_FEATURES_ROOT),
                   help="where feature sets go (default <repo>/data/features)")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    p.add_argument("--preset", choices=("default", "timnet"), default="default",
                   help="timnet = TIM-Net's front end (22.05 kHz, 2048/512, 39 MFCC, fixed "
                        "length); explicit flags override it")
    g = p.add_argument_group("extraction settings (default: ExtractionConfig)")
    g.add_argument("--sample_rate", type=_positive_int)
    g.add_argument("--n_fft", type=_positive_int)
    g.add_argument("--win_length", type=_positive_int)
    g.add_argument("--hop_length", type=_positive_int)
    g.add_argument("--n_mels", type=_positive_int)
    g.add_argument("--n_mfcc", type=_positive_int)
    g.add_argument("--fmin", type=float)
    g.add_argument("--fmax", type=float)
    g.add_argument("--trim_silence", action="store_true", default=None)
    g.add_argument("--normalize", choices=("none", "peak", "rms"))
    g.add_argument("--fixed_samples", type=_non_negative_int)
    g.add_argument("--hubert_path",
                   help="HuBERT folder or hub id (default facebook/hubert-base-ls960)")
    g.add_argument("--hubert_layer", type=int, help="-1 = last hidden state")
    g.add_argument("--smile_level", choices=SMILE_LEVELS,
                   help="eGeMAPS/ComParE/GE2E: functionals (one vector per utterance, default) or "
                        "lld (low-level descriptors / encoder states on the 20 ms frame grid)")
    return p


CONFIG_FLAGS = ("sample_rate", "n_fft", "win_length", "hop_length", "n_mels", "n_mfcc", "fmin",
                "fmax", "trim_silence", "normalize", "fixed_samples", "hubert_path", "hubert_layer",
                "smile_level")


def config_from_args(args: argparse.Namespace) -> ExtractionConfig:
    """The ExtractionConfig of the parsed flags (preset, then explicit settings); ValueError for
    inconsistent settings."""
    base = timnet_config(args.dataset) if args.preset == "timnet" else ExtractionConfig()
    overrides = {k: getattr(args, k) for k in CONFIG_FLAGS if getattr(args, k) is not None}
    config = dataclasses.replace(base, **overrides)
    if config.win_length > config.n_fft:
        raise ValueError(f"--win_length {config.win_length} exceeds --n_fft {config.n_fft}")
    nyquist = config.sample_rate / 2
    if config.fmax is not None and not config.fmin < config.fmax <= nyquist:
        raise ValueError(f"need fmin < fmax <= {nyquist:g} Hz (sample_rate / 2)")
    if config.n_mfcc > config.n_mels:
        raise ValueError(f"--n_mfcc {config.n_mfcc} exceeds --n_mels {config.n_mels}")
    return config


def manifest_set_name(manifest: str) -> str:
    """Default feature-set folder of a manifest: its file stem upper-cased, every character
    outside A-Z, 0-9 and _ replaced by _ (lists/my-set.csv -> MY_SET)."""
    return re.sub(r"[^A-Z0-9_]", "_", Path(manifest).stem.upper()) or "CSV"


def main(argv: list[str] | None = None) -> int:
    """Run the command; the exit status (see the module docstring)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # bad flags (2) or --help (0): return the code instead
        return int(exc.code or 0)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    prog = parser.prog
    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2

    dataset = args.dataset
    if dataset == "CSV":
        if not args.manifest:
            print(f"{prog}: error: --dataset CSV needs --manifest FILE", file=sys.stderr)
            return 2
        if args.download:
            print(f"{prog}: error: --download works for EMODB and RAVDESS only", file=sys.stderr)
            return 2
    elif args.name:
        print(f"{prog}: error: --name is only for --dataset CSV", file=sys.stderr)
        return 2
    folder_name = (args.name or manifest_set_name(args.manifest)) if dataset == "CSV" else dataset

    try:
        if args.download and dataset != "CSV":
            try:
                resolve_raw_dir(dataset, args.raw_dir)
            except CorpusError:
                if args.raw_dir:
                    raise
                download_corpus(dataset)
        corpus = load_corpus(dataset, raw_dir=args.raw_dir, manifest=args.manifest)
        summary = extract_dataset(corpus, config, args.features, args.features_root, folder_name,
                                  args.workers, args.overwrite, args.strict,
                                  progress=not args.no_progress)
    except CorpusError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except ExtractionError as exc:
        for name, info in exc.summary.items():
            print(format_summary(folder_name, name, info))
            _print_failures(info)
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - clear one-line errors, never a traceback
        if isinstance(exc, (HubertUnavailable, EncoderUnavailable, DownloadError, ValueError)):
            print(f"{prog}: error: {exc}", file=sys.stderr)
            return 2
        if isinstance(exc, OSError):
            print(f"{prog}: error: {exc}", file=sys.stderr)
            return 1
        raise
    for name, info in summary.items():
        print(format_summary(folder_name, name, info))
        _print_failures(info)
    warning = fixed_length_warning(corpus["path"])
    if warning:
        print(f"warning: {folder_name}: {warning}", file=sys.stderr)
    return 0


def _print_failures(info: dict, limit: int = 5) -> None:
    """Show the first few failure reasons of a set on stderr."""
    if not info.get("n_failed"):
        return
    try:
        failures = pd.read_csv(Path(info["dir"]) / "failures.csv", dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError):
        return
    for row in failures.head(limit).itertuples():
        print(f"  failed: {row.path}: {row.reason}", file=sys.stderr)
    if len(failures) > limit:
        print(f"  ... {len(failures) - limit} more in {Path(info['dir']) / 'failures.csv'}",
              file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
