"""Cross-corpus training with utterance-level models (mlp / logreg on openSMILE functionals):
target labels unused, LMMD on the MLP embedding, speaker normalisation, label-free selection."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from src.data_processing.run_data_processing import main as extract_main
from src.training.adaptation import fit_adapted, label_free_score, load_domain
from src.training.config import RunConfig
from src.training.data import SERData
from src.training.estimators import KerasEstimator
from src.training.fitting import seed_everything
from src.training.main import main as train_main
from tests.synthetic import write_emodb_like, write_shifted_manifest

pytest.importorskip("opensmile")
TARGET = "SHIFTED"
FAST = ["--batch_size", "8", "--lr", "3e-3", "--patience", "0", "--verbose", "0",
        "--mlp_units", "16,8", "--split_fold", "3", "--max_folds", "1"]


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> Path:
    """EMODB-named source and a pitch-shifted CSV target with eGeMAPS functionals."""
    base = tmp_path_factory.mktemp("da_utt")
    source = write_emodb_like(base / "source")
    manifest = write_shifted_manifest(base / "target", scale=1.1, noise=0.03)
    features = base / "features"
    for args in (["--dataset", "EMODB", "--raw_dir", str(source)],
                 ["--dataset", "CSV", "--manifest", str(manifest), "--name", TARGET]):
        assert extract_main([*args, "--features_root", str(features), "--features", "eGeMAPS",
                             "--workers", "1", "--no_progress"]) == 0
    return features


def run(features: Path, out: Path, *args: str) -> int:
    return train_main(["--data", "EMODB", "--target_data", TARGET, "--features_root",
                       str(features), "--results_root", str(out / "results"), "--models_root",
                       str(out / "models"), "--feature_type", "eGeMAPS", *args])


def permuted_target_copy(corpora: Path, dest: Path, seed: int) -> Path:
    """A copy of the feature store whose target labels are shuffled."""
    shutil.copytree(corpora, dest)
    for meta in (dest / TARGET).glob("*/*/metadata.csv"):
        frame = pd.read_csv(meta)
        frame["label"] = np.random.default_rng(seed).permutation(frame["label"].to_numpy())
        frame.to_csv(meta, index=False)
    return dest


@pytest.mark.parametrize("extra", [[], ["--lmmd_targets", "teacher"]],
                         ids=["own-predictions", "logreg-teacher"])
def test_mlp_adaptation_never_reads_target_labels(corpora, tmp_path, extra):
    import keras

    dest = permuted_target_copy(corpora, tmp_path / "permuted", seed=3)
    args = ["--mode", "train-lmmd", "--model", "mlp", "--epoch", "3", "--speaker_norm",
            "--run_id", "same", *FAST, *extra]
    assert run(corpora, tmp_path / "a", *args) == 0
    assert run(dest, tmp_path / "b", *args) == 0
    load = [keras.models.load_model(tmp_path / side / "models" / "EMODB" / "eGeMAPS" / "same" /
                                    "fold_01" / "model.keras") for side in ("a", "b")]
    for wa, wb in zip(load[0].get_weights(), load[1].get_weights()):
        np.testing.assert_array_equal(wa, wb)


def _affine_domain(rng, angle_deg: float, shift: float, name: str) -> SERData:
    """Three Gaussian classes in 4-D; the target rotates them by `angle_deg` in the first plane
    and shifts them by `shift` along it (a per-domain affine map of the class clusters)."""
    means = np.array([[3, 0, 0, 0], [0, 3, 0, 0], [-3, -3, 0, 0]], float)
    x = np.concatenate([m + 0.8 * rng.standard_normal((60, 4)) for m in means])
    labels = np.repeat(np.arange(3), 60).astype(np.int32)
    a = np.deg2rad(angle_deg)
    rotation = np.eye(4)
    rotation[:2, :2] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
    x = x @ rotation.T + np.array([shift, shift, 0, 0])
    meta = pd.DataFrame({"file_id": [f"{name}{i}" for i in range(len(x))], "speaker": "",
                         "label": labels.astype(str)})
    return SERData(name, {"eGeMAPS": x[:, None, :].astype(np.float32)},
                   np.ones(len(x), np.int32), labels, ["0", "1", "2"], meta,
                   {"eGeMAPS": {"smile_level": "functionals"}}, {})


def test_lmmd_on_the_mlp_recovers_an_affine_class_shift():
    rng = np.random.default_rng(0)
    source, target = _affine_domain(rng, 0, 0, "s"), _affine_domain(rng, 40, 2.0, "t")
    accuracy = {}
    for method in ("none", "lmmd"):
        cfg = RunConfig(model="mlp", mlp_units="32,16", mlp_dropout=0.0, epoch=30,
                        batch_size=32, lr=3e-3, patience=0, verbose=0, da_method=method,
                        lmmd_weight=0.3, val_fraction=0)
        seed_everything(1)
        estimator = KerasEstimator(cfg, source.class_names)
        fit_adapted(estimator.build(source), source, None, target, cfg, 1, None)
        assert (estimator.predict_proba(source).argmax(1) == source.labels).mean() > 0.95
        accuracy[method] = (estimator.predict_proba(target).argmax(1) == target.labels).mean()
    assert accuracy["none"] < 0.75  # the shift costs the unadapted MLP
    assert accuracy["lmmd"] > accuracy["none"] + 0.15


def test_teacher_probabilities_are_lmmds_target_weights():
    """With --lmmd_targets teacher the target batches carry the teacher's probabilities, and
    the LMMD term of a training step is computed with them, not with the model's own."""
    import keras

    from src.models.adaptation import DomainAdaptationTrainer
    from src.models.lmmd_loss import lmmd_loss
    from src.training.data import make_dataset

    rng = np.random.default_rng(0)
    source, target = _affine_domain(rng, 0, 0, "s"), _affine_domain(rng, 40, 2.0, "t")
    teacher = rng.dirichlet(np.ones(3), size=target.n).astype(np.float32)
    cfg = RunConfig(model="mlp", mlp_units="16,8", mlp_dropout=0.0, verbose=0, val_fraction=0)
    seed_everything(1)
    classifier = KerasEstimator(cfg, source.class_names).build(source)
    xs, ys = next(iter(make_dataset(source, 32, 0, 3, training=True)))
    xt, qt = next(iter(make_dataset(target, 32, 1, 3, training=True, soft_labels=teacher)))
    vectors = target.streams["eGeMAPS"][:, 0]
    batch_rows = [int(np.flatnonzero((vectors == row).all(1))[0])
                  for row in xt["eGeMAPS"].numpy()[:, 0]]
    np.testing.assert_allclose(qt.numpy(), teacher[batch_rows])  # the teacher's rows, in order
    embed = keras.Model(classifier.inputs, [classifier.get_layer("embedding").output,
                                            classifier.output])
    (es, _), (et, pt) = embed(xs), embed(xt)
    trainer = DomainAdaptationTrainer(classifier, method="lmmd", weight=1.0, total_steps=1,
                                      label_smoothing=0.0)
    trainer.compile(optimizer=keras.optimizers.SGD(0.0))
    trainer.step.assign(1.0)  # past the ramp: lambda = 1
    logs = trainer.train_step(((xs, ys), (xt, qt)))
    expected = float(lmmd_loss(es, et, ys, qt))
    assert float(logs["da_loss"]) == pytest.approx(expected, rel=1e-4)
    assert abs(expected - float(lmmd_loss(es, et, ys, pt))) > 1e-3  # not the model's own


