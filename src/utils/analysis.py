"""Collect finished runs (results/<run-id>/metrics.json) into tables, plots and Markdown.

Used by `analyze_results.py` (everything) and `analyze_cross_corpus.py` (domain adaptation only).

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

"Best" always means highest mean UAR. For the domain-adaptation tables a method's figures come
from its best configuration (same flags apart from --random_seed and paths), averaged over that
configuration's runs (seeds); the std is over seeds when there are two or more, otherwise the
run's std over folds (the `std over` column says which). Metric values are fractions in CSV/Excel
(shown as percentages in Excel) and percentages with two decimals in the Markdown tables.
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import math
import sys
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from src.training.config import RunConfig, is_late_flag_at_default
from src.utils import io

REPO_ROOT = Path(__file__).resolve().parents[2]

#: Flags shown as columns (from metrics.json "flags"; top-level keys win where both exist).
KEY_FLAGS = ("data", "feature_type", "preset", "lr", "dropout", "filter_size", "dilation_size",
             "kernel_size", "stack_size", "batch_size", "epoch", "protocol", "val_policy",
             "use_dtpm", "use_attention", "block", "lmmd_weight", "da_method", "target_data")
EXTRA_FLAGS = ("mode", "fusion_streams", "split_fold", "max_folds", "random_seed", "head_units")
#: Flags that may be plotted as "UAR vs parameter" when they vary across the selected runs.
SWEEP_PARAMS = ("lr", "dropout", "filter_size", "dilation_size", "kernel_size", "stack_size",
                "batch_size", "epoch", "lmmd_weight", "feature_type", "fusion_streams", "preset",
                "block", "use_dtpm", "use_attention", "da_method", "protocol", "val_policy",
                "split_fold", "max_folds")
METRICS = ("war", "uar", "macro_f1", "macro_precision", "macro_recall")
DA_ONLY = ("lmmd_weight", "da_method", "target_data")
DA_METHODS = ("none", "mmd", "dann", "lmmd")
CROSS_KINDS = ("train-lmmd", "cross-test")
OTHER_CORPUS = {"EMODB": "RAVDESS", "RAVDESS": "EMODB"}
#: Flags that do not define a configuration (seeds are averaged over).
NOT_CONFIG = {"run_id", "random_seed", "results_root", "models_root", "features_root", "verbose",
              "threads", "overwrite", "visualize", "test_path", "audio", "output"}
NOT_RUN = "not run"
HIGHLIGHT_FILL = "FFF2CC"


class NoRuns(Exception):
    """No metrics.json matched the filters."""


# --------------------------------------------------------------------------- collecting

def run_kind(run_id: str, mode: str | None, target: str | None) -> str:
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
    return frame.sort_values(["uar_mean", "war_mean", "run_id"], ascending=[False, False, True],
                             na_position="last", kind="mergesort").reset_index(drop=True)


def _drop_empty_recall(frame: pd.DataFrame) -> pd.DataFrame:
    empty = [c for c in frame.columns if c.startswith("recall_") and frame[c].isna().all()]
    return frame.drop(columns=empty)


# --------------------------------------------------------------------------- formatting

def pct(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{100.0 * float(value):.{digits}f}"


def pct_pm(mean: Any, std: Any = None) -> str:
    text = pct(mean)
    if text and std is not None and not (isinstance(std, float) and math.isnan(std)):
        text += f" ± {pct(std)}"
    return text


def _folds(row: pd.Series) -> str:
    n = row.get("n_folds")
    return "" if n is None or pd.isna(n) else str(int(n))


def _metric(row: pd.Series, key: str) -> str:
    """'mean ± std' in percent; the std only when the run has two or more folds."""
    n = row.get("n_folds")
    std = row.get(f"{key}_std") if n is not None and pd.notna(n) and int(n) > 1 else None
    return pct_pm(row.get(f"{key}_mean"), std)


def _num(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{float(value):.{digits}f}"


def _markdown(frame: pd.DataFrame) -> str:
    from src.utils.reports import markdown_table

    return markdown_table(frame, index=False)


def _best(frame: pd.DataFrame) -> pd.Series | None:
    frame = frame[frame["uar_mean"].notna()] if not frame.empty else frame
    if frame.empty:
        return None
    return sort_by_uar(frame).iloc[0]


def _setting_order(frame: pd.DataFrame, in_corpus: bool) -> list[str]:
    canonical = ["EMODB", "RAVDESS"] if in_corpus else ["EMODB->RAVDESS", "RAVDESS->EMODB"]
    kinds = ("train",) if in_corpus else CROSS_KINDS
    present = sorted(set(frame.loc[frame["kind"].isin(kinds), "setting"])) if not frame.empty \
        else []
    return canonical + [s for s in present if s not in canonical]


# --------------------------------------------------------------------------- tables

def overall_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Best run of each setting: EMODB, RAVDESS (in-corpus training) and E->R, R->E
    (train-lmmd or cross-test)."""
    rows = []
    for in_corpus in (True, False):
        kinds = ("train",) if in_corpus else CROSS_KINDS
        for setting in _setting_order(frame, in_corpus):
            subset = frame[frame["kind"].isin(kinds) & (frame["setting"] == setting)] \
                if not frame.empty else frame
            best = _best(subset)
            name = short_setting(setting)
            if best is None:
                rows.append({"setting": name, "run": NOT_RUN})
                continue
            rows.append({"setting": name, "run": best["run_id"], "kind": best["kind"],
                         "feature": best["feature_type"],
                         "DA": best["da_method"] if not in_corpus else "",
                         "folds": _folds(best), "accuracy (WAR) %": _metric(best, "war"),
                         "UAR %": _metric(best, "uar"), "macro-F1 %": _metric(best, "macro_f1")})
    columns = ["setting", "run", "kind", "feature", "DA", "folds", "accuracy (WAR) %", "UAR %",
               "macro-F1 %"]
    return pd.DataFrame(rows).reindex(columns=columns).fillna("")


