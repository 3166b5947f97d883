"""Cross-corpus CLI: train-lmmd on synthetic corpora, target labels unused, test-cross-corpus."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from src.data_processing.run_data_processing import main as extract_main
from src.training.main import main as train_main
from tests.synthetic import TINY, write_emodb_like, write_shifted_manifest

TARGET = "SHIFTED"


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> Path:
    """EMODB-named source and a pitch-shifted, noisier CSV target, features extracted."""
    base = tmp_path_factory.mktemp("da")
    source = write_emodb_like(base / "source")
    manifest = write_shifted_manifest(base / "target", scale=1.1, noise=0.03)
    features = base / "features"
    assert extract_main(["--dataset", "EMODB", "--raw_dir", str(source), "--features_root",
                         str(features), "--workers", "1", "--no_progress"]) == 0
    assert extract_main(["--dataset", "CSV", "--manifest", str(manifest), "--name", TARGET,
                         "--features_root", str(features), "--workers", "1",
                         "--no_progress"]) == 0
    return features


def run(features: Path, out: Path, *args: str) -> int:
    return train_main(["--data", "EMODB", "--target_data", TARGET, "--features_root",
                       str(features), "--results_root", str(out / "results"), "--models_root",
                       str(out / "models"), *args])


def fold_weights(out: Path, run_id: str) -> list[np.ndarray]:
    import keras

    import src.models.model  # noqa: F401

    model = keras.models.load_model(out / "models" / "EMODB" / "MFCC" / run_id / "fold_01" /
                                    "model.keras")
    return [np.asarray(w) for w in model.get_weights()]


def permute_target_labels(features: Path, dest: Path, seed: int = 3) -> Path:
    """Copy of the feature store whose target metadata has its labels shuffled."""
    shutil.copytree(features, dest)
    for meta in (dest / TARGET).glob("*/*/metadata.csv"):
        frame = pd.read_csv(meta)
        shuffled = np.random.default_rng(seed).permutation(frame["label"].to_numpy())
        assert (shuffled != frame["label"].to_numpy()).any()
        frame["label"] = shuffled
        frame.to_csv(meta, index=False)
    return dest


@pytest.mark.parametrize("method", ["lmmd", "dann"])
def test_target_labels_are_never_read_in_training(corpora, tmp_path, method):
    args = ["--mode", "train-lmmd", "--da_method", method, "--epoch", "2", "--split_fold", "3",
            "--max_folds", "1", "--run_id", "same", *TINY]
    permuted = permute_target_labels(corpora, tmp_path / "permuted")
    assert run(corpora, tmp_path / "a", *args) == 0
    assert run(permuted, tmp_path / "b", *args) == 0
    for wa, wb in zip(fold_weights(tmp_path / "a", "same"), fold_weights(tmp_path / "b", "same")):
        np.testing.assert_array_equal(wa, wb)


def test_train_lmmd_writes_target_and_source_reports(corpora, tmp_path):
    assert run(corpora, tmp_path, "--mode", "train-lmmd", "--epoch", "2", "--split_fold", "3",
               "--max_folds", "2", "--run_id", "da", "--visualize", *TINY) == 0
    result = tmp_path / "results" / "da"
    metrics = json.loads((result / "metrics.json").read_text())
    assert metrics["target_data"] == TARGET and metrics["da_method"] == "lmmd"
    assert metrics["n_folds"] == 2
    assert metrics["class_names"] == ["angry", "neutral", "sad"]
    folds = [json.loads((tmp_path / "models" / "EMODB" / "MFCC" / "da" / f"fold_0{k}" /
                         "result.json").read_text())["target"] for k in (1, 2)]
    mean_probs = (np.asarray(folds[0]["probs"]) + np.asarray(folds[1]["probs"])) / 2
    y_true = np.asarray(folds[0]["y_true"])
    ensemble_war = float(np.mean(mean_probs.argmax(axis=1) == y_true))
    assert metrics["ensemble"]["war"] == pytest.approx(ensemble_war, abs=1e-12)
    predictions = pd.read_csv(result / "predictions.csv")
    assert len(predictions) == 2 * 18  # every target file, once per fold
    assert (result / "source" / "report.xlsx").is_file()
    for name in ("report.xlsx", "tsne_before.png", "tsne_after.png"):
        assert (result / name).is_file()
    history = json.loads((tmp_path / "models" / "EMODB" / "MFCC" / "da" / "fold_01" /
                          "result.json").read_text())["history"]
    assert {"cls_loss", "da_loss", "lambda"} <= set(history)
    assert history["lambda"][0] < history["lambda"][-1] <= 1.0
    logged = pd.read_csv(tmp_path / "models" / "EMODB" / "MFCC" / "da" / "fold_01" /
                         "history.csv")
    np.testing.assert_allclose(logged["da_loss"], history["da_loss"], rtol=1e-6)

    # the adapted models evaluate on the target corpus through test-cross-corpus as well
    model_dir = tmp_path / "models" / "EMODB" / "MFCC" / "da"
    assert run(corpora, tmp_path, "--mode", "test-cross-corpus", "--test_path",
               str(model_dir)) == 0
    again = json.loads((tmp_path / "results" / "da-on-SHIFTED" / "metrics.json").read_text())
    assert again["war_mean"] == pytest.approx(metrics["war_mean"], abs=1e-9)


def test_adaptation_folds_shared_between_processes_match_one_process(corpora, tmp_path, capsys):
    """--folds in train-lmmd: the listed fold equals that fold of a one-process run; a fold
    finished by another process is read back, not retrained, and reaches the report."""
    args = ["--mode", "train-lmmd", "--epoch", "2", "--split_fold", "3", "--max_folds", "2",
            *TINY]
    assert run(corpora, tmp_path, *args, "--run_id", "whole") == 0
    assert run(corpora, tmp_path, *args, "--run_id", "shared", "--folds", "2") == 0
    root = tmp_path / "models" / "EMODB" / "MFCC"
    assert sorted(p.name for p in (root / "shared").glob("fold_*")) == ["fold_02"]
    partial = json.loads((tmp_path / "results" / "shared" / "metrics.json").read_text())
    assert (partial["n_folds"], partial["n_folds_total"], partial["complete"]) == (1, 2, False)
    a = json.loads((root / "whole" / "fold_02" / "result.json").read_text())
    b = json.loads((root / "shared" / "fold_02" / "result.json").read_text())
    assert a["target"]["probs"] == b["target"]["probs"]

    shutil.copytree(root / "whole" / "fold_01", root / "shared" / "fold_01")  # "the other process"
    capsys.readouterr()
    assert run(corpora, tmp_path, *args, "--run_id", "shared", "--folds", "2") == 0
    assert "fold  2/2: already finished (target UAR" in capsys.readouterr().out
    whole = json.loads((tmp_path / "results" / "whole" / "metrics.json").read_text())
    shared = json.loads((tmp_path / "results" / "shared" / "metrics.json").read_text())
    assert shared["n_folds"] == 2 and shared["complete"] is True
    assert shared["uar_mean"] == pytest.approx(whole["uar_mean"], abs=1e-12)


def test_da_warmup_keeps_the_domain_loss_off_for_its_epochs(corpora, tmp_path):
    assert run(corpora, tmp_path, "--mode", "train-lmmd", "--epoch", "4", "--da_warmup", "2",
               "--split_fold", "3", "--max_folds", "1", "--run_id", "warm", "--val_fraction",
               "0", *TINY) == 0
    fold = tmp_path / "models" / "EMODB" / "MFCC" / "warm" / "fold_01"
    assert json.loads((fold / "split.json").read_text())["val"] == []  # --val_fraction 0
    history = json.loads((fold / "result.json").read_text())["history"]
    assert history["lambda"][:2] == [0.0, 0.0]
    assert 0.0 < history["lambda"][2] < history["lambda"][3] <= 1.0


def test_da_warmup_must_leave_epochs_to_adapt(corpora, tmp_path, capsys):
    with pytest.raises(SystemExit):
        run(corpora, tmp_path, "--mode", "train-lmmd", "--epoch", "3", "--da_warmup", "3", *TINY)
    assert "--da_warmup" in capsys.readouterr().err


def test_label_set_outside_the_shared_labels_is_a_clear_error(corpora, tmp_path, capsys):
    assert run(corpora, tmp_path, "--mode", "train-lmmd", "--label_set", "angry,boredom",
               *TINY) == 2
    err = capsys.readouterr().err
    assert "--label_set" in err and "boredom" in err and "Traceback" not in err


@pytest.fixture(scope="module")
def quiet_target(tmp_path_factory) -> Path:
    """The EMODB-named source and a target recorded 14 dB quieter (a channel-gain shift: after
    the source's standardisation every target frame's energy coefficient sits far off)."""
    base = tmp_path_factory.mktemp("gain")
    source = write_emodb_like(base / "source")
    manifest = write_shifted_manifest(base / "target", scale=1.0, noise=0.0, per_class=12,
                                      gain=0.2)
    features = base / "features"
    for args in (["--dataset", "EMODB", "--raw_dir", str(source)],
                 ["--dataset", "CSV", "--manifest", str(manifest), "--name", TARGET]):
        assert extract_main([*args, "--features_root", str(features), "--workers", "1",
                             "--no_progress"]) == 0
    return features


def test_lmmd_recovers_target_accuracy_lost_without_adaptation(quiet_target, tmp_path):
    """Same seed, same folds: the unadapted model loses accuracy on the quiet target, the
    LMMD-adapted one (target labels unused) gets most of it back. Seed 1 is one where the
    shift hurts; on seeds where it does not, LMMD can cost accuracy (README, issue 5 note)."""
    war = {}
    for method in ("none", "lmmd"):
        assert run(quiet_target, tmp_path, "--mode", "train-lmmd", "--da_method", method,
                   "--epoch", "15", "--split_fold", "3", "--max_folds", "2", "--run_id", method,
                   *TINY, "--batch_size", "16", "--lmmd_weight", "0.3",
                   "--random_seed", "1") == 0
        metrics = json.loads((tmp_path / "results" / method / "metrics.json").read_text())
        assert metrics["source"]["war_mean"] > 0.95  # the source task itself is learnt
        war[method] = metrics["war_mean"]
    assert war["none"] < 0.8  # the shift costs the unadapted model
    assert war["lmmd"] > war["none"] + 0.15


def test_balanced_batches_draw_the_source_only(corpora, tmp_path, monkeypatch):
    """--balanced_batches resamples the labelled source; the target order never uses labels."""
    import src.training.data as data_module

    drawn = []
    original = data_module.class_balanced_draw

    def recording_draw(labels, rng):
        drawn.append(len(labels))
        return original(labels, rng)

    monkeypatch.setattr(data_module, "class_balanced_draw", recording_draw)
    assert run(corpora, tmp_path, "--mode", "train-lmmd", "--epoch", "2", "--balanced_batches",
               "--split_fold", "3", "--max_folds", "1", "--run_id", "bal", *TINY) == 0
    split = json.loads((tmp_path / "models" / "EMODB" / "MFCC" / "bal" / "fold_01" /
                        "split.json").read_text())
    assert drawn and set(drawn) == {len(split["train"])}  # every draw: the source training split


def test_collapse_warning_only_when_adaptation_leaves_one_predicted_class():
    from src.training.adaptation import collapse_warning
    from src.training.config import RunConfig

    collapsed, healthy = np.array([2, 2, 2, 2]), np.array([2, 0, 2, 1])
    message = collapse_warning(collapsed, 3, RunConfig(da_method="lmmd", lmmd_weight=1.0))
    assert "lmmd term" in message and "--lmmd_weight 1.0" in message
    assert collapse_warning(healthy, 3, RunConfig(da_method="lmmd")) is None
    assert collapse_warning(collapsed, 3, RunConfig(da_method="none")) is None  # no DA term
    assert collapse_warning(collapsed, 1, RunConfig(da_method="dann")) is None


def _guarded_run(accuracies: list[float], n_classes: int = 5):
    """Feed `collapse_guard` one epoch per accuracy; before epoch i every weight is set to i, so
    the restored weights say which epoch they came from. Returns (guard, model, epochs run)."""
    import keras

    from src.training.adaptation import collapse_guard

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    guard = collapse_guard(n_classes)
    guard.set_model(model)
    model.stop_training = False  # as Model.fit does
    guard.on_train_begin()
    epochs = 0
    for epoch, accuracy in enumerate(accuracies):
        model.set_weights([np.full_like(w, epoch) for w in model.get_weights()])
        guard.on_epoch_end(epoch, {"accuracy": accuracy})
        epochs += 1
        if model.stop_training:
            break
    return guard, model, epochs


def test_collapse_guard_restores_last_healthy_epoch_and_stops():
    # the E->R --lmmd_weight 1.0 fold 1 shape: 0.97 at best, 0.92 (healthy), 0.83, then 0.41
    guard, model, epochs = _guarded_run([0.43, 0.75, 0.97, 0.92, 0.83, 0.41, 0.15, 0.31])
    assert epochs == 6 and model.stop_training
    assert (guard.collapsed_epoch, guard.restored_epoch) == (6, 4)
    assert all((w == 3).all() for w in model.get_weights())  # weights of epoch 4 (index 3)


@pytest.mark.parametrize("accuracies", [
    [0.43, 0.75, 0.97, 0.70, 0.60, 0.95],   # a dip above 0.6 x best is not a collapse
    [0.20, 0.28, 0.15, 0.10, 0.12, 0.25],   # never above chance: nothing to protect
])
def test_collapse_guard_leaves_healthy_or_chance_runs_alone(accuracies):
    guard, model, epochs = _guarded_run(accuracies)
    assert epochs == len(accuracies) and not model.stop_training
    assert guard.collapsed_epoch is None and guard.restored_epoch is None
    last = len(accuracies) - 1
    assert all((w == last).all() for w in model.get_weights())