def test_target_speaker_norm_uses_speaker_ids_not_labels(corpora):
    cfg = RunConfig(data="EMODB", target_data=TARGET, feature_type="eGeMAPS",
                    features_root=str(corpora), speaker_norm=True)
    names = ["angry", "neutral", "sad"]
    target = load_domain(TARGET, cfg, names)
    vectors = target.streams["eGeMAPS"][:, 0]
    speakers = target.metadata["speaker"].to_numpy()
    assert len(set(speakers)) == 3
    for speaker in set(speakers):
        np.testing.assert_allclose(vectors[speakers == speaker].mean(0), 0, atol=1e-4)
    # the same statistics whatever the labels say: group by label would differ
    for label in set(target.labels):
        assert not np.allclose(vectors[target.labels == label].mean(0), 0, atol=1e-2)


def test_label_free_score_against_hand_computation():
    balanced = np.array([[0.9, 0.1], [0.1, 0.9]])
    assert label_free_score(0.8, balanced) == pytest.approx(0.8)  # mean [0.5, 0.5]: entropy 1
    one_class = np.array([[0.99, 0.01], [0.98, 0.02]])
    mean = one_class.mean(0)
    expected = 0.8 * -(mean * np.log(mean)).sum() / np.log(2)
    assert label_free_score(0.8, one_class) == pytest.approx(expected)
    assert label_free_score(0.8, one_class) < 0.2