def per_class_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Recall (%) per class of the best run of each setting (rows = classes)."""
    columns: dict[str, dict[str, str]] = {}
    for in_corpus in (True, False):
        kinds = ("train",) if in_corpus else CROSS_KINDS
        for setting in _setting_order(frame, in_corpus):
            subset = frame[frame["kind"].isin(kinds) & (frame["setting"] == setting)] \
                if not frame.empty else frame
            best = _best(subset)
            if best is None:
                continue
            columns[short_setting(setting)] = {
                c[len("recall_"):]: pct(best[c]) for c in best.index
                if c.startswith("recall_") and pd.notna(best[c])}
    if not columns:
        return pd.DataFrame({"class": [], "recall %": []})
    classes = sorted({c for values in columns.values() for c in values})
    table = pd.DataFrame({"class": classes})
    for name, values in columns.items():
        table[name] = [values.get(c, "") for c in classes]
    return table


def method_summary(frame: pd.DataFrame, aggregate: str = "best-config") -> pd.DataFrame:
    """Per direction x DA method (train-lmmd runs): mean (and std) over the runs of the best
    configuration (`best-config`) or of all runs (`all`). Numeric fractions, one row each."""
    runs = frame[frame["kind"] == "train-lmmd"] if not frame.empty else frame
    rows = []
    for setting in sorted(set(runs["setting"])) if not runs.empty else []:
        for method in list(DA_METHODS) + sorted(set(runs["da_method"].dropna()) -
                                                set(DA_METHODS)):
            group = runs[(runs["setting"] == setting) & (runs["da_method"] == method)]
            group = group[group["uar_mean"].notna()]
            if group.empty:
                continue
            if aggregate == "best-config":
                means = group.groupby("config")["uar_mean"].mean()
                best_config = means.sort_values(ascending=False, kind="mergesort").index[0]
                group = group[group["config"] == best_config]
            folds = _float(group["n_folds"].iloc[0])
            std_over = "seeds" if len(group) > 1 else "folds" if folds > 1 else "-"
            row: dict[str, Any] = {"setting": setting, "direction": short_setting(setting),
                                   "method": method, "n_runs": len(group), "std_over": std_over,
                                   "runs": ",".join(sorted(group["run_id"]))}
            for key in METRICS:
                values = group[f"{key}_mean"].astype(float)
                row[f"{key}_mean"] = float(values.mean())
                row[f"{key}_std"] = (float(values.std(ddof=0)) if std_over == "seeds"
                                     else _float(group[f"{key}_std"].iloc[0])
                                     if std_over == "folds" else float("nan"))
            for column in [c for c in group.columns if c.startswith("recall_")]:
                values = group[column].astype(float)
                row[column] = float(values.mean()) if values.notna().any() else float("nan")
            rows.append(row)
    return pd.DataFrame(rows)


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def da_table(summary: pd.DataFrame, directions: Sequence[str] | None = None) -> pd.DataFrame:
    """Markdown-ready: direction, method, runs, accuracy, F1, precision, recall (mean ± std)."""
    directions = list(directions or ["EMODB->RAVDESS", "RAVDESS->EMODB"])
    if not summary.empty:
        directions += [s for s in sorted(set(summary["setting"])) if s not in directions]
    rows = []
    for setting in directions:
        for method in DA_METHODS:
            match = summary[(summary["setting"] == setting) & (summary["method"] == method)] \
                if not summary.empty else summary
            base = {"direction": short_setting(setting), "method": method}
            if match.empty:
                rows.append({**base, "runs": NOT_RUN})
                continue
            r = match.iloc[0]
            std_over = f" (std over {r['std_over']})" if r["std_over"] != "-" else ""
            rows.append({**base, "runs": f"{int(r['n_runs'])}{std_over}",
                         "accuracy (WAR) %": pct_pm(r["war_mean"], r["war_std"]),
                         "UAR %": pct_pm(r["uar_mean"], r["uar_std"]),
                         "macro-F1 %": pct_pm(r["macro_f1_mean"], r["macro_f1_std"]),
                         "precision %": pct_pm(r["macro_precision_mean"],
                                               r["macro_precision_std"]),
                         "recall %": pct_pm(r["macro_recall_mean"], r["macro_recall_std"])})
    columns = ["direction", "method", "runs", "accuracy (WAR) %", "UAR %", "macro-F1 %",
               "precision %", "recall %"]
    return pd.DataFrame(rows).reindex(columns=columns).fillna("")


def efficiency_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Best run of each setting x feature: seconds per epoch, training time, peak memory."""
    rows = []
    for in_corpus in (True, False):
        kinds = ("train",) if in_corpus else ("train-lmmd",)
        subset = frame[frame["kind"].isin(kinds)] if not frame.empty else frame
        for (setting, feature), group in (subset.groupby(["setting", "feature_type"])
                                          if not subset.empty else []):
            best = _best(group)
            if best is None:
                continue
            rows.append({"setting": short_setting(setting), "feature": feature,
                         "run": best["run_id"], "preset": best["preset"],
                         "folds": _folds(best), "s/epoch": _num(best["seconds_per_epoch"], 2),
                         "training time (min)": _num(_float(best["train_seconds"]) / 60.0, 1),
                         "peak memory (MB)": _num(best["peak_memory_mb"], 0)})
    columns = ["setting", "feature", "run", "preset", "folds", "s/epoch", "training time (min)",
               "peak memory (MB)"]
    return pd.DataFrame(rows).reindex(columns=columns).fillna("")


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.lower() in ("1", "true", "yes", "on")
    return bool(value) if value is not None and not (isinstance(value, float)
                                                      and math.isnan(value)) else False


