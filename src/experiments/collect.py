"""Collect finished runs (results/<run-id>/metrics.json) into one frame, one row per run.

Runs and kinds
--------------
Every `<results_root>/*/metrics.json` is one row (the `source/` sub-reports of adapted runs are
not separate rows: their means are the `source_*` columns). `kind` is

    test        `--mode test` re-evaluations (run id ends in `-test`)
    cross-test  `--mode test-cross-corpus` (run id ends in `-on-<TARGET>`)
    train-lmmd  `--mode train-lmmd`: figures on the TARGET corpus, `source_*` on held-out folds
    train       everything else (in-corpus k-fold / LOSO training)

`setting` is the corpus the figures are measured on: `EMODB` for in-corpus kinds,
`EMODB->RAVDESS` for cross-corpus kinds (abbreviated `E->R` in the tables).

`config` identifies a configuration: the same flags apart from --random_seed and paths, so the
runs of one configuration with different seeds share it.
"""
from __future__ import annotations

import datetime
import hashlib
import json
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from src.training.config import ADAPTATION_ONLY, BOOKKEEPING, is_late_flag_at_default

#: Flags shown as columns (from metrics.json "flags"; top-level keys win where both exist).
KEY_FLAGS = ("data", "feature_type", "preset", "lr", "dropout", "filter_size", "dilation_size",
             "kernel_size", "stack_size", "batch_size", "epoch", "protocol", "val_policy",
             "use_dtpm", "use_attention", "block", "lmmd_weight", "da_method", "target_data")
EXTRA_FLAGS = ("mode", "fusion_streams", "split_fold", "max_folds", "random_seed", "head_units")
METRICS = ("war", "uar", "macro_f1", "macro_precision", "macro_recall")
DA_ONLY = tuple(k for k in KEY_FLAGS if k in ADAPTATION_ONLY)  # DA columns, blank for train
CROSS_KINDS = ("train-lmmd", "cross-test")
#: Flags that do not define a configuration (seeds are averaged over).
NOT_CONFIG = BOOKKEEPING | {"random_seed"}


class NoRuns(Exception):
    """No metrics.json matched the filters."""


def run_kind(run_id: str, mode: str | None, target: str | None) -> str:
    """The kind of a run (see the module docstring) from its id, mode and target corpus."""
    if run_id.endswith("-test"):
        return "test"
    if target and run_id.endswith(f"-on-{target}"):
        return "cross-test"
    if mode == "train-lmmd":
        return "train-lmmd"
    return "train"


def short_setting(setting: str) -> str:
    """'EMODB->RAVDESS' -> 'E->R', 'EMODB->RAVDESS (5 classes)' -> 'E->R (5 classes)';
    in-corpus settings unchanged."""
    if "->" not in setting:
        return setting
    source, target = setting.split("->", 1)
    suffix = target[target.index(" "):] if " " in target else ""
    return f"{source[:1]}->{target[:1]}{suffix}"


def config_key(flags: dict) -> str:
    """Hash of the flags that define a configuration; flags added later count only when set,
    so runs made before they existed share a key with new runs at their defaults."""
    items = sorted((k, json.dumps(v, sort_keys=True, default=str)) for k, v in flags.items()
                   if k not in NOT_CONFIG and not is_late_flag_at_default(k, v))
    return hashlib.sha1(json.dumps(items).encode()).hexdigest()[:8]


