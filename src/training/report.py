"""Turn finished fold results into the run's report folder (workbook, CSV, JSON, plots)."""
from __future__ import annotations

import datetime
import platform
from pathlib import Path

import numpy as np
import pandas as pd

from src.utils import io
from src.utils.metrics import summarise_folds
from src.utils.plots import plot_confusion_matrix, plot_training_curves
from src.utils.reports import (format_summary_line, write_experiment_workbook,
                               write_predictions_csv)

HONEST_NOTE = ("Model selection and early stopping used a validation split carved from the "
               "training folds; test folds were never seen before evaluation.")
TEST_FOLD_NOTE = ("WARNING: --val_policy test_fold selected each fold's best epoch on its TEST "
                  "fold (the published TIM-Net protocol). These figures are optimistic and only "
                  "for like-for-like comparison with published numbers.")
TEST_FOLD_MONITOR_NOTE = ("Fixed schedule with --val_policy test_fold: each fold's model is its "
                          "last epoch, so the figures are honest; the test fold was only "
                          "evaluated after every epoch. test_fold_best_war (the best epoch's "
                          "accuracy on the TEST fold, the published TIM-Net protocol) is "
                          "optimistic and only for like-for-like comparison.")
FIXED_SCHEDULE_NOTE = ("Fixed schedule: each fold's model is its last epoch, trained on every "
                       "training-fold file (no validation split, no early stopping); test folds "
                       "were never seen before evaluation.")
CLASSIC_NOTE = ("scikit-learn model: fitted once on every training-fold file (no epochs, no "
                "validation split); test folds were never seen before evaluation.")
LABEL_FREE_C_NOTE = ("scikit-learn model, C chosen without target labels: each fold keeps the "
                     "C whose target predictions have the most balanced class mix; target "
                     "labels were read only to report these figures.")
LABEL_FREE_NOTE = ("Cross-corpus model chosen without target labels: each fold keeps the epoch "
                   "with the best label-free score (source validation accuracy x normalised "
                   "entropy of the mean target prediction); target labels were read only to "
                   "report these figures.")
LAST_EPOCH_NOTE = ("Cross-corpus model: the last epoch of a fixed schedule (or the source "
                   "validation early stop); target labels were read only to report these "
                   "figures.")


SELF_TRAINING_NOTE = ("Then {rounds} round(s) of class-balanced self-training: each trained "
                      "again with a growing share of the target pseudo-labelled by the model "
                      "itself (each class its most confident files; no target label read).")

TEACHER_NOTE = ("Round 1's pseudo-labels came from a {teacher} on the same features (C chosen "
                "label-free), not from the run's model.")


def selection_note(run_config: dict) -> str:
    """How the reported models were chosen, in one or two sentences for every report."""
    note = _base_selection_note(run_config)
    if run_config.get("self_training"):
        note += " " + SELF_TRAINING_NOTE.format(rounds=run_config["self_training"])
        if run_config.get("st_teacher", "self") != "self":
            note += " " + TEACHER_NOTE.format(teacher=run_config["st_teacher"])
    return note


def _base_selection_note(run_config: dict) -> str:
    if run_config.get("val_policy") == "test_fold":
        return TEST_FOLD_MONITOR_NOTE if run_config.get("patience") == 0 else TEST_FOLD_NOTE
    if run_config.get("model") in ("svm", "logreg"):
        return LABEL_FREE_C_NOTE if run_config.get("select_C") == "label_free" else CLASSIC_NOTE
    if run_config.get("mode") == "train-lmmd":
        return (LABEL_FREE_NOTE if run_config.get("select_epoch") == "label_free"
                else LAST_EPOCH_NOTE)
    if run_config.get("patience") == 0 and run_config.get("val_fraction") == 0:
        return FIXED_SCHEDULE_NOTE
    return HONEST_NOTE


