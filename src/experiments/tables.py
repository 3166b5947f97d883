"""Summary tables of collected runs (collect.py): best run per setting, per-class recall, the
domain-adaptation methods, efficiency; percentage formatting and Markdown rendering.

"Best" always means highest mean UAR. For the domain-adaptation tables a method's figures come
from its best configuration (same flags apart from --random_seed and paths), averaged over that
configuration's runs (seeds); the std is over seeds when there are two or more, otherwise the
run's std over folds (the `std over` column says which). Metric values are fractions in the
frames and percentages with two decimals in the Markdown-ready tables.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import pandas as pd

from src.utils.reports import markdown_table

from .collect import CROSS_KINDS, METRICS, short_setting, sort_by_uar

DA_METHODS = ("none", "mmd", "dann", "lmmd")
NOT_RUN = "not run"


def pct(value: Any, digits: int = 2) -> str:
    """A fraction as a percentage string with `digits` decimals; "" for a missing value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{100.0 * float(value):.{digits}f}"


def pct_pm(mean: Any, std: Any = None) -> str:
    """'mean ± std' in percent (the std only when given)."""
    text = pct(mean)
    if text and std is not None and not (isinstance(std, float) and math.isnan(std)):
        text += f" ± {pct(std)}"
    return text


def folds_text(row: pd.Series) -> str:
    """The run's number of folds as text ("" when unknown)."""
    n = row.get("n_folds")
    return "" if n is None or pd.isna(n) else str(int(n))


def metric_text(row: pd.Series, key: str) -> str:
    """'mean ± std' in percent; the std only when the run has two or more folds."""
    n = row.get("n_folds")
    std = row.get(f"{key}_std") if n is not None and pd.notna(n) and int(n) > 1 else None
    return pct_pm(row.get(f"{key}_mean"), std)


def _num(value: Any, digits: int = 1) -> str:
    """A number with `digits` decimals; "" for a missing value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{float(value):.{digits}f}"


def to_markdown(frame: pd.DataFrame) -> str:
    """A table as a Markdown table (no index column)."""
    return markdown_table(frame, index=False)


def best_run(frame: pd.DataFrame) -> pd.Series | None:
    """The row with the highest mean UAR; None when no row has one."""
    frame = frame[frame["uar_mean"].notna()] if not frame.empty else frame
    if frame.empty:
        return None
    return sort_by_uar(frame).iloc[0]


def _setting_order(frame: pd.DataFrame, in_corpus: bool) -> list[str]:
    """The settings of a table: the canonical two first (even when not run), then the others."""
    canonical = ["EMODB", "RAVDESS"] if in_corpus else ["EMODB->RAVDESS", "RAVDESS->EMODB"]
    kinds = ("train",) if in_corpus else CROSS_KINDS
    present = sorted(set(frame.loc[frame["kind"].isin(kinds), "setting"])) if not frame.empty \
        else []
    return canonical + [s for s in present if s not in canonical]


# --------------------------------------------------------------------------- tables

def metric_cells(best: pd.Series) -> dict[str, str]:
    """The folds, accuracy, UAR and macro-F1 cells (percent, mean ± std) of a run's row."""
    return {"folds": folds_text(best), "accuracy (WAR) %": metric_text(best, "war"),
            "UAR %": metric_text(best, "uar"), "macro-F1 %": metric_text(best, "macro_f1")}


def _best_per_setting(frame: pd.DataFrame):
    """(in_corpus, setting, best run or None) for the in-corpus settings (training runs) and
    then the cross-corpus ones (train-lmmd or cross-test runs), in table order."""
    for in_corpus in (True, False):
        kinds = ("train",) if in_corpus else CROSS_KINDS
        for setting in _setting_order(frame, in_corpus):
            subset = frame[frame["kind"].isin(kinds) & (frame["setting"] == setting)] \
                if not frame.empty else frame
            yield in_corpus, setting, best_run(subset)


def overall_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Best run of each setting: EMODB, RAVDESS (in-corpus training) and E->R, R->E
    (train-lmmd or cross-test)."""
    rows = []
    for in_corpus, setting, best in _best_per_setting(frame):
        name = short_setting(setting)
        if best is None:
            rows.append({"setting": name, "run": NOT_RUN})
            continue
        rows.append({"setting": name, "run": best["run_id"], "kind": best["kind"],
                     "feature": best["feature_type"],
                     "DA": best["da_method"] if not in_corpus else "", **metric_cells(best)})
    columns = ["setting", "run", "kind", "feature", "DA", "folds", "accuracy (WAR) %", "UAR %",
               "macro-F1 %"]
    return pd.DataFrame(rows).reindex(columns=columns).fillna("")


def per_class_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Recall (%) per class of the best run of each setting (rows = classes)."""
    columns: dict[str, dict[str, str]] = {}
    for _, setting, best in _best_per_setting(frame):
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
    """`value` as a float; NaN when it is not a number."""
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
            best = best_run(group)
            if best is None:
                continue
            rows.append({"setting": short_setting(setting), "feature": feature,
                         "run": best["run_id"], "preset": best["preset"],
                         "folds": folds_text(best),
                         "s/epoch": _num(best["seconds_per_epoch"], 2),
                         "training time (min)": _num(_float(best["train_seconds"]) / 60.0, 1),
                         "peak memory (MB)": _num(best["peak_memory_mb"], 0)})
    columns = ["setting", "feature", "run", "preset", "folds", "s/epoch", "training time (min)",
               "peak memory (MB)"]
    return pd.DataFrame(rows).reindex(columns=columns).fillna("")



def recall_frame(rows: pd.DataFrame, labels: Sequence[str]) -> pd.DataFrame:
    """Per-class recall of `rows`: one column per row (named by `labels`), one row per class."""
    columns = {}
    recall_cols = [c for c in rows.columns if c.startswith("recall_")]
    for label, (_, r) in zip(labels, rows.iterrows()):
        columns[label] = {c[len("recall_"):]: r[c] for c in recall_cols if pd.notna(r[c])}
    return pd.DataFrame(columns)



def recall_before_after(summary: pd.DataFrame, setting: str) -> pd.DataFrame | None:
    """Per-class recall of `setting` without (none) and with (lmmd) adaptation, from
    method_summary; None when neither was run."""
    rows = summary[(summary["setting"] == setting) & summary["method"].isin(["none", "lmmd"])]
    if rows.empty:
        return None
    labels = [f"{m}" for m in rows["method"]]
    table = recall_frame(rows, labels)
    table = table.reindex(columns=[c for c in ("none", "lmmd") if c in table.columns])
    return None if table.empty else table.sort_index()