def test_label_free_selection_keeps_the_best_scoring_epoch(corpora, tmp_path):
    assert run(corpora, tmp_path, "--mode", "train-lmmd", "--model", "mlp", "--epoch", "4",
               "--select_epoch", "label_free", "--run_id", "sel", *FAST) == 0
    fold = tmp_path / "models" / "EMODB" / "eGeMAPS" / "sel" / "fold_01"
    result = json.loads((fold / "result.json").read_text())
    scores = result["history"]["label_free_score"]
    assert len(scores) == 4 and result["selected_epoch"] == int(np.argmax(scores)) + 1
    logged = pd.read_csv(fold / "history.csv")
    np.testing.assert_allclose(logged["label_free_score"], scores, rtol=1e-6)
    metrics = json.loads((tmp_path / "results" / "sel" / "metrics.json").read_text())
    assert "label-free" in metrics["note"]


def test_classic_models_run_cross_corpus_without_adaptation_only(corpora, tmp_path, capsys):
    assert run(corpora, tmp_path, "--mode", "train-lmmd", "--model", "logreg",
               "--da_method", "lmmd", *FAST) == 2
    assert "--da_method none" in capsys.readouterr().err
    assert run(corpora, tmp_path, "--mode", "train-lmmd", "--model", "logreg", "--da_method",
               "none", "--speaker_norm", "--run_id", "lr", *FAST) == 0
    trained = json.loads((tmp_path / "results" / "lr" / "metrics.json").read_text())
    model_dir = tmp_path / "models" / "EMODB" / "eGeMAPS" / "lr"
    assert (model_dir / "fold_01" / "model.skops").is_file()
    assert run(corpora, tmp_path, "--mode", "test-cross-corpus", "--test_path",
               str(model_dir)) == 0
    again = json.loads((tmp_path / "results" / "lr-on-SHIFTED" / "metrics.json").read_text())
    assert again["uar_mean"] == pytest.approx(trained["uar_mean"], abs=1e-9)


def test_predicted_mix_balance_against_hand_computation():
    from src.training.callbacks import predicted_mix_balance

    assert predicted_mix_balance(np.eye(3)[[0, 1, 2, 0, 1, 2]]) == pytest.approx(1.0)
    assert predicted_mix_balance(np.eye(3)[[1, 1, 1, 1]]) == pytest.approx(0.0)
    mix = np.array([0.5, 0.25, 0.25])  # arg-max counts, not the mean probabilities
    probs = np.array([[0.4, 0.3, 0.3], [0.6, 0.2, 0.2], [0.2, 0.7, 0.1], [0.3, 0.3, 0.4]])
    assert predicted_mix_balance(probs) == pytest.approx(-(mix * np.log(mix)).sum() / np.log(3))


