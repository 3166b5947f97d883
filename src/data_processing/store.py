"""On-disk feature sets: layout, writing helpers and loaders.

Layout (one folder per dataset, feature and settings hash)::

    data/features/<DATASET>/<FEATURE>/<hash>/
        <file_id>.npy     float32 (frames, dims), one per usable file ((1, dims) for openSMILE
                          functionals: one vector per utterance)
        metadata.csv      file_id,label,speaker,gender,n_frames,duration_s,path (+ corpus columns)
        config.json       {"feature", "extraction": ExtractionConfig.to_dict(), "hash",
                           "dataset", "n_files", "created"}
        failures.csv      file_id,path,reason
        planned.csv       file_id,path of every file a run was asked to extract (resume check)
        source.json       {"manifest": resolved path} (CSV manifest) or {"raw_dir": resolved
                          folder} of the corpus the set was extracted from; a manifest is
                          refused for a set made from another source unless --overwrite
        .lock             lock file: one extraction at a time per set (`lock_sets`)
        COMPLETE          written last, only once every array listed in metadata.csv loads; a
                          set without it is unfinished and never loaded

`hash` is `config.feature_hash(FEATURE)`, so settings that change a feature's values get a new
folder and sets made with different settings never mix. `duration_s` is the duration of the
source audio file (before resampling/trimming/fixed-length).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
from filelock import FileLock, Timeout

from src.utils.io import write_csv, write_json, write_text

from .config import FEATURE_TYPES, ExtractionConfig, is_utterance_level

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_FEATURES_ROOT = REPO_ROOT / "data" / "features"
COMPLETE = "COMPLETE"
METADATA_COLUMNS = ["file_id", "label", "speaker", "gender", "n_frames", "duration_s", "path"]
FAILURE_COLUMNS = ["file_id", "path", "reason"]
_STRING_COLUMNS = {"file_id": str, "label": str, "speaker": str, "gender": str, "path": str,
                   "dataset": str, "intensity": str}
HUBERT_FRAME_SECONDS = 320 / 16000


class FeatureSetNotFound(FileNotFoundError):
    """No complete feature set; the message says which command makes it."""


class SetSourceConflict(ValueError):
    """A set folder holds features of another corpus source (e.g. another manifest)."""


class IncompleteSet(OSError):
    """Arrays listed for a set are missing or unreadable, so it cannot be marked complete."""


LOCK_NAME = ".lock"
SOURCE_NAME = "source.json"


@dataclasses.dataclass
class FeatureSet:
    arrays: list[np.ndarray]       # arrays[i] belongs to metadata.iloc[i]
    metadata: pd.DataFrame
    config: ExtractionConfig
    path: Path
    feature: str

    def __len__(self) -> int:
        return len(self.arrays)


def canonical_feature(feature: str) -> str:
    lookup = {name.lower(): name for name in FEATURE_TYPES}
    key = str(feature).strip().lower()
    if key not in lookup:
        raise ValueError(f"unknown feature {feature!r}; expected one of {', '.join(FEATURE_TYPES)}")
    return lookup[key]


def feature_set_dir(features_root: str | os.PathLike, dataset: str, feature: str,
                    config: ExtractionConfig) -> Path:
    """<features_root>/<DATASET>/<FEATURE>/<config.feature_hash(FEATURE)>."""
    feature = canonical_feature(feature)
    return Path(features_root) / str(dataset).upper() / feature / config.feature_hash(feature)


def extraction_command(dataset: str, feature: str) -> str:
    command = (f"python -m src.data_processing.run_data_processing --dataset {dataset.upper()} "
               f"--features {feature}")
    if dataset.upper() not in ("EMODB", "RAVDESS"):
        command = (f"python -m src.data_processing.run_data_processing --dataset CSV "
                   f"--manifest <file.csv> --name {dataset.upper()} --features {feature}")
    return command


# ---------------------------------------------------------------------------- writing helpers
def npy_path(set_dir: Path, file_id: str) -> Path:
    return set_dir / f"{file_id}.npy"


def is_complete(set_dir: Path) -> bool:
    return (set_dir / COMPLETE).is_file()


@contextlib.contextmanager
def lock_sets(set_dirs: Iterable[Path]):
    """Hold the lock of every set in `set_dirs` (in sorted order, so two runs cannot deadlock)
    for the duration of the block. A set locked by another process is waited for, with one line
    on stderr saying so; the lock is released when the block ends or the process dies."""
    with contextlib.ExitStack() as stack:
        for set_dir in sorted({Path(d) for d in set_dirs}):
            set_dir.mkdir(parents=True, exist_ok=True)
            lock = FileLock(str(set_dir / LOCK_NAME))
            try:
                lock.acquire(timeout=0)
            except Timeout:
                print(f"waiting for feature set {set_dir}: another process is extracting it",
                      file=sys.stderr, flush=True)
                lock.acquire()
            stack.callback(lock.release)
        yield


def check_source(set_dir: Path, source: dict | None, overwrite: bool = False) -> None:
    """Refuse to extract into a set made from another corpus source when either source is a
    manifest (SetSourceConflict, one line), unless `overwrite`; then record `source` in
    source.json. Sets made before source.json existed are accepted. With `overwrite` and a
    changed source, the previous planned.csv is dropped."""
    if not source:
        return
    path = set_dir / SOURCE_NAME
    previous = None
    if path.is_file():
        try:
            previous = json.loads(path.read_text())
        except (OSError, ValueError):
            previous = None
    if previous and previous != source and ("manifest" in previous or "manifest" in source):
        if not overwrite:
            old = previous.get("manifest") or previous.get("raw_dir")
            new = source.get("manifest") or source.get("raw_dir")
            raise SetSourceConflict(
                f"{set_dir} holds features of {old}, not {new}; give this corpus its own "
                f"--name, or pass --overwrite to replace that set")
        (set_dir / "planned.csv").unlink(missing_ok=True)
    if previous != source:
        set_dir.mkdir(parents=True, exist_ok=True)
        write_json(path, source)


def begin_set(set_dir: Path, planned: pd.DataFrame, overwrite: bool = False) -> set[str]:
    """Prepare `set_dir` for a (re)run and return the file_ids whose arrays can be reused.

    Removes the COMPLETE marker (the set is unfinished until `finish_set`), leftover temporary
    files of an interrupted run, and arrays that were made from a different source path for the
    same file_id (per the previous planned.csv). With `overwrite`, nothing is reused.
    """
    set_dir.mkdir(parents=True, exist_ok=True)
    (set_dir / COMPLETE).unlink(missing_ok=True)
    for leftover in set_dir.glob(".*.tmp"):
        leftover.unlink(missing_ok=True)

    previous: dict[str, str] = {}
    planned_file = set_dir / "planned.csv"
    if planned_file.is_file():
        try:
            old = pd.read_csv(planned_file, dtype=str, keep_default_na=False)
            previous = dict(zip(old["file_id"], old["path"]))
        except (OSError, KeyError, ValueError, pd.errors.ParserError):
            previous = {}
    current = dict(zip(planned["file_id"], planned["path"]))
    merged = {**previous, **current}
    write_csv(planned_file, pd.DataFrame({"file_id": list(merged), "path": list(merged.values())}))

    reusable = set()
    for entry in os.scandir(set_dir):
        if not entry.name.endswith(".npy"):
            continue
        file_id = entry.name[:-4]
        if file_id not in current:
            continue
        if overwrite or (file_id in previous and previous[file_id] != current[file_id]):
            os.unlink(entry.path)
            continue
        reusable.add(file_id)
    return reusable


def array_frames(path: Path) -> int | None:
    """Frame count from a .npy header, or None when the file is unreadable."""
    try:
        return int(np.load(path, mmap_mode="r").shape[0])
    except (OSError, ValueError, IndexError, EOFError):
        return None


def write_failures(set_dir: Path, failures: pd.DataFrame) -> None:
    failures = failures.reindex(columns=FAILURE_COLUMNS)
    write_csv(set_dir / "failures.csv", failures.sort_values("file_id", kind="stable"))


def finish_set(set_dir: Path, *, feature: str, dataset: str, config: ExtractionConfig,
               metadata: pd.DataFrame, failures: pd.DataFrame) -> None:
    """Write metadata.csv, failures.csv, config.json, then the COMPLETE marker (last).

    Raises IncompleteSet (and writes no marker) when an array listed in `metadata` is missing,
    unreadable or has another frame count."""
    metadata = metadata.sort_values("file_id", kind="stable").reset_index(drop=True)
    bad = [f for f, n in zip(metadata["file_id"], metadata["n_frames"])
           if array_frames(npy_path(set_dir, f)) != int(n)]
    if bad:
        raise IncompleteSet(f"{set_dir}: {len(bad)} array(s) listed for the set are missing or "
                            f"unreadable (e.g. {bad[0]}.npy); the set is left unfinished: run "
                            f"the same command again")
    extra = [c for c in metadata.columns if c not in METADATA_COLUMNS]
    write_csv(set_dir / "metadata.csv", metadata[METADATA_COLUMNS + extra])
    write_failures(set_dir, failures)
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    write_json(set_dir / "config.json", {
        "feature": feature, "extraction": config.to_dict(), "hash": config.feature_hash(feature),
        "dataset": dataset, "n_files": int(len(metadata)), "created": created})
    os.sync()  # arrays are written without per-file fsync: flush them before marking complete
    write_text(set_dir / COMPLETE, json.dumps({"completed": created, "timestamp": time.time(),
                                               "n_files": int(len(metadata))}) + "\n")


# ------------------------------------------------------------------------------------ loading
def _completed_at(set_dir: Path) -> float:
    marker = set_dir / COMPLETE
    try:
        return float(json.loads(marker.read_text())["timestamp"])
    except (OSError, ValueError, KeyError, TypeError):
        return marker.stat().st_mtime


def list_feature_sets(dataset: str, feature: str,
                      features_root: str | os.PathLike | None = None) -> list[Path]:
    """Complete sets of `feature` for `dataset`, most recently completed first."""
    root = Path(features_root) if features_root is not None else DEFAULT_FEATURES_ROOT
    parent = root / str(dataset).upper() / canonical_feature(feature)
    if not parent.is_dir():
        return []
    sets = [p for p in parent.iterdir() if p.is_dir() and is_complete(p)]
    return sorted(sets, key=_completed_at, reverse=True)


def _find_set(dataset: str, feature: str, features_root, config_hash: str | None) -> Path:
    root = Path(features_root) if features_root is not None else DEFAULT_FEATURES_ROOT
    parent = root / str(dataset).upper() / feature
    command = extraction_command(dataset, feature)
    if config_hash is not None:
        candidate = parent / config_hash
        if is_complete(candidate):
            return candidate
        available = [p.name for p in list_feature_sets(dataset, feature, root)]
        raise FeatureSetNotFound(
            f"no complete {feature} feature set {config_hash} for {dataset.upper()} in {parent}"
            f" (complete sets there: {', '.join(available) or 'none'}). "
            f"Run: {command} (with the same extraction flags)")
    sets = list_feature_sets(dataset, feature, root)
    if not sets:
        raise FeatureSetNotFound(f"no complete {feature} features for {dataset.upper()} in "
                                 f"{parent}. Run: {command}")
    if len(sets) > 1:
        default = ExtractionConfig().feature_hash(feature)
        chosen = next((p for p in sets if p.name == default), sets[0])
        log.info("%s %s: %d complete feature sets (%s); using %s (%s); pick another with its "
                 "hash", dataset.upper(), feature, len(sets), ", ".join(p.name for p in sets),
                 chosen.name, "default settings" if chosen.name == default
                 else "the most recently completed")
        return chosen
    else:
        log.info("%s %s: using feature set %s", dataset.upper(), feature, sets[0])
    return sets[0]


def read_metadata(set_dir: Path) -> pd.DataFrame:
    metadata = pd.read_csv(set_dir / "metadata.csv", dtype=_STRING_COLUMNS, keep_default_na=False)
    metadata["n_frames"] = metadata["n_frames"].astype(int)
    metadata["duration_s"] = pd.to_numeric(metadata["duration_s"], errors="coerce")
    return metadata


def load_feature_set(dataset: str, feature: str,
                     features_root: str | os.PathLike | None = None,
                     config_hash: str | None = None) -> FeatureSet:
    """Load one complete feature set (arrays in metadata order).

    Without `config_hash` the complete set is used; when several exist, the one made with the
    default ExtractionConfig, else the most recently completed one (logged). Raises FeatureSetNotFound with the command that makes it.
    """
    feature = canonical_feature(feature)
    set_dir = _find_set(dataset, feature, features_root, config_hash)
    info = json.loads((set_dir / "config.json").read_text())
    config = ExtractionConfig.from_dict(info["extraction"])
    metadata = read_metadata(set_dir)
    arrays = []
    for file_id, n_frames in zip(metadata["file_id"], metadata["n_frames"]):
        try:
            array = np.load(set_dir / f"{file_id}.npy")
        except FileNotFoundError:
            missing = [f for f in metadata["file_id"] if not npy_path(set_dir, f).is_file()]
            raise FeatureSetNotFound(
                f"{npy_path(set_dir, file_id)} is missing ({len(missing)} of the "
                f"{len(metadata)} arrays listed in metadata.csv are); re-run the extraction: "
                f"{extraction_command(dataset, feature)} --overwrite") from None
        if array.shape[0] != n_frames:
            raise ValueError(f"{set_dir / (file_id + '.npy')} has {array.shape[0]} frames but "
                             f"metadata.csv says {n_frames}; re-run the extraction with --overwrite")
        arrays.append(array)
    return FeatureSet(arrays=arrays, metadata=metadata, config=config, path=set_dir, feature=feature)


def frame_seconds(feature: str, config: ExtractionConfig) -> float:
    """Time step between frames of `feature` under `config`."""
    if canonical_feature(feature) == "HuBERT":
        return HUBERT_FRAME_SECONDS
    return config.hop_length / config.sample_rate


def _check_alignment(sets: dict[str, FeatureSet]) -> None:
    steps = {name: frame_seconds(name, s.config) for name, s in sets.items()}
    if max(steps.values()) - min(steps.values()) > 1e-9:
        detail = ", ".join(f"{k} {v * 1000:.2f} ms" for k, v in steps.items())
        raise ValueError(f"cannot fuse streams with different frame steps ({detail}); extract "
                         f"them with the same hop (20 ms: --hop_length 320 at 16 kHz)")
    conditioning = {name: (s.config.trim_silence, s.config.trim_top_db if s.config.trim_silence else None,
                           s.config.fixed_samples / s.config.sample_rate)
                    for name, s in sets.items()}
    if len(set(conditioning.values())) > 1:
        raise ValueError(f"cannot fuse streams extracted with different trimming / fixed length "
                         f"settings: {conditioning}")


def load_fusion_set(dataset: str, streams: Iterable[str],
                    features_root: str | os.PathLike | None = None,
                    config_hashes: dict[str, str] | None = None
                    ) -> tuple[dict[str, list[np.ndarray]], pd.DataFrame, dict[str, ExtractionConfig]]:
    """Load several streams of the same files, frame-aligned.

    Keeps the file_ids present in every stream (order of the first stream), and trims each
    file's frame-level streams to their smallest frame count (utterance-level streams, openSMILE
    functionals, stay (1, dims) and are not aligned). This is valid because every stream is on the
    same centred grid (frame t at t x 20 ms with the default hop; HuBERT is padded to match, see
    src/data_processing/hubert.py), so frame t means the same instant in all streams; streams with
    different frame steps or trimming raise ValueError. Returns (stream -> arrays,
    metadata with updated n_frames, stream -> ExtractionConfig).
    """
    names = [canonical_feature(s) for s in streams]
    if not names:
        raise ValueError("no streams given")
    config_hashes = {canonical_feature(k): v for k, v in (config_hashes or {}).items()}
    sets = {name: load_feature_set(dataset, name, features_root, config_hashes.get(name))
            for name in names}
    framed = [name for name in names if not is_utterance_level(name, sets[name].config)]
    if len(framed) > 1:
        _check_alignment({name: sets[name] for name in framed})

    common = set(sets[names[0]].metadata["file_id"])
    for name in names[1:]:
        common &= set(sets[name].metadata["file_id"])
    for name in names:
        dropped = len(sets[name].metadata) - len(common)
        if dropped:
            log.warning("fusion %s: %d %s file(s) missing from another stream are left out",
                        dataset.upper(), dropped, name)

    first = sets[names[0]].metadata
    keep = first["file_id"].isin(common).to_numpy()
    metadata = first.loc[keep].reset_index(drop=True)
    index = {name: dict(zip(sets[name].metadata["file_id"], range(len(sets[name].metadata))))
             for name in names}
    arrays: dict[str, list[np.ndarray]] = {name: [] for name in names}
    n_frames = []
    for file_id in metadata["file_id"]:
        per_stream = {name: sets[name].arrays[index[name][file_id]] for name in names}
        counts = [per_stream[name].shape[0] for name in framed] or [1]
        n, longest = min(counts), max(counts)
        if longest - n > 2:
            log.warning("fusion %s: %s frame counts differ by %d; trimming to %d",
                        dataset.upper(), file_id, longest - n, n)
        for name in names:
            arrays[name].append(per_stream[name][:n] if name in framed else per_stream[name])
        n_frames.append(n)
    metadata["n_frames"] = np.asarray(n_frames, dtype=int)
    return arrays, metadata, {name: sets[name].config for name in names}
