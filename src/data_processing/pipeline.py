"""The extraction pipeline behind run_data_processing: corpus table -> feature sets on disk.

MFCC and LogMel come from one STFT per file and openSMILE's sets (eGeMAPS, ComParE) from its
library, computed file by file in a pool of worker processes (workers.py, `_process_file`);
HuBERT runs in this process, batched. Every set goes through the same bookkeeping: `_begin_sets`
prepares the folders and finds the arrays an earlier run left (reused unless `overwrite`),
`_plan` lists what is left to compute, and `_finish_sets` writes metadata.csv / failures.csv and
the COMPLETE marker (see store.py) and returns the set's summary.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Iterable

import pandas as pd
import soundfile as sf
from tqdm import tqdm

from src.utils.io import save_npy

from . import store
from .audio import AudioError, condition, read_audio
from .config import FEATURE_TYPES, ExtractionConfig
from .features import check_features
from .hubert import HubertExtractor
from .speaker_encoder import require_encoder
from .workers import _init_worker, _mp_context, _one_blas_thread, _process_file, _warm_up

HUBERT_FILES_PER_BATCH = 16


class ExtractionError(RuntimeError):
    """Extraction finished but produced nothing usable, or failed files under strict mode.

    `summary` holds the per-feature summary of what was written (same as extract_dataset's).
    """

    def __init__(self, message: str, summary: dict | None = None):
        super().__init__(message)
        self.summary = summary or {}


# ------------------------------------------------------------------------------ main side
def _source_seconds(path: str) -> float:
    """Duration of an audio file from its header; NaN when it cannot be read."""
    try:
        info = sf.info(path)
        return info.frames / info.samplerate
    except Exception:  # noqa: BLE001 - unknown duration is not fatal for a reused array
        return float("nan")


def _progress_bar(total: int, desc: str, enabled: bool):
    """A tqdm bar over `total` files on stderr (disabled when not `enabled` or nothing to do)."""
    return tqdm(total=total, desc=desc, unit="file", disable=not enabled or total == 0,
                file=sys.stderr, smoothing=0.05, dynamic_ncols=True)


# ------------------------------------------------------------------ bookkeeping of the sets
def _begin_sets(corpus, config, names, features_root, dataset, overwrite):
    """Prepare the set folder of each feature in `names` (store.begin_set) and read the frame
    counts of the arrays an earlier run left there. Returns ({name: dir}, {name: {file_id:
    frames}})."""
    dirs = {name: store.feature_set_dir(features_root, dataset, name, config) for name in names}
    planned = corpus[["file_id", "path"]]
    frames: dict[str, dict[str, int]] = {}
    for name in names:
        reusable = store.begin_set(dirs[name], planned, overwrite)
        frames[name] = {}
        for file_id in sorted(reusable):
            n = store.array_frames(dirs[name] / f"{file_id}.npy")
            if n is not None:
                frames[name][file_id] = n
    return dirs, frames


def _plan(corpus, names, frames) -> tuple[list[tuple[str, str, tuple[str, ...]]], dict]:
    """Tasks (file_id, path, features still missing) for the files that lack an array of some
    feature, and {file_id: seconds} of the files whose arrays are all reused."""
    tasks = []
    seconds: dict[str, float] = {}
    for file_id, path in zip(corpus["file_id"], corpus["path"]):
        missing = tuple(name for name in names if file_id not in frames[name])
        if missing:
            tasks.append((file_id, path, missing))
        else:
            seconds[file_id] = _source_seconds(path)
    return tasks, seconds


def _metadata_rows(corpus: pd.DataFrame, frames: dict[str, int],
                   seconds: dict[str, float]) -> pd.DataFrame:
    """The corpus rows of the files that have an array, with their frame count and duration."""
    rows = corpus[corpus["file_id"].isin(frames.keys())].copy()
    rows["n_frames"] = rows["file_id"].map(frames).astype(int)
    rows["duration_s"] = rows["file_id"].map(seconds).astype(float).round(6)
    return rows


def _finish(set_dir, name, dataset, config, metadata, failures) -> None:
    """Complete the set, or, when no file was usable, only record why (no COMPLETE marker)."""
    if len(metadata):
        store.finish_set(set_dir, feature=name, dataset=dataset, config=config,
                         metadata=metadata, failures=failures)
    else:
        store.write_failures(set_dir, failures)


def _finish_sets(corpus, config, dataset, dirs, frames, seconds, failures, computed,
                 elapsed: float) -> dict[str, dict]:
    """Finish the set of every feature in `dirs`: the files of `failures` (file_id, reason)
    that have no array of the feature are its failures (a stale array of theirs is removed),
    the others its metadata. `computed` holds [files, audio seconds] computed in this call per
    feature. Returns extract_dataset's summary of each."""
    paths = dict(zip(corpus["file_id"], corpus["path"]))
    failure_frame = pd.DataFrame(
        [{"file_id": f, "path": paths[f], "reason": r} for f, r in failures],
        columns=store.FAILURE_COLUMNS)
    summary = {}
    for name, set_dir in dirs.items():
        failed_here = failure_frame[~failure_frame["file_id"].isin(list(frames[name]))]
        for file_id in failed_here["file_id"]:  # never leave an array of a failed file behind
            (set_dir / f"{file_id}.npy").unlink(missing_ok=True)
        failed_here = _add_corpus_failures(failed_here, corpus)
        metadata = _metadata_rows(corpus, frames[name], seconds)
        _finish(set_dir, name, dataset, config, metadata, failed_here)
        n_computed, audio_seconds = computed[name]
        summary[name] = {"n_ok": int(len(metadata)), "n_failed": int(len(failed_here)),
                         "dir": str(set_dir), "seconds": elapsed,
                         "audio_seconds": audio_seconds, "n_computed": n_computed,
                         "n_reused": int(len(metadata)) - n_computed,
                         "complete": bool(len(metadata))}
    return summary


def _add_corpus_failures(failures: pd.DataFrame, corpus: pd.DataFrame) -> pd.DataFrame:
    """`failures` plus the manifest rows the corpus reader refused (colliding file_ids,
    conflicting labels; see manifest._manifest_duplicates): they are failures of every set, so
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


def _collect(result, frames, seconds, failures, computed) -> None:
    """Record one `_process_file` result: its frame counts and duration, or its failure."""
    file_id, reason, counts, duration = result
    if reason is not None:
        failures.append((file_id, reason))
        return
    for name, n in counts.items():
        frames[name][file_id] = n
        computed[name][0] += 1
        computed[name][1] += duration
    seconds[file_id] = duration


# ------------------------------------------------------------------------------- the sets
def _extract_spectral_sets(corpus, config, names, features_root, dataset, workers, overwrite,
                           progress) -> dict[str, dict]:
    """MFCC / LogMel / openSMILE sets of `names`, file by file in `workers` processes (0 = in
    this process); the summary of each set."""
    start = time.perf_counter()
    dirs, frames = _begin_sets(corpus, config, names, features_root, dataset, overwrite)
    tasks, seconds = _plan(corpus, names, frames)

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

    elapsed = time.perf_counter() - start - warm_seconds
    return _finish_sets(corpus, config, dataset, dirs, frames, seconds, failures, computed,
                        elapsed)


def _extract_hubert_set(corpus, config, features_root, dataset, overwrite, progress,
                        device=None) -> dict:
    """The HuBERT set, in this process, HUBERT_FILES_PER_BATCH files per forward pass (a batch
    that fails is retried file by file to isolate the bad file); the set's summary."""
    start = time.perf_counter()
    extractor = HubertExtractor(config, device=device)  # raises HubertUnavailable early
    dirs, frames = _begin_sets(corpus, config, ["HuBERT"], features_root, dataset, overwrite)
    set_dir = dirs["HuBERT"]
    tasks, seconds = _plan(corpus, ["HuBERT"], frames)
    todo = [(file_id, path) for file_id, path, _ in tasks]

    failures = []
    computed = {"HuBERT": [0, 0.0]}  # files and audio seconds computed now

    def run(batch):
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
            _collect((file_id, None, {"HuBERT": array.shape[0]}, duration), frames, seconds,
                     failures, computed)

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

    summary = _finish_sets(corpus, config, dataset, dirs, frames, seconds, failures, computed,
                           time.perf_counter() - start)
    return summary["HuBERT"]


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
    cannot be loaded; EncoderUnavailable when GE2E is asked for without resemblyzer.
    """
    names = check_features(features, FEATURE_TYPES)
    if "GE2E" in names:
        require_encoder()
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
    per_file = [name for name in names if name != "HuBERT"]  # spectral, openSMILE, GE2E
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
