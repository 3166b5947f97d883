"""Experiment reports: an Excel workbook per experiment, prediction CSVs, summary text.

Everything takes plain arrays, dicts and DataFrames (no TensorFlow) and writes through
`src.utils.io` so a report appears complete under its final name or not at all.

Workbook layout (`write_experiment_workbook`)
---------------------------------------------
``summary``
    Header row ``fold | WAR | UAR | macro-F1 | macro precision | macro recall | <extras>``, one
    row per fold, then a ``mean`` row and a ``std`` row (population std, ddof=0; numeric extras
    are averaged too). Below, after a blank row: ``note | <summary_note>``, then
    ``config key | value`` rows (all config entries, or the ones named by ``summary_keys``),
    then the pooled confusion matrix summed over folds.
``per_class_recall``
    ``fold`` column, one column per class, one row per fold, then a ``mean`` row (a class
    absent from a fold's test set, recall nan/blank, is left out of that class's mean).
``fold_01``, ``fold_02``, ...
    The sklearn classification report (rows = classes + accuracy / macro avg / weighted avg),
    then two blank rows, a title cell `CONFUSION_TITLE`, and the confusion matrix with class
    names as row and column headers (rows = true, cols = predicted).
``config``
    ``key | value``, nested dicts flattened to dotted keys, lists/other values as JSON text.

Metric values are stored as unrounded fractions (0..1) and shown with a ``0.00%`` number format.
"""
from __future__ import annotations

import json
import math
import numbers
import os
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from src.utils.io import atomic_path, write_csv
from src.utils.metrics import classification_report_frame, summarise_folds

#: Column titles of the summary sheet for the metric keys of `compute_metrics`.
METRIC_COLUMNS = {
    "war": "WAR",
    "uar": "UAR",
    "macro_f1": "macro-F1",
    "macro_precision": "macro precision",
    "macro_recall": "macro recall",
}
#: Title cell above the confusion matrix on each fold sheet.
CONFUSION_TITLE = "confusion matrix (rows = true, cols = predicted)"
#: Title cell above the pooled confusion matrix on the summary sheet.
POOLED_CONFUSION_TITLE = "pooled confusion matrix, all folds (rows = true, cols = predicted)"

_RESERVED_FOLD_KEYS = {"fold", "metrics", "y_true", "y_pred"}
_PERCENT_FORMAT = "0.00%"


# --------------------------------------------------------------------------- helpers

def _is_scalar(value: Any) -> bool:
    return isinstance(value, (numbers.Number, str, bool, np.generic)) or value is None


def _plain(value: Any) -> Any:
    """numpy scalars -> Python scalars, so openpyxl accepts them."""
    if isinstance(value, np.generic):
        return value.item()
    return value


def _extra_columns(fold_results: Sequence[Mapping[str, Any]]) -> list[str]:
    """Scalar keys beyond fold/metrics/y_true/y_pred, in order of first appearance."""
    columns: list[str] = []
    for result in fold_results:
        for key, value in result.items():
            if key in _RESERVED_FOLD_KEYS or key in columns or not _is_scalar(value):
                continue
            columns.append(key)
    return columns


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> {"a.b.c": value}; non-scalar leaves become JSON (or str) text."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_config(value, prefix=f"{name}."))
        elif _is_scalar(value):
            flat[name] = _plain(value)
        else:
            if isinstance(value, np.ndarray):
                value = value.tolist()
            elif isinstance(value, (tuple, set, frozenset)):
                value = list(value)
            try:
                flat[name] = json.dumps(value, default=str)
            except (TypeError, ValueError):
                flat[name] = str(value)
    return flat


def _fold_sheet_name(fold: Any) -> str:
    return f"fold_{int(fold):02d}"


def _format_cells(worksheet, rows: Iterable[int], cols: Iterable[int], number_format: str) -> None:
    """Apply `number_format` to worksheet cells (1-based row/col numbers)."""
    cols = list(cols)
    for row in rows:
        for col in cols:
            worksheet.cell(row=row, column=col).number_format = number_format


def _autosize(worksheet, min_width: int = 8, max_width: int = 60) -> None:
    widths: dict[str, int] = {}
    for row in worksheet.iter_rows():
        for cell in row:
            if cell.value is None:
                continue
            text = cell.value if isinstance(cell.value, str) else f"{cell.value:.4f}" \
                if isinstance(cell.value, float) else str(cell.value)
            widths[cell.column_letter] = max(widths.get(cell.column_letter, 0), len(text))
    for letter, width in widths.items():
        worksheet.column_dimensions[letter].width = max(min_width, min(max_width, width + 2))


# --------------------------------------------------------------------------- frames

