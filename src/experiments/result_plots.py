"""Plots of collected runs: UAR against every swept parameter, per-class recall of the best
runs, the best run's confusion matrix, and the domain-adaptation methods side by side."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import confusion_matrix

from src.utils import io
from src.utils.plots import plot_confusion_matrix, plot_metric_vs_param, plot_per_class_recall

from .tables import DA_METHODS, recall_frame

#: Flags that may be plotted as "UAR vs parameter" when they vary across the selected runs.
SWEEP_PARAMS = ("lr", "dropout", "filter_size", "dilation_size", "kernel_size", "stack_size",
                "batch_size", "epoch", "lmmd_weight", "feature_type", "fusion_streams", "preset",
                "block", "use_dtpm", "use_attention", "da_method", "protocol", "val_policy",
                "split_fold", "max_folds")


def plot_params(frame: pd.DataFrame, out: Path) -> list[Path]:
    """UAR vs every swept parameter that varies across the in-corpus training runs (all runs
    when there are none)."""
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


def confusion_from_predictions(run_dir: Path) -> tuple[np.ndarray, list[str]]:
    """Pooled confusion (all folds) from predictions.csv, classes from metrics.json."""
    names = json.loads((run_dir / "metrics.json").read_text()).get("class_names") or []
    table = pd.read_csv(run_dir / "predictions.csv")
    if not names:
        names = sorted(set(table["true"].astype(str)) | set(table["pred"].astype(str)))
    cm = confusion_matrix(table["true"].astype(str), table["pred"].astype(str), labels=names)
    return cm, list(names)


def write_plots(frame: pd.DataFrame, out: Path, top: int = 5, warn=print) -> list[Path]:
    """All plots of analyze_results.py under `out` (frame sorted by UAR): UAR vs parameters,
    per-class recall of the `top` runs, the best run's confusion matrix; the written paths."""
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