def _head(value: Any) -> tuple[int, ...]:
    """The head Dense sizes of a run (() = softmax on the pooled features); runs from before
    --head_units existed had the default head."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return RunConfig().head_sizes()
    return RunConfig(head_units=str(value)).head_sizes()


def _streams(value: Any) -> str:
    return ",".join(s.strip() for s in str(value or "").split(",") if s.strip())


def ablation_tables(frame: pd.DataFrame, corpus: str | None = None,
                    feature: str | None = None) -> tuple[str, pd.DataFrame, pd.DataFrame]:
    """Feature ablation (full model) and component ablation (one feature) on `corpus`; rows
    without a matching run say "not run"."""
    train = frame[frame["kind"] == "train"] if not frame.empty else frame
    if not corpus:
        corpora = list(train["data"].value_counts().index) if not train.empty else []
        corpus = "EMODB" if "EMODB" in corpora or not corpora else corpora[0]
    corpus = corpus.upper()
    feature = feature or "MFCC"
    train = train[train["data"] == corpus] if not train.empty else train
    if not train.empty:  # (map, not ==: pandas compares a tuple element by element)
        heads = train["head_units"].map(_head)
        default_head = RunConfig().head_sizes()
        pooled_head = train[heads.map(lambda h: h == ())]
        train = train[heads.map(lambda h: h == default_head)]
    else:
        pooled_head = train
    full = train[train["use_dtpm"].map(_truthy) & train["use_attention"].map(_truthy)] \
        if not train.empty else train

    def row(name: str, subset: pd.DataFrame, evaluated: str) -> dict:
        best = _best(subset) if not subset.empty else None
        if best is None:
            return {"row": name, "run": NOT_RUN}
        return {"row": name, "run": best["run_id"], "evaluated on": evaluated,
                "folds": _folds(best), "accuracy (WAR) %": _metric(best, "war"),
                "UAR %": _metric(best, "uar"), "macro-F1 %": _metric(best, "macro_f1")}

    def select(subset, feature_type, streams=None):
        if subset.empty:
            return subset
        keep = subset["feature_type"] == feature_type
        if streams is not None:
            keep &= subset["fusion_streams"].map(_streams) == streams
        return subset[keep]

    feature_rows = [
        row("MFCC", select(full, "MFCC"), corpus),
        row("LogMel", select(full, "LogMel"), corpus),
        row("HuBERT", select(full, "HuBERT"), corpus),
        row("FUSION (MFCC + LogMel)", select(full, "FUSION", "MFCC,LogMel"), corpus),
        row("FUSION (MFCC + LogMel + HuBERT)", select(full, "FUSION", "MFCC,LogMel,HuBERT"),
            corpus),
    ]
    by_feature = select(train, feature)

    def parts(subset, dtpm, attention):
        if subset.empty:
            return subset
        return subset[(subset["use_dtpm"].map(_truthy) == dtpm)
                      & (subset["use_attention"].map(_truthy) == attention)]

    cross = frame[frame["kind"].isin(CROSS_KINDS) & (frame["data"] == corpus)
                  & (frame["feature_type"] == feature)] if not frame.empty else frame
    cross_full = parts(cross, True, True)
    target = ""
    if not cross_full.empty:
        target = sorted(set(cross_full["target_data"]))[0]
        cross_full = cross_full[cross_full["target_data"] == target]
    target = target or OTHER_CORPUS.get(corpus, "")
    direction = f"{corpus}->{target or 'target'}"
    lmmd = cross_full[(cross_full["kind"] == "train-lmmd") & (cross_full["da_method"] == "lmmd")] \
        if not cross_full.empty else cross_full
    no_da = cross_full[cross_full["da_method"] == "none"] if not cross_full.empty else cross_full
    component_rows = [
        row("TCN only", parts(by_feature, False, False), corpus),
        row("TCN + DTPM", parts(by_feature, True, False), corpus),
        row("TCN + DTPM + attention", parts(by_feature, True, True), corpus),
        row("TCN only, softmax on the pooled features (TIM-Net)",
            parts(select(pooled_head, feature), False, False), corpus),
        row("TCN + DTPM + attention, softmax on the pooled features",
            parts(select(pooled_head, feature), True, True), corpus),
        row(f"full model, no adaptation ({short_setting(direction)})", no_da,
            f"{target or 'target'} (target)"),
        row(f"+ LMMD ({short_setting(direction)})", lmmd, f"{target or 'target'} (target)"),
    ]
    columns = ["row", "run", "evaluated on", "folds", "accuracy (WAR) %", "UAR %", "macro-F1 %"]
    return (corpus, pd.DataFrame(feature_rows).reindex(columns=columns).fillna(""),
            pd.DataFrame(component_rows).reindex(columns=columns).fillna(""))


def tables_markdown(frame: pd.DataFrame, filters: str, corpus: str | None = None,
                    feature: str | None = None) -> str:
    corpus, features, components = ablation_tables(frame, corpus, feature)
    sections = [
        "# Results tables",
        f"Generated {datetime.datetime.now().isoformat(timespec='seconds')} from {len(frame)} "
        f"runs ({filters or 'no filters'}). Percentages; mean ± std over folds unless noted. "
        "\"Best\" = highest mean UAR; E->R = trained on EMODB, evaluated on RAVDESS.",
        "## Overall comparison (best run of each setting)",
        _markdown(overall_table(frame)),
        "## Per-class recall (%) of the best run of each setting",
        _markdown(per_class_table(frame)),
        "## Domain adaptation effectiveness (train-lmmd runs)",
        "Best configuration of each method; mean ± std over its seeds (or over folds for a "
        "single run). Precision and recall are macro averages.",
        _markdown(da_table(method_summary(frame))),
        "## Computational efficiency (best run of each setting and feature)",
        _markdown(efficiency_table(frame)),
        f"## Ablation: features ({corpus}, full model: TCN + DTPM + attention)",
        _markdown(features),
        f"## Ablation: components ({corpus}, {feature or 'MFCC'})",
        _markdown(components),
    ]
    return "\n\n".join(sections) + "\n"


# --------------------------------------------------------------------------- workbook

def _sheet_name(text: str, used: set[str]) -> str:
    name = "".join("_" if ch in '[]:*?/\\' else ch for ch in text)[:31] or "sheet"
    base, k = name, 2
    while name.lower() in used:
        suffix = f"~{k}"
        name = base[:31 - len(suffix)] + suffix
        k += 1
    used.add(name.lower())
    return name


def write_summary_workbook(path: Path, frame: pd.DataFrame) -> None:
    """`summary` sheet (all runs, UAR descending, best row highlighted) and one sheet per
    setting x feature pair (same layout)."""
    from openpyxl.styles import Font, PatternFill

    sheets: list[tuple[str, pd.DataFrame]] = [("summary", frame)]
    used = {"summary"}
    for (setting, feature), group in frame.groupby(["setting", "feature_type"], sort=True,
                                                    dropna=False):
        label = f"{setting.replace('->', '-to-')} {feature}"
        sheets.append((_sheet_name(label, used), sort_by_uar(_drop_empty_recall(group))))
    fraction_cols = {c for c in frame.columns
                     if c.startswith("recall_") or c.endswith("_mean") or c.endswith("_std")}
    with io.atomic_path(path, suffix=".xlsx") as tmp:
        with pd.ExcelWriter(tmp, engine="openpyxl") as writer:
            for name, table in sheets:
                table.to_excel(writer, sheet_name=name, index=False)
                sheet = writer.sheets[name]
                sheet.freeze_panes = "C2"
                for col, column in enumerate(table.columns, start=1):
                    letter = sheet.cell(row=1, column=col).column_letter
                    sheet.column_dimensions[letter].width = min(
                        40, max(9, len(str(column)) + 2,
                                *(len(str(v)) + 2 for v in table[column].head(50))))
                    if column in fraction_cols:
                        for r in range(2, len(table) + 2):
                            sheet.cell(row=r, column=col).number_format = "0.00%"
                    sheet.cell(row=1, column=col).font = Font(bold=True)
                if len(table) and pd.notna(table["uar_mean"].iloc[0]):
                    fill = PatternFill("solid", fgColor=HIGHLIGHT_FILL)
                    for col in range(1, len(table.columns) + 1):
                        cell = sheet.cell(row=2, column=col)
                        cell.font = Font(bold=True)
                        cell.fill = fill


# --------------------------------------------------------------------------- plots

def plot_params(frame: pd.DataFrame, out: Path) -> list[Path]:
    """UAR vs every swept parameter that varies across the in-corpus training runs (all runs
    when there are none)."""
    from src.utils.plots import plot_metric_vs_param

    runs = frame[frame["kind"] == "train"]
    if runs.empty:
        runs = frame
    written = []
    for param in SWEEP_PARAMS:
        if param not in runs.columns:
            continue
        values = runs[[param, "uar_mean"]].dropna()
        if values.empty or values[param].astype(str).nunique() < 2:
            continue
        table = values.copy()
        if table[param].map(lambda v: isinstance(v, bool)).all():
            table[param] = table[param].map(lambda v: "true" if v else "false")
        elif table[param].map(lambda v: isinstance(v, (int, float))).all():
            table[param] = table[param].astype(float)
        else:
            table[param] = table[param].astype(str)
        table["UAR"] = table["uar_mean"].astype(float)
        written.append(plot_metric_vs_param(table, param, "UAR", out / f"uar_vs_{param}.png",
                                            title=f"UAR vs {param} ({len(table)} runs)"))
    return written


def recall_frame(rows: pd.DataFrame, labels: Sequence[str]) -> pd.DataFrame:
    columns = {}
    recall_cols = [c for c in rows.columns if c.startswith("recall_")]
    for label, (_, r) in zip(labels, rows.iterrows()):
        columns[label] = {c[len("recall_"):]: r[c] for c in recall_cols if pd.notna(r[c])}
    return pd.DataFrame(columns)


def confusion_from_predictions(run_dir: Path) -> tuple[np.ndarray, list[str]]:
    """Pooled confusion (all folds) from predictions.csv, classes from metrics.json."""
    from sklearn.metrics import confusion_matrix

    names = json.loads((run_dir / "metrics.json").read_text()).get("class_names") or []
    table = pd.read_csv(run_dir / "predictions.csv")
    if not names:
        names = sorted(set(table["true"].astype(str)) | set(table["pred"].astype(str)))
    cm = confusion_matrix(table["true"].astype(str), table["pred"].astype(str), labels=names)
    return cm, list(names)


def write_plots(frame: pd.DataFrame, out: Path, top: int = 5, warn=print) -> list[Path]:
    from src.utils.plots import plot_confusion_matrix, plot_per_class_recall

    written = plot_params(frame, out)
    best_rows = frame[frame["uar_mean"].notna()].head(top)
    recall = recall_frame(best_rows, list(best_rows["run_id"]))
    if not recall.empty:
        written.append(plot_per_class_recall(recall, out / "per_class_recall_top.png",
                                             title=f"per-class recall, top {len(best_rows)} "
                                                   f"runs by UAR"))
    if not best_rows.empty:
        best = best_rows.iloc[0]
        run_dir = Path(best["path"])
        try:
            cm, names = confusion_from_predictions(run_dir)
            written.append(plot_confusion_matrix(cm, names, out / "confusion_best.png",
                                                 title=f"{best['run_id']} (best UAR, all "
                                                       f"folds)"))
        except (OSError, ValueError, KeyError) as err:
            warn(f"warning: no confusion matrix for {best['run_id']}: {err}")
    return written


def plot_method_bars(summary: pd.DataFrame, path: Path) -> Path:
    """Grouped bars: one group per direction, one bar per DA method; UAR and WAR panels with
    std error bars."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    directions = list(dict.fromkeys(summary["direction"]))
    methods = [m for m in DA_METHODS if m in set(summary["method"])] + sorted(
        set(summary["method"]) - set(DA_METHODS))
    fig = Figure(figsize=(max(6.0, 2.2 * len(directions) + 3.0), 4.2), dpi=120)
    FigureCanvasAgg(fig)
    width = 0.8 / max(1, len(methods))
    x = np.arange(len(directions))
    for panel, key in enumerate(("uar", "war")):
        ax = fig.add_subplot(1, 2, panel + 1)
        for i, method in enumerate(methods):
            sub = summary[summary["method"] == method].set_index("direction")
            means = [100 * sub.loc[d, f"{key}_mean"] if d in sub.index else np.nan
                     for d in directions]
            stds = [100 * sub.loc[d, f"{key}_std"] if d in sub.index else np.nan
                    for d in directions]
            ax.bar(x - 0.4 + width * (i + 0.5), np.nan_to_num(means), width,
                   yerr=np.nan_to_num(stds), capsize=3, label=method, color=f"C{i}")
        ax.set_xticks(x, directions)
        ax.set_ylabel(f"{key.upper()} %")
        ax.set_ylim(0, 100)
        ax.grid(True, axis="y", alpha=0.3)
        ax.set_title(f"{key.upper()} on the target corpus")
        if panel == 1:
            ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    with io.atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    fig.clear()
    return path