def _row(run_dir: Path, metrics: dict) -> dict:
    """One run's row: key flags, setting, metric means and stds, per-class recall, timings."""
    flags = metrics.get("flags") or {}
    run_id = run_dir.name
    target = metrics.get("target_data") or flags.get("target_data") or None
    kind = run_kind(run_id, flags.get("mode") or metrics.get("mode"), target)
    data = (metrics.get("data") or flags.get("data") or "").upper()
    row: dict[str, Any] = {"run_id": run_id, "kind": kind}
    for key in KEY_FLAGS + EXTRA_FLAGS:
        value = metrics.get(key) if key in ("data", "feature_type", "protocol", "val_policy",
                                            "target_data", "da_method") else None
        row[key] = value if value is not None else flags.get(key)
    row["data"] = data
    if kind in CROSS_KINDS:
        row["target_data"] = (target or "").upper()
        row["setting"] = f"{data}->{row['target_data']}"
        if flags.get("label_set"):  # a class subset is another task: never pooled with the rest
            row["setting"] += f" ({len(metrics.get('class_names') or [])} classes)"
        if kind == "cross-test" and flags.get("mode") != "train-lmmd":
            row["da_method"] = "none"  # a plain model evaluated on another corpus
    else:
        for key in DA_ONLY:
            row[key] = None
        row["setting"] = data
    row["n_folds"] = metrics.get("n_folds")
    row["n_folds_total"] = metrics.get("n_folds_total") or metrics.get("n_folds")  # older runs
    for key in METRICS:
        row[f"{key}_mean"] = metrics.get(f"{key}_mean")
        row[f"{key}_std"] = metrics.get(f"{key}_std")
    source = metrics.get("source") or {}
    for key in ("war", "uar", "macro_f1"):
        row[f"source_{key}_mean"] = source.get(f"{key}_mean")
    for name, value in (metrics.get("per_class_recall") or {}).items():
        row[f"recall_{name}"] = value
    row["seconds_per_epoch"] = metrics.get("seconds_per_epoch")
    row["train_seconds"] = metrics.get("train_seconds")
    row["peak_memory_mb"] = metrics.get("peak_memory_mb")
    row["finished"] = metrics.get("finished")
    row["config"] = config_key(flags)
    row["class_names"] = ",".join(metrics.get("class_names") or [])
    row["path"] = str(run_dir)
    return row


def collect_runs(results_root: str | Path, warn=print) -> pd.DataFrame:
    """One row per `<results_root>/*/metrics.json` (unreadable files are reported and skipped)."""
    rows = []
    for path in sorted(Path(results_root).glob("*/metrics.json")):
        try:
            metrics = json.loads(path.read_text())
            if not isinstance(metrics, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as err:
            warn(f"warning: skipped {path}: {err}")
            continue
        rows.append(_row(path.parent, metrics))
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    recall_cols = sorted(c for c in frame.columns if c.startswith("recall_"))
    front = [c for c in frame.columns if not c.startswith("recall_")
             and c not in ("seconds_per_epoch", "train_seconds", "peak_memory_mb", "finished",
                           "config", "class_names", "path")]
    back = ["seconds_per_epoch", "train_seconds", "peak_memory_mb", "finished", "config",
            "class_names", "path"]
    return frame[front + recall_cols + back]


def _parse_time(text: Any) -> datetime.datetime | None:
    """An ISO date or date-time as a naive datetime; None when it is not one."""
    if not isinstance(text, str) or not text:
        return None
    try:
        value = datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
    return value.replace(tzinfo=None)


def filter_runs(frame: pd.DataFrame, data: str | None = None, feature_type: str | None = None,
                since: str | None = None, kinds: Iterable[str] | None = None) -> pd.DataFrame:
    """Rows whose source corpus is `data`, feature is `feature_type`, finished on/after `since`
    (ISO date or date-time) and kind is in `kinds`."""
    if frame.empty:
        return frame
    keep = pd.Series(True, index=frame.index)
    if data:
        keep &= frame["data"].astype(str).str.upper() == data.upper()
    if feature_type:
        keep &= frame["feature_type"].astype(str).str.lower() == feature_type.lower()
    if since:
        start = _parse_time(since)
        if start is None:
            raise ValueError(f"--since {since!r}: expected a date like 2026-11-01")
        finished = frame["finished"].map(_parse_time)
        keep &= finished.map(lambda t: t is not None and t >= start)
    if kinds is not None:
        keep &= frame["kind"].isin(list(kinds))
    return frame[keep]


def sort_by_uar(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows by mean UAR descending (then WAR, then run id); runs without a UAR last."""
    return frame.sort_values(["uar_mean", "war_mean", "run_id"], ascending=[False, False, True],
                             na_position="last", kind="mergesort").reset_index(drop=True)


def drop_empty_recall(frame: pd.DataFrame) -> pd.DataFrame:
    """Without the per-class recall columns that no row fills (classes of other corpora)."""
    empty = [c for c in frame.columns if c.startswith("recall_") and frame[c].isna().all()]
    return frame.drop(columns=empty)