def test_label_free_C_keeps_the_most_balanced_target_mix_without_target_labels(corpora,
                                                                               tmp_path):
    from src.training.estimators import LABEL_FREE_C_GRID

    args = ["--mode", "train-lmmd", "--model", "logreg", "--da_method", "none",
            "--speaker_norm", "--select_C", "label_free", "--run_id", "lfc", *FAST]
    assert run(corpora, tmp_path, *args) == 0
    result = json.loads((tmp_path / "models" / "EMODB" / "eGeMAPS" / "lfc" / "fold_01" /
                         "result.json").read_text())
    selection = result["C_selection"]
    assert selection["C"] == list(LABEL_FREE_C_GRID)
    assert selection["selected_C"] == LABEL_FREE_C_GRID[int(np.argmax(selection["balance"]))]
    metrics = json.loads((tmp_path / "results" / "lfc" / "metrics.json").read_text())
    assert "C chosen without target labels" in metrics["note"]
    # the choice never reads target labels: permuting them leaves it unchanged
    dest = permuted_target_copy(corpora, tmp_path / "permuted", seed=4)
    assert run(dest, tmp_path / "p", *args) == 0
    again = json.loads((tmp_path / "p" / "models" / "EMODB" / "eGeMAPS" / "lfc" / "fold_01" /
                        "result.json").read_text())
    assert again["C_selection"] == selection


def test_label_free_C_needs_a_scikit_learn_model(corpora, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run(corpora, tmp_path, "--mode", "train-lmmd", "--model", "mlp", "--select_C",
            "label_free", *FAST)
    assert exit_info.value.code == 2
    assert "--select_C label_free needs" in capsys.readouterr().err


def test_mean_entropy_matches_numpy():
    import keras

    from src.models.adaptation import mean_entropy

    probs = np.array([[0.5, 0.5], [0.9, 0.1], [1.0, 0.0]], np.float32)
    expected = np.mean([-(p * np.log(p + 1e-8)).sum() for p in probs])
    assert float(keras.ops.convert_to_numpy(mean_entropy(probs))) == pytest.approx(expected,
                                                                                     rel=1e-5)


def test_target_entropy_term_is_trained_and_logged(corpora, tmp_path):
    assert run(corpora, tmp_path, "--mode", "train-lmmd", "--model", "mlp", "--epoch", "2",
               "--da_method", "none", "--target_entropy", "0.5", "--run_id", "ent", *FAST) == 0
    history = json.loads((tmp_path / "models" / "EMODB" / "eGeMAPS" / "ent" / "fold_01" /
                          "result.json").read_text())["history"]
    # the target passes through the model only for the entropy term (no domain term here)
    assert all(0 < h <= np.log(3) for h in history["target_entropy"])
    assert history["da_loss"] == [0.0, 0.0]


def test_balanced_pseudo_labels_against_hand_computation():
    from src.training.self_training import balanced_pseudo_labels, round_share

    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4]])  # argmax: all class 0
    index, labels = balanced_pseudo_labels(probs, 0.5)  # one file per class
    assert index.tolist() == [0, 3] and labels.tolist() == [0, 1]  # class 1: its most likely
    index, labels = balanced_pseudo_labels(probs, 1.0)
    assert index.tolist() == [0, 1, 2, 3] and labels.tolist() == [0, 0, 1, 1]
    assert balanced_pseudo_labels(probs, 0.2)[0].size == 0  # int(0.2 * 4 / 2) = 0 per class
    assert [round_share(r, 4) for r in (1, 2, 3, 4)] == pytest.approx([0.2, 0.4, 0.6, 0.8])


