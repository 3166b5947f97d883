"""Corpus readers: turn a folder of EMO-DB / RAVDESS files, or a CSV manifest, into one table.

Every reader returns a `pandas.DataFrame` with the same columns, one row per audio file, sorted by
`file_id`:

    file_id   unique string that names the file's feature arrays (`<file_id>.npy`)
    path      absolute path of the audio file
    label     emotion, canonical name from `CANONICAL_LABELS` (CSV labels that match no synonym
              are kept lower-cased as they are)
    speaker   speaker id as a string (EMO-DB "03", RAVDESS actor "01".."24", CSV "unknown" if
              absent)
    gender    "M", "F" or "" when unknown
    dataset   "EMODB", "RAVDESS" or "CSV"

RAVDESS rows also carry `intensity` ("normal"/"strong"), `statement` and `repetition` (1/2).

Files whose names do not follow the corpus's naming scheme are skipped, logged as a warning and
listed in `df.attrs["skipped"]` as (path, reason) pairs; `scan_corpus` returns them explicitly.
Manifest rows that collide with an earlier row (another file mapping to the same file_id, or the
same file with another label) are skipped too and also listed in `df.attrs["failures"]` as
(file_id, path, reason), which extraction writes to failures.csv. A manifest's table also carries
`df.attrs["manifest"]`, the manifest's resolved path. Manifests are read by manifest.py.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Iterable

import pandas as pd

from .corpus_error import CorpusError
from .manifest import _scan_manifest

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]

CANONICAL_LABELS = ("angry", "boredom", "calm", "disgust", "fear", "happy", "neutral", "sad",
                    "surprise")
DATASETS = ("EMODB", "RAVDESS", "CSV")
BASE_COLUMNS = ["file_id", "path", "label", "speaker", "gender", "dataset"]
RAVDESS_COLUMNS = ["intensity", "statement", "repetition"]
AUDIO_SUFFIXES = (".wav",)

# EMO-DB: SSTTTEV.wav -- speaker, text code, emotion letter, version.
EMODB_EMOTIONS = {"W": "angry", "L": "boredom", "E": "disgust", "A": "fear", "F": "happy",
                  "T": "sad", "N": "neutral"}
EMODB_GENDER = {**{s: "M" for s in ("03", "10", "11", "12", "15")},
                **{s: "F" for s in ("08", "09", "13", "14", "16")}}
_EMODB_RE = re.compile(r"^(\d{2})([a-z]\d{2})([A-Z])([a-z])$")

# RAVDESS: MM-VC-EE-II-SS-RR-AA.wav -- modality, vocal channel, emotion, intensity, statement,
# repetition, actor.
RAVDESS_EMOTIONS = {"01": "neutral", "02": "calm", "03": "happy", "04": "sad", "05": "angry",
                    "06": "fear", "07": "disgust", "08": "surprise"}
RAVDESS_INTENSITY = {"01": "normal", "02": "strong"}
_RAVDESS_RE = re.compile(r"^(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})$")


def canonical_dataset(dataset: str) -> str:
    """`dataset` upper-cased ("EMODB", "RAVDESS" or "CSV"); CorpusError for any other name."""
    name = str(dataset).strip().upper()
    if name not in DATASETS:
        raise CorpusError(f"unknown dataset {dataset!r}; valid datasets are {', '.join(DATASETS)}")
    return name


def resolve_raw_dir(dataset: str, raw_dir: str | os.PathLike | None = None) -> Path:
    """Find the folder that holds `dataset`'s audio.

    Looked up in order: `raw_dir` (the --raw_dir flag), `<repo>/data/raw/<DATASET>/`,
    `$SER_DATA_ROOT/<DATASET>/`. An explicit `raw_dir` that is missing is an error (no silent
    fallback to another copy).
    """
    name = canonical_dataset(dataset)
    repo_dir = REPO_ROOT / "data" / "raw" / name
    env_root = os.environ.get("SER_DATA_ROOT")
    env_dir = Path(env_root).expanduser() / name if env_root else None

    if raw_dir is not None:
        candidates = [Path(raw_dir).expanduser()]
    else:
        candidates = [repo_dir] + ([env_dir] if env_dir is not None else [])
    for candidate in candidates:
        if candidate.is_dir():
            _check_readable(candidate)
            return candidate.resolve()
        if raw_dir is not None and candidate.exists():
            raise CorpusError(f"--raw_dir {candidate} is not a folder")

    if raw_dir is not None:  # only the folder given was searched: name only that one
        raise CorpusError(
            f"cannot find the {name} corpus: --raw_dir {Path(raw_dir).expanduser()} does not "
            f"exist (only that folder is searched when --raw_dir is given; leave it out to "
            f"search the default places or to --download the corpus)")
    places = [
        "--raw_dir (not given)",
        f"{repo_dir}",
        f"$SER_DATA_ROOT/{name}/"
        + (f" = {env_dir}" if env_dir is not None else " (SER_DATA_ROOT not set)"),
    ]
    raise CorpusError(
        f"cannot find the {name} corpus; looked in: " + "; ".join(places)
        + f". Pass --raw_dir, set SER_DATA_ROOT, or add --download to fetch it into {repo_dir}")


def _check_readable(folder: Path) -> None:
    try:
        next(iter(os.scandir(folder)), None)
    except OSError as exc:
        raise CorpusError(f"cannot read folder {folder}: {exc.strerror or exc}") from None


def _find_audio(root: Path) -> list[Path]:
    """All audio files under `root` (recursive, sorted, hidden files ignored)."""
    found = []
    try:
        for dirpath, dirnames, filenames in os.walk(root, onerror=_raise_walk_error):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in filenames:
                if name.lower().endswith(AUDIO_SUFFIXES) and not name.startswith("."):
                    found.append(Path(dirpath) / name)
    except OSError as exc:
        raise CorpusError(
            f"cannot read folder {exc.filename or root}: {exc.strerror or exc}") from None
    return sorted(found)


def _raise_walk_error(exc: OSError) -> None:
    raise exc


def parse_emodb_name(stem: str) -> dict | None:
    """Fields of an EMO-DB file name stem like '03a01Fa', or None when it does not parse."""
    match = _EMODB_RE.match(stem)
    if not match or match.group(3) not in EMODB_EMOTIONS:
        return None
    speaker = match.group(1)
    return {"label": EMODB_EMOTIONS[match.group(3)], "speaker": speaker,
            "gender": EMODB_GENDER.get(speaker, "")}


def parse_ravdess_name(stem: str) -> dict | str:
    """Fields of a RAVDESS stem like '03-01-05-02-01-01-12', or a reason why it is skipped."""
    match = _RAVDESS_RE.match(stem)
    if not match:
        return "name does not match MM-VC-EE-II-SS-RR-AA"
    _modality, channel, emotion, intensity, statement, repetition, actor = match.groups()
    if channel != "01":
        return f"vocal channel {channel} is not speech (01)"
    if emotion not in RAVDESS_EMOTIONS:
        return f"unknown emotion code {emotion}"
    if intensity not in RAVDESS_INTENSITY:
        return f"unknown intensity code {intensity}"
    if statement not in ("01", "02") or repetition not in ("01", "02"):
        return "statement/repetition code out of range"
    if not 1 <= int(actor) <= 24:
        return f"actor {actor} out of range 01-24"
    return {"label": RAVDESS_EMOTIONS[emotion], "speaker": actor,
            "gender": "M" if int(actor) % 2 else "F",
            "intensity": RAVDESS_INTENSITY[intensity], "statement": int(statement),
            "repetition": int(repetition)}


def _scan_folder(name: str, root: Path) -> tuple[list[dict], list[tuple[str, str]]]:
    rows, skipped = [], []
    for path in _find_audio(root):
        stem = path.stem
        if name == "EMODB":
            fields = parse_emodb_name(stem)
            if fields is None:
                skipped.append((str(path), "name does not match EMO-DB SSTTTEV"))
                continue
        else:
            fields = parse_ravdess_name(stem)
            if isinstance(fields, str):
                skipped.append((str(path), fields))
                continue
        rows.append({"file_id": stem, "path": str(path.resolve()), **fields, "dataset": name})
    return _drop_duplicates(rows, skipped)


def _drop_duplicates(rows: list[dict], skipped: list[tuple[str, str]]):
    seen: dict[str, str] = {}
    unique = []
    for row in rows:
        if row["file_id"] in seen:
            skipped.append((row["path"],
                            f"duplicate file_id {row['file_id']} (also {seen[row['file_id']]})"))
            continue
        seen[row["file_id"]] = row["path"]
        unique.append(row)
    return unique, skipped


def scan_corpus(dataset: str, raw_dir: str | os.PathLike | None = None,
                manifest: str | os.PathLike | None = None
                ) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Like `load_corpus` but also returns the skipped files as (path, reason) pairs."""
    name = canonical_dataset(dataset)
    if name == "CSV":
        if manifest is None:
            raise CorpusError(
                "dataset CSV needs --manifest FILE (a CSV with columns path,label[,speaker])")
        rows, skipped, failures = _scan_manifest(manifest)
        source = str(manifest)
    else:
        root = resolve_raw_dir(name, raw_dir)
        rows, skipped = _scan_folder(name, root)
        source, failures = str(root), []
    columns = BASE_COLUMNS + (RAVDESS_COLUMNS if name == "RAVDESS" else [])
    frame = pd.DataFrame(rows, columns=columns)
    frame = frame.sort_values("file_id", kind="stable").reset_index(drop=True)
    if skipped:
        shown = "; ".join(f"{p} ({r})" for p, r in skipped[:20])
        more = f" and {len(skipped) - 20} more" if len(skipped) > 20 else ""
        log.warning("%s: skipped %d file(s): %s%s", name, len(skipped), shown, more)
    if frame.empty:
        raise CorpusError(f"no usable {name} audio files found in {source}")
    frame.attrs["skipped"] = list(skipped)
    frame.attrs["source"] = source
    frame.attrs["failures"] = list(failures)
    if name == "CSV":
        frame.attrs["manifest"] = str(Path(manifest).expanduser().resolve())
    return frame, skipped


def load_corpus(dataset: str, raw_dir: str | os.PathLike | None = None,
                manifest: str | os.PathLike | None = None) -> pd.DataFrame:
    """One row per audio file of `dataset` ("EMODB", "RAVDESS" or "CSV", any case).

    EMODB/RAVDESS: the audio folder is found by `resolve_raw_dir(dataset, raw_dir)` and searched
    recursively for .wav files. CSV: `manifest` is a CSV file with columns `path,label` and
    optional `speaker` (missing -> "unknown") and `gender`; relative paths are relative to the
    manifest's folder. The manifest is UTF-8 (a byte-order mark is fine) or UTF-16 with a
    byte-order mark; rows without a path or label are skipped, a row with more fields than the
    header is an error naming its line. Files listed in a manifest but missing on disk are kept
    here; extraction reports them as failures. Skipped files are in `df.attrs["skipped"]`.
    """
    frame, _ = scan_corpus(dataset, raw_dir=raw_dir, manifest=manifest)
    return frame


def shared_labels(labels_a: Iterable[str], labels_b: Iterable[str]) -> list[str]:
    """Sorted labels present in both collections (e.g. the six EMO-DB/RAVDESS emotions)."""
    return sorted(set(labels_a) & set(labels_b))
