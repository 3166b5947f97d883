"""Late fusion of finished runs: average the class probabilities that several runs gave the same
test files on the same folds, and report the fused predictions like a run.

    python -m src.experiments.late_fusion results/RUN_A results/RUN_B [...] --name NAME
        [--weights 1,1,2] [--results_root results]

Every run's `predictions.csv` (written by `--mode train` for every model family: fold, file_id,
true, pred, one p_<class> column per class) must hold the same (fold, file_id) rows with the
same true labels and class columns, i.e. the same corpus, protocol and folds; the fused
probability of a file is the weighted mean of the runs' probabilities, its prediction the
arg-max. No label is read to choose anything: the runs and weights are given, so the figures
are those of a model fixed in advance (choosing the runs by looking at these figures would make
them optimistic, as any selection on test folds does).

Writes <results_root>/<NAME>/: predictions.csv (fused), metrics.json (per-fold mean +/- std and
pooled WAR / UAR / macro-F1, the runs, the weights) and prints the summary line.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from src.utils import io
from src.utils.metrics import compute_metrics, summarise_folds
from src.utils.reports import format_summary_line, write_predictions_csv

KEY = ["fold", "file_id"]


class FusionError(ValueError):
    """The runs cannot be fused (one line naming the run and the reason)."""


def read_predictions(run_dir: Path) -> pd.DataFrame:
    """A run's predictions.csv sorted by (fold, file_id); FusionError when missing."""
    path = Path(run_dir) / "predictions.csv"
    if not path.is_file():
        raise FusionError(f"{run_dir}: no predictions.csv (a finished run's results folder, "
                          f"e.g. results/<run-id>)")
    frame = pd.read_csv(path, dtype={"file_id": str})
    missing = [c for c in KEY + ["true"] if c not in frame.columns]
    if missing or not probability_columns(frame):
        raise FusionError(f"{path}: expected columns fold, file_id, true and p_<class>")
    return frame.sort_values(KEY, kind="stable").reset_index(drop=True)


def probability_columns(frame: pd.DataFrame) -> list[str]:
    """The p_<class> columns, in file order."""
    return [c for c in frame.columns if c.startswith("p_")]


def check_same_files(frames: list[pd.DataFrame], names: list[str]) -> None:
    """FusionError unless every frame has the first one's rows, labels and class columns."""
    first = frames[0]
    for frame, name in zip(frames[1:], names[1:]):
        if probability_columns(frame) != probability_columns(first):
            raise FusionError(f"{name}: classes {probability_columns(frame)} differ from "
                              f"{names[0]}'s {probability_columns(first)}")
        if len(frame) != len(first) or not frame[KEY].equals(first[KEY]):
            raise FusionError(f"{name}: its (fold, file) rows differ from {names[0]}'s; fuse "
                              f"runs of the same corpus, protocol and folds")
        if not frame["true"].equals(first["true"]):
            raise FusionError(f"{name}: true labels differ from {names[0]}'s")


def fuse(frames: list[pd.DataFrame], weights: np.ndarray) -> pd.DataFrame:
    """(fold, file_id, true, pred, p_*) with p_* the weighted mean of the frames' p_*."""
    columns = probability_columns(frames[0])
    stacked = np.stack([f[columns].to_numpy(dtype=np.float64) for f in frames])  # (R, N, C)
    probs = np.tensordot(weights / weights.sum(), stacked, axes=1)  # (N, C)
    classes = [c[2:] for c in columns]
    fused = frames[0][KEY + ["true"]].copy()
    fused["pred"] = [classes[i] for i in probs.argmax(axis=1)]
    for j, column in enumerate(columns):
        fused[column] = probs[:, j]
    return fused


def fold_metrics(fused: pd.DataFrame) -> list[dict]:
    """compute_metrics of each fold's rows, in fold order."""
    classes = [c[2:] for c in probability_columns(fused)]
    return [compute_metrics(rows["true"].map(classes.index).to_numpy(),
                            rows["pred"].map(classes.index).to_numpy(), classes)
            for _, rows in fused.groupby("fold", sort=True)]


def summary_json(summary: dict, runs: list[str], weights: np.ndarray) -> dict:
    """The metrics.json of a fused run, with the keys of a trained run's metrics.json."""
    out = {"late_fusion_of": runs, "weights": [float(w) for w in weights],
           "n_folds": summary["n_folds"]}
    for key in ("war", "uar", "macro_f1"):
        out[f"{key}_mean"], out[f"{key}_std"] = summary[key]["mean"], summary[key]["std"]
        out[f"{key}_pooled"] = summary["pooled"][key]
    return out


def parse_weights(text: str, n_runs: int) -> np.ndarray:
    """--weights "1,1,2" -> array; equal weights when empty; FusionError on a bad list."""
    if not text:
        return np.ones(n_runs)
    try:
        weights = np.array([float(w) for w in text.split(",")])
    except ValueError:
        weights = np.array([])
    if len(weights) != n_runs or np.any(weights < 0) or not weights.sum() > 0:
        raise FusionError(f"--weights {text!r}: give {n_runs} non-negative numbers, not all 0")
    return weights


def late_fusion(run_dirs: list[Path], name: str, results_root: Path,
                weights: str = "") -> dict:
    """Fuse `run_dirs`, write <results_root>/<name>/{predictions.csv, metrics.json}; returns
    the summary (`summarise_folds` of the fused folds)."""
    if len(run_dirs) < 2:
        raise FusionError("give at least two runs to fuse")
    frames = [read_predictions(d) for d in run_dirs]
    labels = [str(d) for d in run_dirs]
    check_same_files(frames, labels)
    w = parse_weights(weights, len(frames))
    fused = fuse(frames, w)
    summary = summarise_folds(fold_metrics(fused))
    out = Path(results_root) / name
    out.mkdir(parents=True, exist_ok=True)
    write_predictions_csv(out / "predictions.csv", fused)
    io.write_json(out / "metrics.json", summary_json(summary, labels, w))
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m src.experiments.late_fusion",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="results folders of finished runs")
    p.add_argument("--name", required=True, help="results folder name of the fused run")
    p.add_argument("--weights", default="", help="one weight per run, comma separated "
                                                 "(default: equal)")
    p.add_argument("--results_root", type=Path, default=Path("results"))
    args = p.parse_args(argv)
    try:
        summary = late_fusion(args.runs, args.name, args.results_root, args.weights)
    except FusionError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{args.name}: {format_summary_line(summary)}")
    print(f"written: {args.results_root / args.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
