"""Classification metrics for speech emotion recognition, from plain integer arrays.

Conventions
-----------
* ``y_true`` / ``y_pred`` are integer indices into ``labels`` (the class names, in order).
* ``war`` (weighted average recall) is plain accuracy.
* ``uar`` (unweighted average recall) is the mean recall over the classes that **occur in
  ``y_true``**. A class with no true samples in a fold has no defined recall; it is left out
  of the mean rather than counted as 0 (which would punish a model for a split it did not
  choose). Its entry in ``per_class_recall`` is ``nan``.
* ``macro_recall``, ``macro_precision`` and ``macro_f1`` follow scikit-learn with
  ``labels=range(len(labels))`` and ``zero_division=0``: every class in ``labels`` counts,
  an undefined value counts as 0. So ``macro_recall == uar`` when every class occurs in
  ``y_true``, and ``macro_recall < uar`` can happen when one does not.
* The confusion matrix always covers every class in ``labels`` (rows = true, cols = predicted),
  whether or not a class occurs.
* Fold summaries use the population standard deviation (``ddof=0``).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import (accuracy_score, classification_report, confusion_matrix,
                             precision_recall_fscore_support, recall_score)

#: Scalar metrics that `summarise_folds` aggregates, in display order.
SUMMARY_KEYS = ("war", "uar", "macro_f1", "macro_precision", "macro_recall")


def _as_index_array(values: Any, n_labels: int, name: str) -> np.ndarray:
    """Return `values` as a 1-D int array, checking every entry indexes a label."""
    array = np.asarray(values)
    if array.ndim != 1:
        array = array.reshape(-1)
    if array.size and not np.issubdtype(array.dtype, np.integer):
        if not np.issubdtype(array.dtype, np.number) or not np.all(np.mod(array, 1) == 0):
            raise ValueError(f"{name} must hold integer class indices, got dtype {array.dtype}")
    array = array.astype(np.int64)
    if array.size and (array.min() < 0 or array.max() >= n_labels):
        raise ValueError(f"{name} holds indices outside 0..{n_labels - 1}: "
                         f"min {array.min()}, max {array.max()}")
    return array


def _check_inputs(y_true: Any, y_pred: Any, labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    labels = list(labels)
    if not labels:
        raise ValueError("labels must name at least one class")
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels must be unique, got {labels}")
    true = _as_index_array(y_true, len(labels), "y_true")
    pred = _as_index_array(y_pred, len(labels), "y_pred")
    if true.shape != pred.shape:
        raise ValueError(f"y_true and y_pred differ in length: {true.size} vs {pred.size}")
    if true.size == 0:
        raise ValueError("cannot compute metrics on zero samples")
    return true, pred


def compute_metrics(y_true: Any, y_pred: Any, labels: Sequence[str]) -> dict[str, Any]:
    """Metrics of one evaluation (e.g. one test fold).

    Returns a dict with
    ``war`` (accuracy), ``uar`` (mean recall over classes present in ``y_true``, see module
    docstring), ``macro_f1``, ``macro_precision``, ``macro_recall`` (sklearn macro averages over
    all ``labels``, ``zero_division=0``), ``per_class_recall`` (label -> recall, ``nan`` for a
    class absent from ``y_true``), ``confusion`` (``len(labels)`` square int array, rows = true,
    cols = predicted), ``support`` (label -> number of true samples) and ``n`` (samples).
    """
    labels = list(labels)
    true, pred = _check_inputs(y_true, y_pred, labels)
    all_idx = list(range(len(labels)))

    precision, recall, f1, support = precision_recall_fscore_support(
        true, pred, labels=all_idx, average=None, zero_division=0)
    macro_p, macro_r, macro_f, _ = precision_recall_fscore_support(
        true, pred, labels=all_idx, average="macro", zero_division=0)

    present = sorted(int(c) for c in np.unique(true))
    uar = recall_score(true, pred, labels=present, average="macro", zero_division=0)

    per_class_recall = {
        name: (float(recall[i]) if support[i] > 0 else float("nan"))
        for i, name in enumerate(labels)
    }
    return {
        "war": float(accuracy_score(true, pred)),
        "uar": float(uar),
        "macro_f1": float(macro_f),
        "macro_precision": float(macro_p),
        "macro_recall": float(macro_r),
        "per_class_recall": per_class_recall,
        "confusion": confusion_matrix(true, pred, labels=all_idx).astype(np.int64),
        "support": {name: int(support[i]) for i, name in enumerate(labels)},
        "n": int(true.size),
    }


def summarise_folds(fold_metrics: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Aggregate `compute_metrics` outputs over folds.

    Returns ``{key: {"mean": float, "std": float} for key in SUMMARY_KEYS}`` (war, uar,
    macro_f1, macro_precision, macro_recall) plus ``"confusion"`` (int array summed over folds),
    ``"n_folds"`` and ``"per_class_recall_mean"`` ({label: float}); e.g.
    ``summary["uar"]["mean"]``.

    ``std`` is the **population** standard deviation (``numpy.std`` with ``ddof=0``): the folds
    are the whole set being described, and a single fold gives 0 rather than nan.
    ``per_class_recall_mean`` ignores folds where the class is absent (``nan``); it is ``nan``
    only for a class absent from every fold.
    """
    fold_metrics = list(fold_metrics)
    if not fold_metrics:
        raise ValueError("summarise_folds needs at least one fold")
    stats: dict[str, dict[str, float]] = {}
    for key in SUMMARY_KEYS:
        values = np.array([float(m[key]) for m in fold_metrics], dtype=np.float64)
        stats[key] = {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=0))}

    shapes = {np.asarray(m["confusion"]).shape for m in fold_metrics}
    if len(shapes) != 1:
        raise ValueError(f"confusion matrices differ in shape across folds: {sorted(shapes)}")
    confusion = np.sum([np.asarray(m["confusion"], dtype=np.int64) for m in fold_metrics], axis=0)

    per_class_mean: dict[str, float] = {}
    if all("per_class_recall" in m for m in fold_metrics):
        names = list(fold_metrics[0]["per_class_recall"])
        for name in names:
            values = np.array([m["per_class_recall"].get(name, np.nan) for m in fold_metrics],
                              dtype=np.float64)
            per_class_mean[name] = (float(np.nanmean(values)) if np.any(~np.isnan(values))
                                    else float("nan"))
    return {
        **stats,
        "confusion": confusion,
        "pooled": pooled_metrics(confusion),
        "n_folds": len(fold_metrics),
        "per_class_recall_mean": per_class_mean,
    }


