"""Tests for src/utils/metrics.py, reports.py and plots.py.

Expected values are worked out by hand (in the comments) or by plain numpy, never by running
the code under test.
"""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import openpyxl
import pandas as pd
import pytest

from src.utils.metrics import classification_report_frame, compute_metrics, summarise_folds
from src.utils.plots import (plot_confusion_matrix, plot_metric_vs_param, plot_per_class_recall,
                             plot_training_curves, plot_tsne)
from src.utils.reports import (CONFUSION_TITLE, format_summary_line, markdown_table,
                               write_experiment_workbook, write_predictions_csv)

REPO = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Hand-made 3-class example. Confusion (rows = true, cols = predicted):
#          a  b  c
#   a  [   3, 1, 0 ]   recall a = 3/4
#   b  [   0, 2, 1 ]   recall b = 2/3
#   c  [   0, 0, 3 ]   recall c = 3/3
# column totals 3, 3, 4 -> precision a = 3/3, b = 2/3, c = 3/4
LABELS3 = ["a", "b", "c"]
Y_TRUE3 = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
Y_PRED3 = [0, 0, 0, 1, 1, 1, 2, 2, 2, 2]
CM3 = np.array([[3, 1, 0], [0, 2, 1], [0, 0, 3]])


# --------------------------------------------------------------------------- metrics

def test_compute_metrics_hand_example():
    m = compute_metrics(Y_TRUE3, Y_PRED3, LABELS3)
    np.testing.assert_array_equal(m["confusion"], CM3)
    assert m["war"] == pytest.approx(8 / 10)
    # UAR = (3/4 + 2/3 + 1) / 3 = 29/36
    assert m["uar"] == pytest.approx(29 / 36)
    assert m["macro_recall"] == pytest.approx(29 / 36)
    # precision (1 + 2/3 + 3/4) / 3 = 29/36
    assert m["macro_precision"] == pytest.approx(29 / 36)
    # F1: a = 2*1*(3/4)/(7/4) = 6/7, b = 2/3, c = 6/7 -> (12/7 + 2/3) / 3 = 50/63
    assert m["macro_f1"] == pytest.approx(50 / 63)
    assert m["per_class_recall"] == pytest.approx({"a": 3 / 4, "b": 2 / 3, "c": 1.0})
    assert m["support"] == {"a": 4, "b": 3, "c": 3}
    assert m["n"] == 10


def test_absent_class_excluded_from_uar_but_not_from_macro_recall():
    labels = ["a", "b", "c", "d"]
    y_true = [0, 0, 1, 1, 2, 2]          # class d never occurs as truth
    y_pred = [0, 3, 1, 1, 2, 0]          # ... but is predicted once
    m = compute_metrics(y_true, y_pred, labels)
    # recalls a = 1/2, b = 2/2, c = 1/2 -> UAR over present classes = 2/3
    assert m["uar"] == pytest.approx(2 / 3)
    # sklearn macro recall over all four labels counts d as 0 -> 2/4
    assert m["macro_recall"] == pytest.approx(0.5)
    assert m["war"] == pytest.approx(4 / 6)
    assert math.isnan(m["per_class_recall"]["d"])
    assert m["support"]["d"] == 0
    expected = np.zeros((4, 4), dtype=int)
    for t, p in zip(y_true, y_pred):
        expected[t, p] += 1
    np.testing.assert_array_equal(m["confusion"], expected)


def test_confusion_covers_labels_absent_everywhere():
    m = compute_metrics([0, 1], [0, 1], ["a", "b", "c"])
    assert m["confusion"].shape == (3, 3)
    assert m["confusion"][2].sum() == 0 and m["confusion"][:, 2].sum() == 0
    assert m["uar"] == pytest.approx(1.0)


@pytest.mark.parametrize("y_true, y_pred", [([0, 3], [0, 1]), ([0, 1], [0, -1]), ([0, 1], [0])])
def test_compute_metrics_rejects_bad_indices(y_true, y_pred):
    with pytest.raises(ValueError):
        compute_metrics(y_true, y_pred, LABELS3)