def summary_frame(fold_results: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The summary table: one row per fold, then ``mean`` and ``std`` (ddof=0) rows.

    Metric columns are fractions. Numeric extra columns get mean/std too; text ones stay blank.
    """
    extras = _extra_columns(fold_results)
    rows = []
    for result in fold_results:
        metrics = result["metrics"]
        row: dict[str, Any] = {"fold": int(result["fold"])}
        for key, title in METRIC_COLUMNS.items():
            row[title] = float(metrics[key])
        for key in extras:
            row[key] = _plain(result.get(key))
        rows.append(row)
    frame = pd.DataFrame(rows, columns=["fold", *METRIC_COLUMNS.values(), *extras])

    summary = summarise_folds([result["metrics"] for result in fold_results])
    mean_row: dict[str, Any] = {"fold": "mean"}
    std_row: dict[str, Any] = {"fold": "std"}
    for key, title in METRIC_COLUMNS.items():
        mean_row[title] = summary[key]["mean"]
        std_row[title] = summary[key]["std"]
    for key in extras:
        values = pd.to_numeric(frame[key], errors="coerce")
        is_numeric = all(isinstance(_plain(v), numbers.Number) and not isinstance(_plain(v), bool)
                         for v in frame[key] if v is not None)
        if is_numeric and values.notna().any():
            mean_row[key] = float(values.mean())
            std_row[key] = float(values.std(ddof=0))
    stats = pd.DataFrame([mean_row, std_row], columns=frame.columns)
    frame = frame.astype(object)
    return pd.concat([frame, stats.astype(object)], ignore_index=True)


def per_class_recall_frame(fold_results: Sequence[Mapping[str, Any]],
                           labels: Sequence[str]) -> pd.DataFrame:
    """Folds x classes recall (nan where a class is absent from the fold: NaN in memory, None
    in a fold's result.json read back on resume), plus a mean row."""
    rows = []
    for result in fold_results:
        recall = result["metrics"]["per_class_recall"]
        rows.append({"fold": int(result["fold"]),
                     **{name: np.nan if recall.get(name) is None else float(recall[name])
                        for name in labels}})
    frame = pd.DataFrame(rows, columns=["fold", *labels])
    values = frame[list(labels)].astype(float)
    mean = {"fold": "mean"}
    for name in labels:
        column = values[name]
        mean[name] = float(column.mean()) if column.notna().any() else np.nan  # skips nan
    frame = frame.astype(object)
    return pd.concat([frame, pd.DataFrame([mean], columns=frame.columns).astype(object)],
                     ignore_index=True)


def confusion_frame(confusion: Any, labels: Sequence[str]) -> pd.DataFrame:
    """Confusion matrix with class names as index (true) and columns (predicted)."""
    matrix = np.asarray(confusion)
    if matrix.shape != (len(labels), len(labels)):
        raise ValueError(f"confusion shape {matrix.shape} does not match {len(labels)} labels")
    return pd.DataFrame(matrix, index=list(labels), columns=list(labels))


# --------------------------------------------------------------------------- workbook

def write_experiment_workbook(path: str | os.PathLike, fold_results: Sequence[Mapping[str, Any]],
                              labels: Sequence[str], summary_note: str, config: Mapping[str, Any],
                              *, summary_keys: Sequence[str] | None = None) -> None:
    """Write the experiment workbook (layout in the module docstring) atomically to `path`.

    Each fold result needs ``fold`` (int), ``metrics`` (from `compute_metrics`), ``y_true`` and
    ``y_pred`` (int arrays); other scalar entries (epochs, seconds, best_epoch, n_train, ...)
    become extra summary columns, non-scalar ones are ignored. ``summary_note`` says how the
    model was selected (e.g. a validation split from the training folds, or a warning that the
    test fold chose the epoch). ``summary_keys`` picks the flattened config keys repeated on the
    summary sheet (default: all; the ``config`` sheet always has them all).
    """
    labels = [str(name) for name in labels]
    fold_results = list(fold_results)
    if not fold_results:
        raise ValueError("write_experiment_workbook needs at least one fold result")
    sheet_names = [_fold_sheet_name(result["fold"]) for result in fold_results]
    if len(set(sheet_names)) != len(sheet_names):
        raise ValueError(f"duplicate fold numbers: {[r['fold'] for r in fold_results]}")

    flat_config = flatten_config(config)
    if summary_keys is None:
        summary_config = flat_config
    else:
        summary_config = {key: flat_config.get(key) for key in summary_keys}

    summary = summary_frame(fold_results)
    recall = per_class_recall_frame(fold_results, labels)
    pooled = summarise_folds([result["metrics"] for result in fold_results])["confusion"]
    metric_titles = list(METRIC_COLUMNS.values())

    with atomic_path(path, suffix=".xlsx") as tmp:
        with pd.ExcelWriter(tmp, engine="openpyxl") as writer:
            # ---- summary
            summary.to_excel(writer, sheet_name="summary", index=False)
            sheet = writer.sheets["summary"]
            n_rows = len(summary)  # data rows are 2 .. n_rows + 1
            first_metric_col = 2
            _format_cells(sheet, range(2, n_rows + 2),
                          range(first_metric_col, first_metric_col + len(metric_titles)),
                          _PERCENT_FORMAT)
            row = n_rows + 3  # one blank row
            sheet.cell(row=row, column=1, value="note")
            sheet.cell(row=row, column=2, value=str(summary_note))
            row += 2
            if summary_config:
                sheet.cell(row=row, column=1, value="config key")
                sheet.cell(row=row, column=2, value="value")
                for key, value in summary_config.items():
                    row += 1
                    sheet.cell(row=row, column=1, value=key)
                    sheet.cell(row=row, column=2, value=_plain(value))
                row += 2
            sheet.cell(row=row, column=1, value=POOLED_CONFUSION_TITLE)
            confusion_frame(pooled, labels).to_excel(writer, sheet_name="summary", startrow=row)
            _autosize(sheet)

            # ---- per-class recall
            recall.to_excel(writer, sheet_name="per_class_recall", index=False)
            sheet = writer.sheets["per_class_recall"]
            _format_cells(sheet, range(2, len(recall) + 2), range(2, len(labels) + 2),
                          _PERCENT_FORMAT)
            _autosize(sheet)

            # ---- one sheet per fold
            for name, result in zip(sheet_names, fold_results):
                report = classification_report_frame(result["y_true"], result["y_pred"], labels)
                report.to_excel(writer, sheet_name=name)
                sheet = writer.sheets[name]
                _format_cells(sheet, range(2, len(report) + 2), range(2, 5), _PERCENT_FORMAT)
                title_row = len(report) + 4  # header + rows + two blank rows, 1-based
                sheet.cell(row=title_row, column=1, value=CONFUSION_TITLE)
                confusion = confusion_frame(result["metrics"]["confusion"], labels)
                confusion.to_excel(writer, sheet_name=name, startrow=title_row)  # 0-based
                _autosize(sheet)

            # ---- config
            config_frame = pd.DataFrame({"key": list(flat_config),
                                         "value": list(flat_config.values())})
            config_frame.to_excel(writer, sheet_name="config", index=False)
            _autosize(writer.sheets["config"])


# --------------------------------------------------------------------------- other outputs

def write_predictions_csv(path: str | os.PathLike, frame: pd.DataFrame) -> None:
    """Write a predictions DataFrame as CSV (no index), atomically."""
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"expected a pandas DataFrame, got {type(frame).__name__}")
    write_csv(path, frame)


def format_summary_line(metrics_summary: Mapping[str, Any]) -> str:
    """``"WAR 91.23 +/- 2.10 | UAR 90.50 +/- 2.30 | macro-F1 90.10 +/- 2.20"`` (percent).

    Takes a `summarise_folds` result. A single `compute_metrics` dict is accepted too and
    printed without the ``+/-`` part.
    """
    parts = []
    for key, title in (("war", "WAR"), ("uar", "UAR"), ("macro_f1", "macro-F1")):
        if isinstance(metrics_summary[key], Mapping):
            mean = 100.0 * float(metrics_summary[key]["mean"])
            std = 100.0 * float(metrics_summary[key]["std"])
            parts.append(f"{title} {mean:.2f} +/- {std:.2f}")
        else:
            parts.append(f"{title} {100.0 * float(metrics_summary[key]):.2f}")
    pooled = metrics_summary.get("pooled")
    if pooled:
        parts.append(f"all folds pooled: UAR {100.0 * pooled['uar']:.2f} "
                     f"WAR {100.0 * pooled['war']:.2f}")
    return " | ".join(parts)


def _markdown_cell(value: Any, floatfmt: str) -> str:
    value = _plain(value)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        text = format(value, floatfmt)
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def markdown_table(frame: pd.DataFrame, *, index: bool | None = None,
                   floatfmt: str = ".4f") -> str:
    """Render `frame` as a GitHub pipe table (no trailing newline).

    ``index=None`` includes the index unless it is a default RangeIndex. Floats use
    `floatfmt`, nan/None are blank, ``|`` in cells is escaped, numeric columns right-aligned.
    """
    if index is None:
        index = not (isinstance(frame.index, pd.RangeIndex) and frame.index.start == 0
                     and frame.index.step == 1)
    headers: list[str] = []
    columns: list[list[Any]] = []
    if index:
        headers.append("" if frame.index.name is None else str(frame.index.name))
        columns.append(list(frame.index))
    for name in frame.columns:
        headers.append(str(name))
        columns.append(list(frame[name]))

    def _numeric(values: list[Any]) -> bool:
        present = [_plain(v) for v in values if v is not None
                   and not (isinstance(v, float) and math.isnan(v))]
        return bool(present) and all(isinstance(v, numbers.Number) and not isinstance(v, bool)
                                     for v in present)

    aligns = ["---:" if _numeric(col) else "---" for col in columns]
    lines = ["| " + " | ".join(_markdown_cell(h, floatfmt) for h in headers) + " |",
             "| " + " | ".join(aligns) + " |"]
    for i in range(len(frame)):
        cells = [_markdown_cell(col[i], floatfmt) for col in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