# --------------------------------------------------------------------------- commands

def build_parser(prog: str, description: str, cross: bool = False) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--results_root", default=str(REPO_ROOT / "results"))
    p.add_argument("--data", default=None, help="source corpus (e.g. EMODB)")
    p.add_argument("--feature_type", default=None)
    p.add_argument("--since", default=None, help="runs finished on or after this date "
                                                 "(2026-11-01 or 2026-11-01T12:00)")
    p.add_argument("--out", default=None, help="output folder (default <results_root>/analysis)")
    if cross:
        p.add_argument("--aggregate", choices=("best-config", "all"), default="best-config",
                       help="per method: runs of its best configuration (default) or all runs")
    else:
        p.add_argument("--kind", default=None,
                       help="comma list of kinds to keep: train,test,train-lmmd,cross-test")
        p.add_argument("--top", type=int, default=5, help="runs in the per-class recall plot")
    return p


def _filter_text(args) -> str:
    parts = [f"--{k} {getattr(args, k)}" for k in ("data", "feature_type", "since", "kind")
             if getattr(args, k, None)]
    return " ".join(parts)


def _select(args, kinds=None) -> pd.DataFrame:
    frame = collect_runs(args.results_root, warn=lambda m: print(m, file=sys.stderr))
    frame = filter_runs(frame, args.data, args.feature_type, args.since, kinds)
    if frame.empty:
        raise NoRuns()
    return sort_by_uar(_drop_empty_recall(frame))