def test_summarise_folds_against_numpy():
    rng = np.random.default_rng(1)
    folds = []
    for _ in range(4):
        y_true = rng.integers(0, 3, 40)
        y_pred = np.where(rng.random(40) < 0.6, y_true, rng.integers(0, 3, 40))
        folds.append(compute_metrics(y_true, y_pred, LABELS3))
    summary = summarise_folds(folds)
    for key in ("war", "uar", "macro_f1", "macro_precision", "macro_recall"):
        values = np.array([f[key] for f in folds])
        assert summary[key]["mean"] == pytest.approx(values.mean())
        assert summary[key]["std"] == pytest.approx(values.std(ddof=0))
    np.testing.assert_array_equal(summary["confusion"], sum(f["confusion"] for f in folds))
    assert summary["n_folds"] == 4


def test_classification_report_frame():
    frame = classification_report_frame(Y_TRUE3, Y_PRED3, LABELS3)
    assert list(frame.columns) == ["precision", "recall", "f1-score", "support"]
    assert list(frame.index[:3]) == LABELS3
    assert {"accuracy", "macro avg", "weighted avg"} <= set(frame.index)
    assert frame.loc["a", "precision"] == pytest.approx(1.0)
    assert frame.loc["a", "recall"] == pytest.approx(3 / 4)
    assert frame.loc["c", "precision"] == pytest.approx(3 / 4)
    assert frame.loc["accuracy", "f1-score"] == pytest.approx(0.8)
    assert frame.loc["b", "support"] == 3


# --------------------------------------------------------------------------- reports

def _fold_results():
    # fold 1: the hand example; fold 2: class c absent from the truth (predicted once),
    # confusion [[1,1,0],[0,1,1],[0,0,0]]: WAR 2/4, recall a = 1/2, b = 1/2, c undefined
    fold2_true, fold2_pred = [0, 0, 1, 1], [0, 1, 1, 2]
    return [
        dict(fold=1, metrics=compute_metrics(Y_TRUE3, Y_PRED3, LABELS3),
             y_true=np.array(Y_TRUE3), y_pred=np.array(Y_PRED3), epochs=12, seconds=3.5,
             history={"loss": [1.0]}),
        dict(fold=2, metrics=compute_metrics(fold2_true, fold2_pred, LABELS3),
             y_true=np.array(fold2_true), y_pred=np.array(fold2_pred), epochs=20, seconds=4.5,
             history={"loss": [1.0]}),
    ]


def test_experiment_workbook(tmp_path):
    path = tmp_path / "experiment.xlsx"
    note = "Model selection on a validation split from the training folds"
    config = {"learning_rate": 0.001, "model": {"name": "cnn", "filters": [32, 64]}}
    write_experiment_workbook(path, _fold_results(), LABELS3, note, config)

    assert sorted(p.name for p in tmp_path.iterdir()) == ["experiment.xlsx"]  # no temp files
    book = openpyxl.load_workbook(path)
    assert book.sheetnames == ["summary", "per_class_recall", "fold_01", "fold_02", "config"]

    summary = pd.read_excel(path, sheet_name="summary")
    assert list(summary.columns[:8]) == ["fold", "WAR", "UAR", "macro-F1", "macro precision",
                                         "macro recall", "epochs", "seconds"]
    assert "history" not in summary.columns          # non-scalar extras are ignored
    folds = summary.iloc[:2]
    mean_row = summary[summary["fold"] == "mean"].iloc[0]
    std_row = summary[summary["fold"] == "std"].iloc[0]
    assert list(folds["fold"]) == [1, 2]
    # fold 1 WAR 8/10, fold 2 WAR 2/4; UAR 29/36 and (1/2 + 1/2) / 2 (c absent, left out)
    assert folds["WAR"].astype(float).tolist() == pytest.approx([0.8, 0.5])
    assert folds["UAR"].astype(float).tolist() == pytest.approx([29 / 36, 0.5])
    for column in ["WAR", "UAR", "macro-F1", "macro precision", "macro recall", "epochs",
                   "seconds"]:
        values = folds[column].astype(float).to_numpy()
        assert float(mean_row[column]) == pytest.approx(values.mean())
        assert float(std_row[column]) == pytest.approx(values.std(ddof=0))
    assert float(mean_row["WAR"]) == pytest.approx(0.65)
    assert float(mean_row["epochs"]) == pytest.approx(16)

    cells = {c.value for row in book["summary"].iter_rows() for c in row if c.value is not None}
    assert note in cells
    assert "model.name" in cells and "cnn" in cells

    # per-class recall: fold 1 a=3/4 b=2/3 c=1; fold 2 a=1/2 b=1/2 c absent (blank),
    # so the mean of c is fold 1's alone
    recall = pd.read_excel(path, sheet_name="per_class_recall")
    assert list(recall.columns) == ["fold", *LABELS3]
    assert recall.iloc[-1]["fold"] == "mean"
    assert float(recall.iloc[-1]["a"]) == pytest.approx((3 / 4 + 1 / 2) / 2)
    assert float(recall.iloc[-1]["b"]) == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert math.isnan(float(recall.iloc[1]["c"]))
    assert float(recall.iloc[-1]["c"]) == pytest.approx(1.0)

    # fold sheet: confusion matrix below the report, class names as headers
    sheet = book["fold_01"]
    title = [c for row in sheet.iter_rows() for c in row if c.value == CONFUSION_TITLE]
    assert len(title) == 1
    header_row = title[0].row + 1
    assert [sheet.cell(header_row, col).value for col in range(2, 5)] == LABELS3
    for i, name in enumerate(LABELS3):
        assert sheet.cell(header_row + 1 + i, 1).value == name
        assert [sheet.cell(header_row + 1 + i, col).value for col in range(2, 5)] == \
            CM3[i].tolist()
    assert title[0].row > 8  # below the 3 class rows + 3 summary rows of the report

    config_sheet = pd.read_excel(path, sheet_name="config")
    as_dict = dict(zip(config_sheet["key"], config_sheet["value"]))
    assert as_dict["learning_rate"] == pytest.approx(0.001)
    assert as_dict["model.filters"] == "[32, 64]"