def test_pseudo_labelled_files_join_the_training_files_padded_and_relabelled():
    from src.training.self_training import with_pseudo_labelled

    rng = np.random.default_rng(0)
    train, target = _affine_domain(rng, 0, 0, "s"), _affine_domain(rng, 0, 0, "t")
    train.streams["MFCC"] = rng.standard_normal((train.n, 5, 2)).astype(np.float32)
    target.streams["MFCC"] = rng.standard_normal((target.n, 7, 2)).astype(np.float32)
    joined = with_pseudo_labelled(train, target, np.array([4, 2]), np.array([1, 0]))
    assert joined.n == train.n + 2 and joined.streams["MFCC"].shape == (train.n + 2, 7, 2)
    np.testing.assert_array_equal(joined.streams["MFCC"][:train.n, 5:], 0)  # padded
    np.testing.assert_array_equal(joined.streams["MFCC"][train.n:], target.streams["MFCC"][[4, 2]])
    np.testing.assert_array_equal(joined.streams["eGeMAPS"][train.n:],
                                  target.streams["eGeMAPS"][[4, 2]])
    assert joined.labels[train.n:].tolist() == [1, 0]
    assert joined.metadata["file_id"].tolist()[-2:] == ["t4", "t2"]
    assert joined.metadata["label"].tolist()[-2:] == ["1", "0"]  # the pseudo labels


def test_balanced_self_training_recovers_an_affine_class_shift(tmp_path):
    from src.training.adaptation import train_adapted_fold

    rng = np.random.default_rng(0)
    source, target = _affine_domain(rng, 0, 0, "s"), _affine_domain(rng, 40, 2.0, "t")
    everything, accuracy = np.arange(source.n), {}
    for rounds in (0, 3):
        cfg = RunConfig(model="logreg", da_method="none", self_training=rounds, C=1.0)
        result = train_adapted_fold(source, target, 1, everything, everything[:30], cfg,
                                    tmp_path / str(rounds))
        accuracy[rounds] = result["target"]["metrics"]["war"]
        assert [r["share"] for r in result["self_training"]] == \
            pytest.approx([r / (rounds + 1) for r in range(1, rounds + 1)])
    assert accuracy[0] < 0.8
    assert accuracy[3] > accuracy[0] + 0.1


def test_a_logreg_teacher_gives_the_first_pseudo_labels_of_an_svm_run(tmp_path):
    """--st_teacher logreg --self_training 1 with --model svm: the final svm is the one fitted
    on the source plus the balanced half of the target that a label-free-C logreg labels."""
    from src.training.adaptation import train_adapted_fold
    from src.training.estimators import make_estimator
    from src.training.self_training import balanced_pseudo_labels, with_pseudo_labelled

    rng = np.random.default_rng(3)
    source, target = _affine_domain(rng, 0, 0, "s"), _affine_domain(rng, 40, 2.0, "t")
    everything = np.arange(source.n)
    cfg = RunConfig(model="svm", da_method="none", self_training=1, st_teacher="logreg",
                    C=1.0, random_seed=0)
    result = train_adapted_fold(source, target, 1, everything, everything[:30], cfg, tmp_path)
    assert result["C_selection"]["selected_C"] in result["C_selection"]["C"]  # the teacher's
    teacher = make_estimator(RunConfig(model="logreg", select_C="label_free"),
                             source.class_names)
    teacher.fit_label_free(source, target, seed=1)  # seed = random_seed + fold
    index, labels = balanced_pseudo_labels(teacher.predict_proba(target), 0.5)
    student = make_estimator(cfg, source.class_names)
    student.fit(with_pseudo_labelled(source, target, index, labels), None, 1)
    np.testing.assert_allclose(result["target"]["probs"], student.predict_proba(target),
                               atol=1e-6)
    own = train_adapted_fold(source, target, 1, everything, everything[:30],
                             RunConfig(model="svm", da_method="none", self_training=1, C=1.0,
                                       random_seed=0), tmp_path / "self")
    assert own["C_selection"] is None  # without a teacher the svm labels round 1 itself
    assert own["target"]["probs"] != result["target"]["probs"]