def _no_runs(args, what: str, hint: str) -> int:
    filters = _filter_text(args)
    print(f"{args.results_root} holds no {what}"
          f"{' matching ' + filters if filters else ''}; {hint}", file=sys.stderr)
    return 1


def main_results(argv: Sequence[str] | None = None) -> int:
    args = build_parser("analyze_results.py",
                        "Collect every results/<run>/metrics.json into one table, an Excel "
                        "summary, plots and Markdown tables.").parse_args(argv)
    kinds = [k.strip() for k in args.kind.split(",") if k.strip()] if args.kind else None
    try:
        frame = _select(args, kinds)
    except NoRuns:
        return _no_runs(args, "finished runs", "run training first")
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path(args.results_root) / "analysis"
    out.mkdir(parents=True, exist_ok=True)
    io.write_csv(out / "summary.csv", frame)
    write_summary_workbook(out / "summary.xlsx", frame)
    plots = write_plots(frame, out / "plots", args.top,
                        warn=lambda m: print(m, file=sys.stderr))
    markdown = tables_markdown(frame, _filter_text(args), args.data, args.feature_type)
    io.write_text(out / "tables.md", markdown)
    best = frame.iloc[0]
    print(f"{len(frame)} runs; best UAR {pct(best['uar_mean'])}% ({best['run_id']}, "
          f"{best['kind']}, {best['setting']} {best['feature_type']})")
    print(_markdown(overall_table(frame)))
    print(f"wrote {out / 'summary.xlsx'}, {out / 'summary.csv'}, {out / 'tables.md'} and "
          f"{len(plots)} plots in {out / 'plots'}")
    return 0