def write_run_report(result_dir: Path, run_id: str, saved: dict, results: list[dict],
                     class_names: list[str], peak_memory_mb: float = 0.0,
                     visualize: bool = False, title: str = "", extra: dict | None = None,
                     n_folds_total: int | None = None) -> dict:
    """Write report.xlsx, predictions.csv, metrics.json, config.json and PNGs; return summary.

    n_folds_total: the run's fold count when `results` may hold fewer (folds shared among
    processes with --folds): metrics.json records it and `complete`, and the printed line says
    how many folds the figures cover."""
    result_dir = Path(result_dir)
    result_dir.mkdir(parents=True, exist_ok=True)
    run = saved["run"]
    note = selection_note(run)
    fold_results = [_fold_entry(r) for r in results]
    summary = summarise_folds([f["metrics"] for f in fold_results])
    write_experiment_workbook(result_dir / "report.xlsx", fold_results, class_names, note, run)
    write_predictions_csv(result_dir / "predictions.csv", predictions_frame(results, class_names))
    plot_confusion_matrix(np.asarray(summary["confusion"]), class_names,
                          result_dir / "confusion_matrix.png",
                          title=title or f"{run_id} (all folds)")
    for r in results:
        if r.get("history"):
            plot_training_curves(r["history"], result_dir / "curves" / f"fold_{r['fold']:02d}.png",
                                 title=f"{run_id} fold {r['fold']}")
    per_class = pd.DataFrame([f["metrics"]["per_class_recall"] for f in fold_results])
    epoch_seconds = [r["seconds_per_epoch"] for r in results if r.get("epochs")]
    metrics = {
        "run_id": run_id, "mode": run.get("mode"), "data": run.get("data"),
        "target_data": run.get("target_data") or None, "feature_type": run.get("feature_type"),
        "protocol": run.get("protocol"), "val_policy": run.get("val_policy"), "note": note,
        "n_folds": len(results), "n_folds_total": n_folds_total or len(results),
        "complete": len(results) >= (n_folds_total or len(results)), "class_names": class_names,
        **{f"{k}_mean": float(summary[k]["mean"]) for k in _METRIC_KEYS},
        **{f"{k}_std": float(summary[k]["std"]) for k in _METRIC_KEYS},
        **{f"{k}_pooled": v for k, v in summary["pooled"].items()},
        "per_class_recall": per_class.mean().to_dict(),
        "seconds_per_epoch": float(np.median(epoch_seconds)) if epoch_seconds else None,
        "train_seconds": float(sum(r.get("seconds") or 0.0 for r in results)),
        "epochs": [r.get("epochs") for r in results],
        "peak_memory_mb": peak_memory_mb,
        "flags": run,
        "finished": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.machine()}",
    }
    if run.get("val_policy") == "test_fold":
        metrics.update(best_epoch_on_test_fold(results))
    metrics.update(extra or {})
    # metrics.json last: sweeps and benchmarks take its presence as "this run is complete"
    io.write_json(result_dir / "config.json", saved)
    io.write_json(result_dir / "metrics.json", metrics)
    line = format_summary_line(summary)
    if not metrics["complete"]:
        line = (f"PARTIAL, {len(results)} of {n_folds_total} folds finished (the others are "
                f"another process's or not run yet): {line}")
    print(f"\n{run_id}: {line}\n{note}\nreport: {result_dir / 'report.xlsx'}")
    if "test_fold_best_war_mean" in metrics:
        print(f"best epoch on the TEST fold (optimistic): WAR "
              f"{metrics['test_fold_best_war_mean']:.2f} +/- {metrics['test_fold_best_war_std']:.2f}")
    return metrics


def best_epoch_on_test_fold(results: list[dict]) -> dict:
    """Under --val_policy test_fold the validation history is the test fold's: the best epoch's
    test accuracy of each fold (the published TIM-Net protocol's figure, which picks it), mean
    and std over folds in %; {} when no fold has that history."""
    curves = [r["history"]["val_accuracy"] for r in results
              if (r.get("history") or {}).get("val_accuracy")]
    if not curves:
        return {}
    best = np.array([100 * max(curve) for curve in curves])
    return {"test_fold_best_war": best.round(4).tolist(),
            "test_fold_best_epoch": [int(np.argmax(curve)) + 1 for curve in curves],
            "test_fold_best_war_mean": float(best.mean()),
            "test_fold_best_war_std": float(best.std())}


_METRIC_KEYS = ("war", "uar", "macro_f1", "macro_precision", "macro_recall")


def _fold_entry(result: dict) -> dict:
    metrics = dict(result["metrics"])
    metrics["confusion"] = np.asarray(metrics["confusion"])
    entry = {"fold": result["fold"], "metrics": metrics,
             "y_true": np.asarray(result["y_true"]), "y_pred": np.asarray(result["y_pred"])}
    for key in ("epochs", "best_epoch", "seconds", "seconds_per_epoch", "n_train", "n_val",
                "n_test"):
        if key in result:
            entry[key] = result[key]
    return entry


def predictions_frame(results: list[dict], class_names: list[str]) -> pd.DataFrame:
    """One row per evaluated file: fold, file id, true and predicted label, probabilities."""
    rows = []
    for r in results:
        probs = np.asarray(r["probs"])
        for i, file_id in enumerate(r["file_ids"]):
            row = {"fold": r["fold"], "file_id": file_id,
                   "true": class_names[r["y_true"][i]], "pred": class_names[r["y_pred"][i]]}
            row.update({f"p_{c}": round(float(p), 6) for c, p in zip(class_names, probs[i])})
            rows.append(row)
    return pd.DataFrame(rows)