def pooled_metrics(confusion: np.ndarray) -> dict[str, float]:
    """WAR, UAR and macro-F1 of all folds' test files taken together, from the summed (C, C)
    confusion matrix (rows true, columns predicted); UAR and F1 average the classes present.
    With leave-one-speaker-out folds, where a speaker's fold may lack classes, this is the
    figure SER papers usually report as "LOSO UAR"."""
    confusion = np.asarray(confusion, dtype=np.float64)
    support, predicted, hits = confusion.sum(axis=1), confusion.sum(axis=0), np.diag(confusion)
    present = support > 0
    recall = hits[present] / support[present]
    precision = np.divide(hits, predicted, out=np.zeros_like(hits), where=predicted > 0)[present]
    f1 = np.divide(2 * precision * recall, precision + recall,
                   out=np.zeros_like(recall), where=(precision + recall) > 0)
    return {"war": float(hits.sum() / max(confusion.sum(), 1.0)), "uar": float(recall.mean()),
            "macro_f1": float(f1.mean())}


def classification_report_frame(y_true: Any, y_pred: Any, labels: Sequence[str]) -> pd.DataFrame:
    """sklearn's ``classification_report(output_dict=True)`` as a DataFrame.

    Index: the class names, then sklearn's summary rows (``accuracy``, ``macro avg``,
    ``weighted avg``); columns: precision, recall, f1-score, support. The ``accuracy`` row
    holds the accuracy under f1-score (like sklearn's text report), nan under precision and
    recall, and the total sample count under support. ``zero_division=0``.
    """
    labels = list(labels)
    true, pred = _check_inputs(y_true, y_pred, labels)
    report = classification_report(true, pred, labels=list(range(len(labels))),
                                   target_names=[str(name) for name in labels],
                                   output_dict=True, zero_division=0)
    columns = ["precision", "recall", "f1-score", "support"]
    rows: dict[str, dict[str, float]] = {}
    for key, value in report.items():
        if isinstance(value, dict):
            rows[key] = {col: float(value[col]) for col in columns}
        else:  # "accuracy" is a bare float
            rows[key] = {"precision": np.nan, "recall": np.nan, "f1-score": float(value),
                         "support": float(true.size)}
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=columns)
    frame["support"] = frame["support"].astype(np.int64)
    return frame