def cross_corpus_markdown(summary: pd.DataFrame, filters: str, aggregate: str) -> str:
    how = ("best configuration of each method, mean ± std over its seeds (over folds for a "
           "single run)" if aggregate == "best-config" else
           "mean ± std over all runs of each method (over folds for a single run)")
    sections = ["# Cross-corpus adaptation",
                f"Generated {datetime.datetime.now().isoformat(timespec='seconds')} "
                f"({filters or 'no filters'}); train-lmmd runs, figures on the target corpus, "
                f"{how}. Percentages.",
                "## Methods per direction", _markdown(da_table(summary))]
    for setting in sorted(set(summary["setting"])):
        table = recall_before_after(summary, setting)
        if table is None:
            continue
        sections += [f"## Per-class recall (%) {short_setting(setting)}: before (none) and "
                     f"after (lmmd) adaptation",
                     _markdown(table.map(pct).rename_axis("class").reset_index())]
    return "\n\n".join(sections) + "\n"


def recall_before_after(summary: pd.DataFrame, setting: str) -> pd.DataFrame | None:
    rows = summary[(summary["setting"] == setting) & summary["method"].isin(["none", "lmmd"])]
    if rows.empty:
        return None
    labels = [f"{m}" for m in rows["method"]]
    table = recall_frame(rows, labels)
    table = table.reindex(columns=[c for c in ("none", "lmmd") if c in table.columns])
    return None if table.empty else table.sort_index()