def test_workbook_rejects_duplicate_folds(tmp_path):
    results = _fold_results()
    results[1]["fold"] = 1
    with pytest.raises(ValueError):
        write_experiment_workbook(tmp_path / "x.xlsx", results, LABELS3, "", {})
    assert list(tmp_path.iterdir()) == []


def test_write_predictions_csv(tmp_path):
    frame = pd.DataFrame({"file": ["x.wav", "y.wav"], "y_true": [0, 1], "y_pred": [1, 1]})
    write_predictions_csv(tmp_path / "pred.csv", frame)
    assert [p.name for p in tmp_path.iterdir()] == ["pred.csv"]
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "pred.csv"), frame)


def test_format_summary_line():
    summary = {"war": {"mean": 0.9123, "std": 0.021}, "uar": {"mean": 0.905, "std": 0.023},
               "macro_f1": {"mean": 0.901, "std": 0.022}}
    assert format_summary_line(summary) == \
        "WAR 91.23 +/- 2.10 | UAR 90.50 +/- 2.30 | macro-F1 90.10 +/- 2.20"
    # a single fold's compute_metrics dict prints without the spread
    assert format_summary_line(compute_metrics(Y_TRUE3, Y_PRED3, LABELS3)) == \
        "WAR 80.00 | UAR 80.56 | macro-F1 79.37"


def test_markdown_table_shape():
    frame = pd.DataFrame({"method": ["cnn", "a|b"], "uar": [0.5, np.nan], "n": [3, 4]})
    lines = markdown_table(frame).splitlines()
    assert len(lines) == 2 + len(frame)
    assert lines[0] == "| method | uar | n |"
    assert lines[1] == "| --- | ---: | ---: |"
    assert lines[2] == "| cnn | 0.5000 | 3 |"
    assert lines[3] == "| a\\|b |  | 4 |"
    indexed = markdown_table(frame.set_index("method")).splitlines()
    assert indexed[0] == "| method | uar | n |" and indexed[2].startswith("| cnn |")


# --------------------------------------------------------------------------- plots

def _assert_png(path: Path, min_bytes: int = 2000):
    data = Path(path).read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > min_bytes


