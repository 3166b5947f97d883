"""Late fusion of finished runs (src/experiments/late_fusion.py): weighted mean probabilities,
per-fold and pooled metrics of the fused predictions, and runs that cannot be fused."""
import json

import numpy as np
import pandas as pd
import pytest

from src.experiments.late_fusion import main as fusion_main

CLASSES = ["angry", "sad", "happy"]


def write_run(folder, probs, true, folds):
    folder.mkdir(parents=True)
    frame = pd.DataFrame({"fold": folds, "file_id": [f"f{i}" for i in range(len(true))],
                          "true": [CLASSES[t] for t in true],
                          "pred": [CLASSES[i] for i in probs.argmax(1)]})
    for j, name in enumerate(CLASSES):
        frame[f"p_{name}"] = probs[:, j]
    frame.sample(frac=1.0, random_state=0).to_csv(folder / "predictions.csv", index=False)
    return folder


def test_fused_probabilities_are_the_weighted_mean_and_metrics_follow(tmp_path, capsys):
    rng = np.random.default_rng(0)
    true = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    folds = np.array([1, 1, 1, 1, 2, 2, 2, 2])
    a, b = (rng.dirichlet(np.ones(3), size=8) for _ in range(2))
    runs = [write_run(tmp_path / "a", a, true, folds), write_run(tmp_path / "b", b, true, folds)]
    assert fusion_main([*map(str, runs), "--name", "ab", "--weights", "1,3",
                        "--results_root", str(tmp_path / "out")]) == 0
    fused = pd.read_csv(tmp_path / "out" / "ab" / "predictions.csv").sort_values("file_id")
    expected = (a + 3 * b) / 4
    np.testing.assert_allclose(fused[[f"p_{c}" for c in CLASSES]].to_numpy(), expected,
                               rtol=1e-6)
    pred = expected.argmax(1)
    assert list(fused["pred"]) == [CLASSES[i] for i in pred]
    metrics = json.loads((tmp_path / "out" / "ab" / "metrics.json").read_text())
    war = [np.mean(pred[folds == f] == true[folds == f]) for f in (1, 2)]
    assert metrics["war_mean"] == pytest.approx(np.mean(war))
    assert metrics["war_pooled"] == pytest.approx(np.mean(pred == true))
    recalls = [np.mean(pred[true == c] == c) for c in range(3)]
    assert metrics["uar_pooled"] == pytest.approx(np.mean(recalls))
    assert metrics["weights"] == [1.0, 3.0] and "ab:" in capsys.readouterr().out


@pytest.mark.parametrize("change,message", [
    (lambda f: f.assign(fold=f["fold"] + 1), "rows differ"),
    (lambda f: f.assign(true=f["true"].iloc[::-1].to_numpy()), "true labels differ"),
    (lambda f: f.rename(columns={"p_sad": "p_calm"}), "classes"),
])
def test_runs_of_other_folds_or_labels_are_refused_with_one_line(tmp_path, capsys, change,
                                                                 message):
    rng = np.random.default_rng(1)
    true, folds = np.array([0, 1, 2, 0]), np.array([1, 1, 2, 2])
    good = write_run(tmp_path / "good", rng.dirichlet(np.ones(3), size=4), true, folds)
    bad = write_run(tmp_path / "bad", rng.dirichlet(np.ones(3), size=4), true, folds)
    frame = pd.read_csv(bad / "predictions.csv")
    change(frame).to_csv(bad / "predictions.csv", index=False)
    assert fusion_main([str(good), str(bad), "--name", "x",
                        "--results_root", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and "bad" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "x").exists()
    assert fusion_main([str(good), str(tmp_path / "missing"), "--name", "x"]) == 2
    assert "no predictions.csv" in capsys.readouterr().err