def main_cross_corpus(argv: Sequence[str] | None = None) -> int:
    args = build_parser("analyze_cross_corpus.py",
                        "Compare domain-adaptation methods (none/mmd/dann/lmmd) per direction "
                        "over the train-lmmd runs.", cross=True).parse_args(argv)
    try:
        frame = _select(args, kinds=("train-lmmd",))
    except NoRuns:
        return _no_runs(args, "finished train-lmmd runs",
                        "run `python -m src.training.main --mode train-lmmd` first")
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path(args.results_root) / "analysis"
    out.mkdir(parents=True, exist_ok=True)
    summary = method_summary(frame, args.aggregate)
    io.write_csv(out / "cross_corpus.csv", summary)
    plots = [plot_method_bars(summary, out / "plots" / "cross_corpus_methods.png")]
    from src.utils.plots import plot_per_class_recall

    for setting in sorted(set(summary["setting"])):
        table = recall_before_after(summary, setting)
        if table is not None:
            name = setting.replace("->", "-to-")
            plots.append(plot_per_class_recall(
                table, out / "plots" / f"cross_corpus_recall_{name}.png",
                title=f"{short_setting(setting)}: per-class recall before (none) / after "
                      f"(lmmd)"))
    markdown = cross_corpus_markdown(summary, _filter_text(args), args.aggregate)
    io.write_text(out / "cross_corpus.md", markdown)
    print(f"{len(frame)} train-lmmd runs")
    print(_markdown(da_table(summary)))
    print(f"wrote {out / 'cross_corpus.csv'}, {out / 'cross_corpus.md'} and {len(plots)} plots "
          f"in {out / 'plots'}")
    return 0
