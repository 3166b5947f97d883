"""Extract MFCC / LogMel / HuBERT / openSMILE (eGeMAPS, ComParE) feature sets for a corpus.

    python -m src.data_processing.run_data_processing --dataset EMODB --features MFCC,LogMel

Each feature goes to data/features/<DATASET>/<FEATURE>/<hash>/ (see store.py). MFCC and LogMel
come from one STFT per file and openSMILE's sets from its library, computed in worker processes
(`--smile_level functionals|lld`, see smile.py); HuBERT runs in this process, batched.
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
import multiprocessing
import os
import re
import sys
import time
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from src.utils.io import save_npy

from . import store
from .audio import AudioError, condition, read_audio
from .config import FEATURE_TYPES, SMILE_LEVELS, ExtractionConfig, timnet_config
from .corpora import CorpusError, canonical_dataset, load_corpus, resolve_raw_dir
from .features import (SPECTRAL_FEATURES, check_features, extract_arrays, extract_spectral,
                       mel_basis)

log = logging.getLogger("src.data_processing")

REPO_ROOT = Path(__file__).resolve().parents[2]
HUBERT_FILES_PER_BATCH = 16


class ExtractionError(RuntimeError):
    """Extraction finished but produced nothing usable, or failed files under strict mode.

    `summary` holds the per-feature summary of what was written (same as extract_dataset's).
    """

    def __init__(self, message: str, summary: dict | None = None):
        super().__init__(message)
        self.summary = summary or {}


# ------------------------------------------------------------------------------ worker side
_STATE: dict = {}


def _tune_worker_memory() -> None:
    """Keep freed heap memory in this worker instead of handing it back to the OS.

    Each file allocates a few hundred kB of arrays; with glibc's defaults they are mmap'ed and
    unmapped per file, and on virtual machines the page faults that follow cost more than the
    FFTs. Raising the mmap/trim thresholds makes the worker reuse its heap (about 3x faster on
    the development VM). Only done in worker processes, never in the caller's process.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 64 * 1024 * 1024)
        libc.mallopt(m_trim_threshold, 512 * 1024 * 1024)
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


def _exit_with_parent() -> None:
    """Make this worker die quietly with its parent: a parent killed by SIGKILL cannot stop
    its pool, and orphaned workers would print a BrokenPipe traceback on their next result.
    Linux: the kernel sends SIGTERM when the parent exits; elsewhere nothing changes."""
    try:
        import ctypes
        import signal

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6").prctl(pr_set_pdeathsig, int(signal.SIGTERM))
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    except (OSError, AttributeError):  # not Linux/glibc
        return
    parent = multiprocessing.parent_process()
    if parent is not None and not parent.is_alive():  # died before prctl took effect
        os._exit(0)


def _init_worker(config: ExtractionConfig, dirs: dict[str, str], in_worker: bool) -> None:
    """Per-process setup; `in_worker` is False when files are processed in the caller's process,
    whose memory and thread settings are then left alone."""
    if in_worker:
        _exit_with_parent()
        _tune_worker_memory()
        try:
            from threadpoolctl import threadpool_limits

            _STATE["limits"] = threadpool_limits(1)  # one BLAS thread per worker process
        except ImportError:  # pragma: no cover - comes with scikit-learn
            pass
    _STATE["config"] = config
    _STATE["dirs"] = {name: Path(path) for name, path in dirs.items()}
    mel_basis(config.sample_rate, config.n_fft, config.n_mels, config.fmin, config.fmax)
    if in_worker:  # warm up the heap and the FFT plans once instead of on the first files
        warm = np.zeros(config.sample_rate * 30, dtype=np.float32)
        warm[::97] = 0.1
        extract_spectral(warm, config, SPECTRAL_FEATURES)


def _process_file(task: tuple[str, str, tuple[str, ...]]):
    """Worker: one file -> arrays written atomically. Returns (file_id, reason|None, frames, seconds)."""
    file_id, path, features = task
    config: ExtractionConfig = _STATE["config"]
    try:
        raw, rate = read_audio(path)
        seconds = len(raw) / rate
        y = condition(raw, rate, config)
        arrays = extract_arrays(y, config, features)
        for name in features:
            # rename-atomic without a per-file fsync (half the extraction time); the set's
            # COMPLETE marker is written durably once every array is in place
            save_npy(_STATE["dirs"][name] / f"{file_id}.npy", arrays[name], durable=False)
        return file_id, None, {name: arrays[name].shape[0] for name in features}, seconds
    except AudioError as exc:
        return file_id, str(exc), {}, 0.0
    except OSError as exc:
        return file_id, f"I/O error: {exc}", {}, 0.0
    except Exception as exc:  # noqa: BLE001 - one bad file must not stop the run
        return file_id, f"{type(exc).__name__}: {exc}", {}, 0.0


def _mp_context():
    """fork when safe (fast start, nothing re-imported); forkserver once threaded runtimes
    such as torch or tensorflow are loaded in this process."""
    methods = multiprocessing.get_all_start_methods()
    threaded = any(name in sys.modules for name in ("torch", "tensorflow", "jax"))
    if "fork" in methods and not threaded:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


# ------------------------------------------------------------------------------ main side
def _source_seconds(path: str) -> float:
    try:
        import soundfile as sf

        info = sf.info(path)
        return info.frames / info.samplerate
    except Exception:  # noqa: BLE001 - unknown duration is not fatal for a reused array
        return float("nan")


def _progress_bar(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="file", disable=not enabled or total == 0,
                file=sys.stderr, smoothing=0.05, dynamic_ncols=True)


def _metadata_rows(corpus: pd.DataFrame, frames: dict[str, int], seconds: dict[str, float]) -> pd.DataFrame:
    rows = corpus[corpus["file_id"].isin(frames.keys())].copy()
    rows["n_frames"] = rows["file_id"].map(frames).astype(int)
    rows["duration_s"] = rows["file_id"].map(seconds).astype(float).round(6)
    return rows


def _one_blas_thread():
    """Temporarily one BLAS thread: the small mel products are slower multi-threaded, badly so
    when the cores are busy."""
    try:
        from threadpoolctl import threadpool_limits

        return threadpool_limits(1)
    except ImportError:  # pragma: no cover
        import contextlib

        return contextlib.nullcontext()


def _warm_up(config: ExtractionConfig, names) -> None:
    """Import librosa's spectral code and build the filterbank (and openSMILE's extractors)
    once in this process, so forked workers inherit them instead of each paying ~1 s of imports
    (not counted in `seconds`)."""
    from .smile import smile_extractor

    extract_spectral(np.full(max(config.n_fft, config.win_length), 0.1, dtype=np.float32),
                     config, [n for n in names if n in SPECTRAL_FEATURES] or ["MFCC"])
    for name in names:
        if name not in SPECTRAL_FEATURES:
            smile_extractor(name, config.smile_level)


def _extract_spectral_sets(corpus, config, names, features_root, dataset, workers, overwrite,
                           progress) -> dict[str, dict]:
    start = time.perf_counter()
    dirs = {name: store.feature_set_dir(features_root, dataset, name, config) for name in names}
    planned = corpus[["file_id", "path"]]
    reusable = {name: store.begin_set(dirs[name], planned, overwrite) for name in names}

    frames: dict[str, dict[str, int]] = {name: {} for name in names}
    seconds: dict[str, float] = {}
    for name in names:  # arrays kept from an earlier run
        for file_id in sorted(reusable[name]):
            n = store.array_frames(dirs[name] / f"{file_id}.npy")
            if n is not None:
                frames[name][file_id] = n
    tasks = []
    for file_id, path in zip(corpus["file_id"], corpus["path"]):
        missing = tuple(name for name in names if file_id not in frames[name])
        if missing:
            tasks.append((file_id, path, missing))
        else:
            seconds[file_id] = _source_seconds(path)

    failures = []
    computed = {name: [0, 0.0] for name in names}  # files and audio seconds computed now
    desc = f"{dataset} {'+'.join(names)}"
    n_workers = max(0, min(int(workers), len(tasks)))
    warm_seconds = 0.0
    if tasks:
        warm_start = time.perf_counter()
        _warm_up(config, names)
        warm_seconds = time.perf_counter() - warm_start
    if tasks and n_workers >= 1:
        chunksize = max(1, min(32, len(tasks) // (n_workers * 8)))
        pool = _mp_context().Pool(n_workers, initializer=_init_worker,
                                  initargs=(config, {k: str(v) for k, v in dirs.items()}, True))
        try:
            with _progress_bar(len(tasks), desc, progress) as bar:
                for result in pool.imap_unordered(_process_file, tasks, chunksize=chunksize):
                    _collect(result, frames, seconds, failures, computed)
                    bar.update()
            pool.close()
        except BaseException:
            pool.terminate()
            raise
        finally:
            pool.join()
    elif tasks:  # workers=0: in this process (debugging)
        _init_worker(config, {k: str(v) for k, v in dirs.items()}, False)
        with _one_blas_thread(), _progress_bar(len(tasks), desc, progress) as bar:
            for task in tasks:
                _collect(_process_file(task), frames, seconds, failures, computed)
                bar.update()

    paths = dict(zip(corpus["file_id"], corpus["path"]))
    failure_frame = pd.DataFrame(
        [{"file_id": f, "path": paths[f], "reason": r} for f, r in failures],
        columns=store.FAILURE_COLUMNS)
    elapsed = time.perf_counter() - start - warm_seconds
    summary = {}
    for name in names:
        failed_here = failure_frame[~failure_frame["file_id"].isin(list(frames[name]))]
        for file_id in failed_here["file_id"]:  # never leave an array of a failed file behind
            (dirs[name] / f"{file_id}.npy").unlink(missing_ok=True)
        failed_here = _add_corpus_failures(failed_here, corpus)
        metadata = _metadata_rows(corpus, frames[name], seconds)
        _finish(dirs[name], name, dataset, config, metadata, failed_here)
        summary[name] = {"n_ok": int(len(metadata)), "n_failed": int(len(failed_here)),
                         "dir": str(dirs[name]), "seconds": elapsed,
                         "audio_seconds": computed[name][1], "n_computed": computed[name][0],
                         "n_reused": int(len(metadata)) - computed[name][0],
                         "complete": bool(len(metadata))}
    return summary


def _add_corpus_failures(failures: pd.DataFrame, corpus: pd.DataFrame) -> pd.DataFrame:
    """`failures` plus the manifest rows the corpus reader refused (colliding file_ids,
    conflicting labels; see corpora._manifest_duplicates): they are failures of every set, so
    they are counted and --strict sees them."""
    rows = corpus.attrs.get("failures") or []
    if not rows:
        return failures
    extra = pd.DataFrame([dict(zip(store.FAILURE_COLUMNS, row)) for row in rows],
                         columns=store.FAILURE_COLUMNS)
    return pd.concat([failures, extra], ignore_index=True) if len(failures) else extra


def _corpus_source(corpus: pd.DataFrame) -> dict | None:
    """What store.check_source records: the manifest of a CSV corpus, else the audio folder."""
    if corpus.attrs.get("manifest"):
        return {"manifest": corpus.attrs["manifest"]}
    if corpus.attrs.get("source"):
        return {"raw_dir": str(corpus.attrs["source"])}
    return None


def _finish(set_dir, name, dataset, config, metadata, failures) -> None:
    """Complete the set, or, when no file was usable, only record why (no COMPLETE marker)."""
    if len(metadata):
        store.finish_set(set_dir, feature=name, dataset=dataset, config=config,
                         metadata=metadata, failures=failures)
    else:
        store.write_failures(set_dir, failures)


def _collect(result, frames, seconds, failures, computed) -> None:
    file_id, reason, counts, duration = result
    if reason is not None:
        failures.append((file_id, reason))
        return
    for name, n in counts.items():
        frames[name][file_id] = n
        computed[name][0] += 1
        computed[name][1] += duration
    seconds[file_id] = duration


def _extract_hubert_set(corpus, config, features_root, dataset, overwrite, progress,
                        device=None) -> dict:
    from .hubert import HubertExtractor

    start = time.perf_counter()
    extractor = HubertExtractor(config, device=device)  # raises HubertUnavailable early
    set_dir = store.feature_set_dir(features_root, dataset, "HuBERT", config)
    reusable = store.begin_set(set_dir, corpus[["file_id", "path"]], overwrite)
    frames: dict[str, int] = {}
    seconds: dict[str, float] = {}
    for file_id in sorted(reusable):
        n = store.array_frames(set_dir / f"{file_id}.npy")
        if n is not None:
            frames[file_id] = n
    todo = [(f, p) for f, p in zip(corpus["file_id"], corpus["path"]) if f not in frames]
    for file_id, path in zip(corpus["file_id"], corpus["path"]):
        if file_id in frames:
            seconds[file_id] = _source_seconds(path)

    failures = []
    computed_seconds = 0.0

    def run(batch):
        nonlocal computed_seconds
        try:
            outputs = extractor.extract([y for _, y, _ in batch], config.sample_rate)
        except AudioError:
            if len(batch) == 1:
                raise
            for item in batch:  # isolate the bad file
                try:
                    run([item])
                except AudioError as exc:
                    failures.append((item[0], str(exc)))
            return
        for (file_id, _, duration), array in zip(batch, outputs):
            save_npy(set_dir / f"{file_id}.npy", array)
            frames[file_id] = array.shape[0]
            seconds[file_id] = duration
            computed_seconds += duration

    with _progress_bar(len(todo), f"{dataset} HuBERT", progress) as bar:
        for begin in range(0, len(todo), HUBERT_FILES_PER_BATCH):
            batch = []
            for file_id, path in todo[begin:begin + HUBERT_FILES_PER_BATCH]:
                try:
                    raw, rate = read_audio(path)
                    batch.append((file_id, condition(raw, rate, config), len(raw) / rate))
                except AudioError as exc:
                    failures.append((file_id, str(exc)))
            if batch:
                try:
                    run(batch)
                except AudioError as exc:
                    failures.append((batch[0][0], str(exc)))
            bar.update(len(todo[begin:begin + HUBERT_FILES_PER_BATCH]))

    paths = dict(zip(corpus["file_id"], corpus["path"]))
    failure_frame = pd.DataFrame([{"file_id": f, "path": paths[f], "reason": r} for f, r in failures],
                                 columns=store.FAILURE_COLUMNS)
    failure_frame = _add_corpus_failures(failure_frame, corpus)
    metadata = _metadata_rows(corpus, frames, seconds)
    _finish(set_dir, "HuBERT", dataset, config, metadata, failure_frame)
    n_computed = len(todo) - len(failures)
    return {"n_ok": int(len(metadata)), "n_failed": int(len(failure_frame)), "dir": str(set_dir),
            "seconds": time.perf_counter() - start, "audio_seconds": computed_seconds,
            "n_computed": n_computed, "n_reused": int(len(metadata)) - n_computed,
            "complete": bool(len(metadata))}


def extract_dataset(corpus_df: pd.DataFrame, config: ExtractionConfig,
                    features: Iterable[str] = ("MFCC", "LogMel"),
                    features_root: str | os.PathLike = store.DEFAULT_FEATURES_ROOT,
                    dataset: str = "EMODB", workers: int | None = None, overwrite: bool = False,
                    strict: bool = False, progress: bool = True,
                    hubert_device: str | None = None) -> dict[str, dict]:
    """Extract `features` for every row of `corpus_df` (from `load_corpus`) into feature sets.

    Returns {feature: {"n_ok", "n_failed", "dir", "seconds", "audio_seconds", "n_computed",
    "n_reused", "complete"}}; `seconds` is the wall time of the stage (MFCC and LogMel share
    one; the one-time import of librosa is left out), `audio_seconds` the duration of the audio
    computed in this call (reused arrays excluded), so audio_seconds / seconds is the
    x-real-time speed. `workers` processes compute
    the spectral features (None = os.cpu_count(); 0 = in this process). Files whose arrays exist
    are reused unless `overwrite`. Raises ExtractionError after writing when a feature has no
    usable file, or with `strict` when any file failed; HubertUnavailable when HuBERT weights
    cannot be loaded.
    """
    names = check_features(features, FEATURE_TYPES)
    if corpus_df is None or len(corpus_df) == 0:
        raise ExtractionError("the corpus is empty")
    missing = [c for c in ("file_id", "path", "label") if c not in corpus_df.columns]
    if missing:
        raise ExtractionError(f"the corpus table lacks column(s) {', '.join(missing)}")
    if corpus_df["file_id"].duplicated().any():
        raise ExtractionError("file_id values in the corpus table are not unique")
    corpus_df = corpus_df.copy()
    if "speaker" not in corpus_df.columns:
        corpus_df["speaker"] = "unknown"
    if "gender" not in corpus_df.columns:
        corpus_df["gender"] = ""
    corpus_df["file_id"] = corpus_df["file_id"].astype(str)
    corpus_df["path"] = corpus_df["path"].astype(str)
    dataset = str(dataset).upper()
    features_root = Path(features_root)
    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    summary: dict[str, dict] = {}
    per_file = [name for name in names if name != "HuBERT"]  # spectral and openSMILE
    set_dirs = [store.feature_set_dir(features_root, dataset, name, config) for name in names]
    with store.lock_sets(set_dirs):  # one extraction per set at a time
        for set_dir in set_dirs:
            store.check_source(set_dir, _corpus_source(corpus_df), overwrite)
        if per_file:
            summary.update(_extract_spectral_sets(corpus_df, config, per_file, features_root,
                                                  dataset, workers, overwrite, progress))
        if "HuBERT" in names:
            summary["HuBERT"] = _extract_hubert_set(corpus_df, config, features_root, dataset,
                                                    overwrite, progress, hubert_device)
    empty = [name for name, info in summary.items() if info["n_ok"] == 0]
    if empty:
        raise ExtractionError(f"no usable files for {', '.join(empty)} "
                              f"(reasons in failures.csv of each set)", summary)
    if strict and any(info["n_failed"] for info in summary.values()):
        failed = sum(info["n_failed"] for info in summary.values())
        raise ExtractionError(f"--strict: {failed} file(s) failed", summary)
    return summary


def format_summary(dataset: str, feature: str, info: dict) -> str:
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
                   help="comma-separated subset of MFCC,LogMel,HuBERT,eGeMAPS,ComParE "
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
                   help="timnet = TIM-Net's front end (22.05 kHz, 2048/512, 39 MFCC, fixed length); "
                        "explicit flags override it")
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
    g.add_argument("--hubert_path", help="HuBERT folder or hub id (default facebook/hubert-base-ls960)")
    g.add_argument("--hubert_layer", type=int, help="-1 = last hidden state")
    g.add_argument("--smile_level", choices=SMILE_LEVELS,
                   help="eGeMAPS/ComParE: functionals (one vector per utterance, default) or lld "
                        "(low-level descriptors resampled to the 20 ms frame grid)")
    return p


CONFIG_FLAGS = ("sample_rate", "n_fft", "win_length", "hop_length", "n_mels", "n_mfcc", "fmin",
                "fmax", "trim_silence", "normalize", "fixed_samples", "hubert_path", "hubert_layer",
                "smile_level")


def config_from_args(args: argparse.Namespace) -> ExtractionConfig:
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
                from .download import download_corpus

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
        from .download import DownloadError
        from .hubert import HubertUnavailable

        if isinstance(exc, (HubertUnavailable, DownloadError, ValueError)):
            print(f"{prog}: error: {exc}", file=sys.stderr)
            return 2
        if isinstance(exc, OSError):
            print(f"{prog}: error: {exc}", file=sys.stderr)
            return 1
        raise
    for name, info in summary.items():
        print(format_summary(folder_name, name, info))
        _print_failures(info)
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
