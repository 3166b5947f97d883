"""Report figures from plain arrays and DataFrames (no TensorFlow).

Figures are built with matplotlib's object API (`matplotlib.figure.Figure` drawn by the Agg
canvas), not `pyplot`: nothing depends on the interactive backend or on pyplot's global figure
list, so nothing needs a display and no figure outlives its function. Every function writes a
PNG atomically (`src.utils.io.atomic_path`) and returns the written path.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from src.utils.io import atomic_path

_MARKERS = ("o", "^", "s", "D", "v", "P", "X", "*", "<", ">", "h", "p")
_DPI = 120


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=_DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    """Write `fig` as PNG to `path` atomically, release it, return the path."""
    target = Path(path)
    try:
        with atomic_path(target, suffix=".png") as tmp:
            fig.savefig(tmp, format="png", bbox_inches="tight")
    finally:
        fig.clear()
    return target


def _colours(n: int) -> list[Any]:
    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    if n <= cmap.N:
        return [cmap(i) for i in range(n)]
    return [colormaps["hsv"](i / n) for i in range(n)]


# --------------------------------------------------------------------------- confusion

def plot_confusion_matrix(cm: Any, labels: Sequence[str], path: str | os.PathLike,
                          normalize: bool = True, title: str = "") -> Path:
    """Heat map of a confusion matrix (rows = true, cols = predicted).

    ``normalize=True`` divides each row by its total (a row with no samples stays 0) and
    annotates percentages with the counts beneath; otherwise cells show counts.
    """
    counts = np.asarray(cm, dtype=np.float64)
    labels = [str(name) for name in labels]
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] != len(labels):
        raise ValueError(f"confusion matrix shape {counts.shape} does not match "
                         f"{len(labels)} labels")
    if normalize:
        totals = counts.sum(axis=1, keepdims=True)
        values = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
        vmax = 1.0
    else:
        values = counts
        vmax = max(float(counts.max()), 1.0)

    n = len(labels)
    size = max(4.0, 0.6 * n + 2.5)
    fig = _new_figure(size + 1.0, size)
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(values, cmap="Blues", vmin=0.0, vmax=vmax, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(n), labels, rotation=45, ha="right")
    ax.set_yticks(range(n), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title)
    font = 9 if n <= 8 else 7
    for i in range(n):
        for j in range(n):
            if normalize:
                text = f"{100.0 * values[i, j]:.1f}%\n({int(counts[i, j])})"
            else:
                text = f"{int(counts[i, j])}"
            colour = "white" if values[i, j] > 0.5 * vmax else "black"
            ax.text(j, i, text, ha="center", va="center", color=colour, fontsize=font)
    return _save(fig, path)


# --------------------------------------------------------------------------- training curves

def _family(key: str) -> str:
    base = key[4:] if key.startswith("val_") else key
    return "accuracy" if base == "acc" else base


def plot_training_curves(history: Mapping[str, Sequence[float]], path: str | os.PathLike,
                         title: str = "") -> Path:
    """One subplot per metric family: a key and its ``val_`` twin share one (``loss`` and
    ``val_loss``; ``accuracy`` and ``val_accuracy``; ``lmmd_loss`` alone, ...).

    Series may differ in length (each is plotted against its own epochs 1..len); empty series
    are skipped. An empty history gives a figure that says so.
    """
    families: dict[str, list[str]] = {}
    for key, values in history.items():
        if values is None or len(np.atleast_1d(np.asarray(values, dtype=np.float64))) == 0:
            continue
        families.setdefault(_family(str(key)), []).append(str(key))
    # loss first, accuracy second, the rest in the order met
    order = sorted(families, key=lambda f: (0 if f == "loss" else 1 if f == "accuracy" else 2))

    if not order:
        fig = _new_figure(5.0, 3.0)
        ax = fig.add_subplot(1, 1, 1)
        ax.text(0.5, 0.5, "no training history", ha="center", va="center")
        ax.set_axis_off()
        if title:
            fig.suptitle(title)
        return _save(fig, path)

    n = len(order)
    ncols = min(3, n)
    nrows = int(np.ceil(n / ncols))
    fig = _new_figure(4.5 * ncols, 3.4 * nrows)
    for index, family in enumerate(order):
        ax = fig.add_subplot(nrows, ncols, index + 1)
        keys = sorted(families[family], key=lambda k: (k.startswith("val_"), k))
        for key in keys:
            values = np.atleast_1d(np.asarray(history[key], dtype=np.float64))
            epochs = np.arange(1, len(values) + 1)
            style = "--" if key.startswith("val_") else "-"
            ax.plot(epochs, values, style, marker="." if len(values) <= 30 else None, label=key)
        ax.set_title(family)
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


# --------------------------------------------------------------------------- t-SNE

def plot_tsne(embeddings: Any, labels: Any, domains: Any, path: str | os.PathLike,
              title: str = "", seed: int = 0, max_points: int = 2000) -> Path:
    """2-D t-SNE of ``embeddings`` (N, D): colour = class label, marker = domain.

    At most ``max_points`` points are used (a seeded random subset without replacement).
    sklearn ``TSNE(init="pca", perplexity=min(30, (N - 1) / 3), random_state=seed)``;
    ``domains=None`` means one domain. Needs N >= 3 points.
    """
    from sklearn.manifold import TSNE  # heavy: sklearn (only this plot needs it)

    points = np.asarray(embeddings, dtype=np.float64)
    if points.ndim == 1:
        points = points[:, None]
    if points.ndim != 2:
        points = points.reshape(points.shape[0], -1)
    n_total = points.shape[0]
    classes = np.asarray(labels).astype(str).reshape(-1)
    doms = (np.full(n_total, "all") if domains is None
            else np.asarray(domains).astype(str).reshape(-1))
    if classes.shape[0] != n_total or doms.shape[0] != n_total:
        raise ValueError(f"embeddings ({n_total}), labels ({classes.shape[0]}) and domains "
                         f"({doms.shape[0]}) differ in length")
    if n_total > max_points:
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.choice(n_total, size=max_points, replace=False))
        points, classes, doms = points[keep], classes[keep], doms[keep]
    n = points.shape[0]
    if n < 3:
        raise ValueError(f"t-SNE needs at least 3 points, got {n}")
    if points.shape[1] < 2:  # PCA init needs two features
        points = np.hstack([points, np.zeros((n, 2 - points.shape[1]))])

    perplexity = min(30.0, (n - 1) / 3.0)
    coords = TSNE(n_components=2, init="pca", perplexity=perplexity,
                  random_state=seed).fit_transform(points)

    class_names = list(dict.fromkeys(sorted(classes)))
    domain_names = list(dict.fromkeys(sorted(doms)))
    colours = dict(zip(class_names, _colours(len(class_names))))
    markers = {name: _MARKERS[i % len(_MARKERS)] for i, name in enumerate(domain_names)}

    fig = _new_figure(7.5, 6.0)
    ax = fig.add_subplot(1, 1, 1)
    size = 18 if n > 500 else 30
    for domain in domain_names:
        for name in class_names:
            mask = (doms == domain) & (classes == name)
            if mask.any():
                ax.scatter(coords[mask, 0], coords[mask, 1], s=size, c=[colours[name]],
                           marker=markers[domain], alpha=0.75, linewidths=0.3,
                           edgecolors="black" if len(domain_names) > 1 else "none")
    class_handles = [Line2D([], [], linestyle="", marker="o", color=colours[name], label=name)
                     for name in class_names]
    legend = ax.legend(handles=class_handles, title="class", loc="upper left",
                       bbox_to_anchor=(1.01, 1.0), fontsize=8)
    if len(domain_names) > 1:
        ax.add_artist(legend)
        domain_handles = [Line2D([], [], linestyle="", marker=markers[d], color="grey", label=d)
                          for d in domain_names]
        ax.legend(handles=domain_handles, title="domain", loc="lower left",
                  bbox_to_anchor=(1.01, 0.0), fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or f"t-SNE ({n} points)")
    return _save(fig, path)


# --------------------------------------------------------------------------- bars and params

def plot_per_class_recall(frame: pd.DataFrame, path: str | os.PathLike, title: str = "") -> Path:
    """Grouped bars: one group per class (``frame.index``), one bar per column (method/run).

    Values are recalls as fractions (0..1); nan bars are left out.
    """
    if frame.empty:
        raise ValueError("plot_per_class_recall needs a non-empty frame")
    values = frame.astype(float)
    classes = [str(i) for i in values.index]
    runs = [str(c) for c in values.columns]
    n_classes, n_runs = len(classes), len(runs)
    width = 0.8 / n_runs
    x = np.arange(n_classes)

    fig = _new_figure(max(6.0, 0.5 * n_classes * max(n_runs, 2) + 2.0), 4.5)
    ax = fig.add_subplot(1, 1, 1)
    for i, (run, colour) in enumerate(zip(runs, _colours(n_runs))):
        offsets = x - 0.4 + width * (i + 0.5)
        ax.bar(offsets, np.nan_to_num(values.iloc[:, i].to_numpy(), nan=0.0), width=width,
               label=run, color=colour)
    ax.set_xticks(x, classes, rotation=30 if n_classes > 6 else 0,
                  ha="right" if n_classes > 6 else "center")
    top = float(np.nanmax(values.to_numpy())) if np.isfinite(values.to_numpy()).any() else 1.0
    ax.set_ylim(0.0, max(1.0, top) * 1.05)
    ax.set_ylabel("recall")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    if title:
        ax.set_title(title)
    return _save(fig, path)


def plot_metric_vs_param(frame: pd.DataFrame, param: str, metric: str, path: str | os.PathLike,
                         title: str = "") -> Path:
    """Every row of ``frame`` as a point (``param`` vs ``metric``) and the mean per ``param``
    value as a line. A non-numeric ``param`` is placed at evenly spaced category positions.
    """
    for column in (param, metric):
        if column not in frame.columns:
            raise KeyError(f"column {column!r} not in frame (has {list(frame.columns)})")
    data = frame[[param, metric]].dropna()
    if data.empty:
        raise ValueError(f"no rows with both {param!r} and {metric!r}")
    y = data[metric].astype(float).to_numpy()
    numeric = pd.api.types.is_numeric_dtype(data[param]) and not pd.api.types.is_bool_dtype(
        data[param])

    fig = _new_figure(6.0, 4.2)
    ax = fig.add_subplot(1, 1, 1)
    if numeric:
        x = data[param].astype(float).to_numpy()
        means = data.groupby(param)[metric].mean().sort_index()
        ax.scatter(x, y, alpha=0.5, s=25, label="runs")
        ax.plot(means.index.astype(float), means.to_numpy(dtype=float), "-o", color="C3",
                label="mean")
    else:
        categories = list(dict.fromkeys(data[param].astype(str)))
        positions = {name: i for i, name in enumerate(categories)}
        x = np.array([positions[v] for v in data[param].astype(str)], dtype=float)
        means = data.assign(_cat=data[param].astype(str)).groupby("_cat")[metric].mean()
        ax.scatter(x, y, alpha=0.5, s=25, label="runs")
        ax.plot(range(len(categories)), [means[c] for c in categories], "-o", color="C3",
                label="mean")
        ax.set_xticks(range(len(categories)), categories)
    ax.set_xlabel(param)
    ax.set_ylabel(metric)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or f"{metric} vs {param}")
    return _save(fig, path)