def test_plots_write_png(tmp_path):
    written = [
        plot_confusion_matrix(CM3, LABELS3, tmp_path / "cm.png", title="cm"),
        plot_confusion_matrix(np.zeros((3, 3)), LABELS3, tmp_path / "cm_zero.png",
                              normalize=True),
        plot_confusion_matrix(CM3, LABELS3, tmp_path / "cm_counts.png", normalize=False),
        plot_training_curves({"loss": [1.0, 0.5, 0.3], "val_loss": [1.1, 0.7],
                              "accuracy": [0.3, 0.6, 0.8], "val_accuracy": [0.2, 0.5, 0.6, 0.7],
                              "lmmd_loss": [0.4]}, tmp_path / "curves.png", title="fold 1"),
        plot_per_class_recall(pd.DataFrame({"cnn": [0.5, 0.7, np.nan], "dann": [0.6, 0.8, 0.9]},
                                           index=LABELS3), tmp_path / "recall.png"),
        plot_metric_vs_param(pd.DataFrame({"lr": [1e-3, 1e-3, 1e-2, 1e-4],
                                           "uar": [0.5, 0.6, 0.7, 0.4]}),
                             "lr", "uar", tmp_path / "param.png"),
        plot_metric_vs_param(pd.DataFrame({"opt": ["adam", "sgd", "adam"],
                                           "uar": [0.5, 0.6, 0.7]}),
                             "opt", "uar", tmp_path / "param_cat.png"),
    ]
    for path in written:
        assert Path(path).parent == tmp_path
        _assert_png(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(Path(p).name for p in written)


def test_plot_confusion_matrix_shape_mismatch(tmp_path):
    with pytest.raises(ValueError):
        plot_confusion_matrix(CM3, ["a", "b"], tmp_path / "bad.png")
    assert list(tmp_path.iterdir()) == []


def test_tsne_two_domains_small_n(tmp_path):
    rng = np.random.default_rng(0)
    n = 20
    embeddings = rng.normal(size=(n, 8)) + np.repeat(np.arange(2), n // 2)[:, None]
    labels = np.array(["happy", "sad"] * (n // 2))
    domains = np.array(["source"] * (n // 2) + ["target"] * (n // 2))
    path = plot_tsne(embeddings, labels, domains, tmp_path / "tsne.png", title="t", seed=0)
    _assert_png(path)
    assert [p.name for p in tmp_path.iterdir()] == ["tsne.png"]


def test_tsne_subsamples_to_max_points(tmp_path):
    rng = np.random.default_rng(0)
    path = plot_tsne(rng.normal(size=(60, 4)), np.array(list("ab") * 30), None,
                     tmp_path / "tsne.png", max_points=25)
    _assert_png(path)


def test_utils_do_not_import_tensorflow():
    code = ("import sys; import src.utils.metrics, src.utils.reports, src.utils.plots; "
            "print('tensorflow' in sys.modules or 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "False"


def test_per_class_recall_of_a_resumed_fold_reads_absent_classes_as_nan():
    """A fold's result.json stores NaN recall (class absent from a LOSO test speaker) as null;
    the report of a resumed run reads it back as None and must treat it as NaN."""
    from src.utils.reports import per_class_recall_frame

    fresh = compute_metrics(np.array([0, 0, 1]), np.array([0, 1, 1]), labels=["a", "b", "c"])
    assert math.isnan(fresh["per_class_recall"]["c"])
    resumed = {"per_class_recall": {**fresh["per_class_recall"], "c": None}}
    frame = per_class_recall_frame([{"fold": 1, "metrics": fresh},
                                    {"fold": 2, "metrics": resumed}], ["a", "b", "c"])
    rows = frame[frame["fold"] != "mean"]
    assert rows["a"].tolist() == [0.5, 0.5] and rows["b"].tolist() == [1.0, 1.0]
    assert rows["c"].isna().all()


def test_test_fold_monitoring_reports_the_best_test_epoch_beside_the_honest_last_epoch():
    """--val_policy test_fold on a fixed schedule keeps the last epoch (honest figures) and the
    report adds each fold's best test-fold epoch (TIM-Net's published protocol) beside it."""
    from src.training.report import (TEST_FOLD_MONITOR_NOTE, TEST_FOLD_NOTE,
                                     best_epoch_on_test_fold, selection_note)

    assert selection_note({"val_policy": "test_fold", "patience": 0}) == TEST_FOLD_MONITOR_NOTE
    assert selection_note({"val_policy": "test_fold", "patience": 10}) == TEST_FOLD_NOTE
    results = [{"history": {"val_accuracy": [0.5, 0.75, 0.625]}},
               {"history": {"val_accuracy": [0.25, 0.5, 1.0]}},
               {"history": {"accuracy": [0.9]}}]  # a fold without the monitor is left out
    best = best_epoch_on_test_fold(results)
    assert best["test_fold_best_war"] == [75.0, 100.0]
    assert best["test_fold_best_epoch"] == [2, 3]
    assert best["test_fold_best_war_mean"] == pytest.approx(87.5)
    assert best["test_fold_best_war_std"] == pytest.approx(np.std([75.0, 100.0]))
    assert best_epoch_on_test_fold([{"history": {}}, {}]) == {}
