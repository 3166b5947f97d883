"""Training CLI end to end on synthetic audio: folds, train/test/predict, resumption, errors."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from src.training.data import (SERData, class_balanced_draw, length_sorted_batches,
                               make_dataset, mixup_partners, pad_sequences)
from src.training.experiment import make_folds, validation_split
from src.training.main import main as train_main
from tests.synthetic import TINY, cli


def fake_data(n=40, speakers=4, classes=3) -> SERData:
    lengths = np.arange(n) % 7 + 3
    meta = pd.DataFrame({"file_id": [f"f{i:03d}" for i in range(n)],
                         "speaker": [f"s{i % speakers}" for i in range(n)],
                         "label": [f"c{i % classes}" for i in range(n)]})
    return SERData("X", {"MFCC": np.zeros((n, 9, 2), np.float32)}, lengths.astype(np.int32),
                   (np.arange(n) % classes).astype(np.int32), [f"c{i}" for i in range(classes)],
                   meta, {}, {})


def test_kfold_splits_are_disjoint_and_cover_every_file():
    data = fake_data()
    folds = make_folds(data, "kfold", 5)
    tests = np.concatenate([test for _, test in folds])
    assert sorted(tests) == list(range(data.n))
    for train, test in folds:
        assert not set(train) & set(test)
        fit, val = validation_split(data, train, "kfold", 0.2, seed=1)
        assert not set(val) & set(test) and not set(fit) & set(val)
        assert sorted(np.concatenate([fit, val])) == sorted(train)


def test_loso_never_shares_a_speaker_between_train_and_test():
    data = fake_data(speakers=5)
    folds = make_folds(data, "loso", 10)
    assert len(folds) == 5
    for train, test in folds:
        assert len(set(data.speakers[test])) == 1
        assert not set(data.speakers[train]) & set(data.speakers[test])
        fit, val = validation_split(data, train, "loso", 0.25, seed=0)
        assert not set(data.speakers[val]) & set(data.speakers[fit])
    grouped = make_folds(data, "loso", 10, loso_groups=2)
    assert len(grouped) == 2


def test_length_sorted_batches_cover_indices_once():
    lengths = np.random.default_rng(0).integers(1, 100, size=53)
    for rng in (None, np.random.default_rng(1)):
        batches = length_sorted_batches(lengths, 8, rng)
        assert sorted(np.concatenate(batches)) == list(range(53))
    eval_batches = length_sorted_batches(lengths, 8, None)
    flat = np.concatenate(eval_batches)
    assert (np.diff(lengths[flat]) >= 0).all()


def test_class_balanced_draw_makes_every_class_equally_likely():
    labels = np.array([0] * 90 + [1] * 9 + [2] * 1)
    rng = np.random.default_rng(0)
    draws = np.concatenate([class_balanced_draw(labels, rng) for _ in range(300)])
    share = np.bincount(labels[draws], minlength=3) / len(draws)
    assert np.allclose(share, 1 / 3, atol=0.01), share  # a plain permutation: 0.90/0.09/0.01
    # within a class every file is equally likely: the lone class-2 file carries its third
    assert set(draws[labels[draws] == 2]) == {99}
    counts = np.bincount(draws[labels[draws] == 1], minlength=99)[90:99]
    assert counts.min() > 0.8 * counts.mean()


def test_balanced_batches_balance_training_epochs_only():
    n = 60
    labels = np.where(np.arange(n) < 50, 0, 1).astype(np.int32)  # 50 / 10
    data = SERData("X", {"MFCC": np.ones((n, 9, 2), np.float32)},
                   (np.arange(n) % 7 + 3).astype(np.int32), labels, ["a", "b"],
                   pd.DataFrame({"file_id": [f"f{i}" for i in range(n)]}), {}, {})

    def class_counts(**kwargs):
        dataset = make_dataset(data, 8, 3, 2, repeat=True, **kwargs).take(8 * 40)
        return sum(y.numpy().sum(axis=0) for _, y in dataset)

    balanced = class_counts(training=True, balanced=True)
    assert balanced.sum() == 40 * n  # an epoch still holds n files
    assert abs(balanced[1] / balanced.sum() - 0.5) < 0.03, balanced
    plain = class_counts(training=True)
    assert plain[1] / plain.sum() == pytest.approx(10 / 60)
    evaluation = sum(y.numpy().sum(axis=0)
                     for _, y in make_dataset(data, 8, None, 2, training=False, balanced=True))
    assert list(evaluation) == [50, 10]  # evaluation passes keep every file once


def test_mixup_batches_match_a_numpy_reference():
    """Mixed batch = w * file + (1 - w) * partner where both have frames, the file alone where
    only it has, the partner alone where only it has; labels mixed with w; length the longer."""
    n, t_max, seed = 24, 12, 5
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, t_max + 1, size=n).astype(np.int32)
    features = rng.normal(size=(n, t_max, 2)).astype(np.float32)
    features[:, :, 0] = np.arange(n)[:, None] + 1  # channel 0 names the file
    features[np.arange(t_max)[None, :] >= lengths[:, None]] = 0.0  # zero padded, as loaded
    labels = (np.arange(n) % 3).astype(np.int32)
    data = SERData("X", {"MFCC": features}, lengths, labels, ["a", "b", "c"],
                   pd.DataFrame({"file_id": [f"f{i}" for i in range(n)]}), {}, {})
    plain = list(make_dataset(data, 8, seed, 3, training=True))
    mixed = list(make_dataset(data, 8, seed, 3, training=True, mixup=0.4))
    mix_rng = np.random.default_rng([seed, 1])
    onehot = np.eye(3, dtype=np.float32)
    for (x, _), (xm, ym) in zip(plain, mixed):
        index = x["MFCC"].numpy()[:, 0, 0].astype(int) - 1  # same batch order as without mixup
        partner, w = mixup_partners(len(index), 0.4, mix_rng)
        assert ((w >= 0.5) & (w <= 1.0)).all()
        other = index[partner]
        t = x["MFCC"].shape[1]
        a, b = features[index, :t], features[other, :t]
        frames = np.arange(t)[None, :]
        own, theirs = frames < lengths[index, None], frames < lengths[other, None]
        weight = np.where(own & theirs, w[:, None], own.astype(np.float32))[:, :, None]
        np.testing.assert_allclose(xm["MFCC"].numpy(), weight * a + (1 - weight) * b, atol=1e-6)
        np.testing.assert_array_equal(xm["length"].numpy(),
                                      np.maximum(lengths[index], lengths[other]))
        expected = w[:, None] * onehot[labels[index]] + (1 - w[:, None]) * onehot[labels[other]]
        np.testing.assert_allclose(ym.numpy(), expected, atol=1e-6)
    assert len(plain) == len(mixed)
    evaluation = make_dataset(data, 8, None, 3, training=False, mixup=0.4)
    assert all(set(np.unique(y.numpy())) <= {0.0, 1.0} for _, y in evaluation)


def test_pad_sequences_keeps_values_and_zero_pads():
    arrays = [np.ones((3, 2)), 2 * np.ones((5, 2))]
    out = pad_sequences(arrays, np.array([3, 4]))
    assert out.shape == (2, 4, 2)
    assert (out[0, 3] == 0).all() and (out[0, :3] == 1).all() and (out[1] == 2).all()


def test_train_test_predict_end_to_end(synthetic_features, tmp_path):
    code = cli(synthetic_features, tmp_path, "--mode", "train", "--feature_type", "MFCC",
               "--epoch", "25", "--split_fold", "3", "--run_id", "e2e", *TINY)
    assert code == 0
    metrics = json.loads((tmp_path / "results" / "e2e" / "metrics.json").read_text())
    assert metrics["war_mean"] >= 0.8, metrics  # pitch-coded classes are easy
    for name in ("report.xlsx", "predictions.csv", "confusion_matrix.png"):
        assert (tmp_path / "results" / "e2e" / name).is_file()
    book = pd.ExcelFile(tmp_path / "results" / "e2e" / "report.xlsx")
    assert "summary" in book.sheet_names
    model_dir = tmp_path / "models" / "EMODB" / "MFCC" / "e2e"
    assert len(list(model_dir.glob("fold_*/model.keras"))) == 3

    # --mode test reproduces the stored figures exactly
    assert cli(synthetic_features, tmp_path, "--mode", "test", "--feature_type", "MFCC",
               "--test_path", str(model_dir)) == 0
    again = json.loads((tmp_path / "results" / "e2e-test" / "metrics.json").read_text())
    assert again["war_mean"] == metrics["war_mean"]
    assert again["uar_mean"] == metrics["uar_mean"]

    # predict on a fresh wav at another sample rate: a 220 Hz tone is "angry" (W)
    wav = tmp_path / "probe.wav"
    rng = np.random.default_rng(5)
    t = np.arange(int(1.0 * 22050)) / 22050
    sf.write(wav, (0.4 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 440 * t)
                   + 0.01 * rng.standard_normal(len(t))).astype(np.float32), 22050)
    out_csv = tmp_path / "preds.csv"
    assert cli(synthetic_features, tmp_path, "--mode", "predict", "--test_path", str(model_dir),
               "--audio", str(wav), "--output", str(out_csv)) == 0
    table = pd.read_csv(out_csv)
    assert table.loc[0, "emotion"] == "angry"
    probs = table[["angry", "neutral", "sad"]].to_numpy()
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-3)


def test_interrupted_run_resumes_at_first_unfinished_fold(synthetic_features, tmp_path, capsys):
    args = ["--mode", "train", "--epoch", "2", "--split_fold", "3", "--run_id", "resume", *TINY]
    assert cli(synthetic_features, tmp_path, *args, "--max_folds", "1") == 0
    model_dir = tmp_path / "models" / "EMODB" / "MFCC" / "resume"
    first = (model_dir / "fold_01" / "result.json").read_text()
    logged = pd.read_csv(model_dir / "fold_01" / "history.csv")  # written epoch by epoch
    assert logged["epoch"].tolist() == [0, 1]
    np.testing.assert_allclose(logged["loss"], json.loads(first)["history"]["loss"], rtol=1e-6)
    capsys.readouterr()
    assert cli(synthetic_features, tmp_path, *args) == 0
    out = capsys.readouterr().out
    assert "fold  1/3: already finished" in out
    assert (model_dir / "fold_01" / "result.json").read_text() == first
    assert (model_dir / "fold_03" / "result.json").exists()


def test_folds_shared_between_processes_match_one_process(synthetic_features, tmp_path, capsys,
                                                         monkeypatch):
    """--folds trains only the listed folds; each matches the same fold of a one-process run,
    and the report covers every finished fold of the run."""
    args = ["--mode", "train", "--epoch", "2", "--split_fold", "3", *TINY]
    assert cli(synthetic_features, tmp_path, *args, "--run_id", "whole") == 0
    assert cli(synthetic_features, tmp_path, *args, "--run_id", "shared", "--folds", "3") == 0
    shared = tmp_path / "models" / "EMODB" / "MFCC" / "shared"
    whole = tmp_path / "models" / "EMODB" / "MFCC" / "whole"
    assert sorted(p.name for p in shared.glob("fold_*")) == ["fold_03"]
    report = json.loads((tmp_path / "results" / "shared" / "metrics.json").read_text())
    assert report["n_folds"] == 1
    assert report["n_folds_total"] == 3 and report["complete"] is False
    assert "shared: PARTIAL, 1 of 3 folds finished" in capsys.readouterr().out

    # a fold another process finishes while this one trains still reaches this report
    import shutil

    import src.training.experiment as experiment
    original = experiment.train_fold

    def train_while_fold_1_finishes(*args, **kwargs):
        shutil.copytree(whole / "fold_01", shared / "fold_01")
        return original(*args, **kwargs)

    monkeypatch.setattr(experiment, "train_fold", train_while_fold_1_finishes)
    assert cli(synthetic_features, tmp_path, *args, "--run_id", "shared", "--folds", "2") == 0
    monkeypatch.setattr(experiment, "train_fold", original)
    report = json.loads((tmp_path / "results" / "shared" / "metrics.json").read_text())
    assert report["n_folds"] == 3
    capsys.readouterr()
    assert cli(synthetic_features, tmp_path, *args, "--run_id", "shared", "--folds", "1-2") == 0
    assert "fold  3/3: already finished" in capsys.readouterr().out
    for fold in ("fold_01", "fold_02", "fold_03"):
        a = json.loads((whole / fold / "result.json").read_text())
        b = json.loads((shared / fold / "result.json").read_text())
        assert a["probs"] == b["probs"] and a["file_ids"] == b["file_ids"]
    report = json.loads((tmp_path / "results" / "shared" / "metrics.json").read_text())
    assert report["n_folds"] == 3 and report["complete"] is True
    assert cli(synthetic_features, tmp_path, *args, "--run_id", "shared", "--folds", "4") == 2
    assert "--folds 4: this run has folds 1-3" in capsys.readouterr().err


def test_same_seed_gives_identical_results(synthetic_features, tmp_path):
    args = ["--mode", "train", "--epoch", "2", "--split_fold", "3", "--max_folds", "1", *TINY]
    assert cli(synthetic_features, tmp_path, *args, "--run_id", "a") == 0
    assert cli(synthetic_features, tmp_path, *args, "--run_id", "b") == 0
    root = tmp_path / "models" / "EMODB" / "MFCC"
    ra = json.loads((root / "a" / "fold_01" / "result.json").read_text())
    rb = json.loads((root / "b" / "fold_01" / "result.json").read_text())
    assert ra["probs"] == rb["probs"]
    assert ra["history"]["loss"] == rb["history"]["loss"]


def test_fusion_model_trains(synthetic_features, tmp_path):
    assert cli(synthetic_features, tmp_path, "--mode", "train", "--feature_type", "FUSION",
               "--epoch", "2", "--split_fold", "3", "--max_folds", "1", "--run_id", "fusion",
               *TINY) == 0
    config = json.loads((tmp_path / "models" / "EMODB" / "FUSION" / "fusion" /
                         "config.json").read_text())
    assert config["input_dims"] == {"MFCC": 40, "LogMel": 128}


@pytest.mark.parametrize("args, message", [
    (["--mode", "test"], "--test_path"),
    (["--mode", "predict", "--test_path", "x"], "--audio"),
    (["--epoch", "0"], "--epoch"),
    (["--dropout", "1.5"], "--dropout"),
    (["--time_masks", "-1"], "--time_masks"),
    (["--freq_mask_width", "1.5"], "--freq_mask_width"),
    (["--head_units", "64,x"], "--head_units"),
    (["--val_fraction", "0"], "--patience 0"),
    (["--val_fraction", "1"], "--val_fraction"),
    (["--head_units", "-4"], "--head_units"),
    (["--mixup", "-0.2"], "--mixup"),
    (["--folds", "0"], "--folds"),
    (["--folds", "2,x"], "--folds"),
    (["--weight_ema", "1"], "--weight_ema"),
    (["--weight_ema", "0.99"], "--patience 0"),
    (["--mode", "train-lmmd", "--init_from", "x"], "--init_from needs --mode train"),
    (["--model", "logreg", "--init_from", "x"], "svm / logreg have no weights"),
])
def test_bad_flags_exit_with_a_clear_line(args, message, capsys):
    with pytest.raises(SystemExit) as info:
        train_main(args)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_missing_features_and_models_give_one_line_errors(synthetic_features, tmp_path, capsys):
    assert cli(synthetic_features, tmp_path, "--mode", "train", "--feature_type", "LogMel",
               "--data", "RAVDESS") == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "run_data_processing" in err
    assert "Traceback" not in err
    assert cli(synthetic_features, tmp_path, "--mode", "test", "--test_path",
               str(tmp_path / "nothing")) == 2
    assert "config.json" in capsys.readouterr().err
    assert cli(synthetic_features, tmp_path, "--mode", "train", "--batch_size", "1000") == 2
    assert "--batch_size" in capsys.readouterr().err


@pytest.mark.parametrize("flags", [["--distribute", "mirrored"], ["--jit"],
                                   ["--mixed_precision"]])
def test_hardware_flags_train_a_usable_model(synthetic_features, tmp_path, flags):
    import keras

    try:
        assert cli(synthetic_features, tmp_path, "--mode", "train", "--epoch", "2",
                   "--split_fold", "3", "--max_folds", "1", "--run_id", "hw", *TINY,
                   *flags) == 0
    finally:
        keras.mixed_precision.set_global_policy("float32")
    result = json.loads((tmp_path / "models" / "EMODB" / "MFCC" / "hw" / "fold_01" /
                         "result.json").read_text())
    probs = np.asarray(result["probs"])
    assert np.isfinite(probs).all() and np.allclose(probs.sum(axis=1), 1.0, atol=1e-2)


def test_standardise_groups_uses_each_groups_own_valid_frames():
    from src.training.data import standardise_groups

    rng = np.random.default_rng(3)
    data = fake_data(n=12, speakers=3)
    data.streams["MFCC"] = np.zeros((12, 9, 2), np.float32)
    for i, length in enumerate(data.lengths):
        data.streams["MFCC"][i, :length] = rng.normal(5.0 * (i % 3), 1.0 + i % 3, (length, 2))
    groups = data.metadata["speaker"].to_numpy()
    out = standardise_groups(data, groups).streams["MFCC"]
    for group in np.unique(groups):
        rows = np.flatnonzero(groups == group)
        frames = np.concatenate([data.streams["MFCC"][i, :data.lengths[i]] for i in rows])
        expected = (frames - frames.mean(0)) / frames.std(0)
        got = np.concatenate([out[i, :data.lengths[i]] for i in rows])
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    for i, length in enumerate(data.lengths):
        assert not out[i, length:].any()  # padding stays zero


def test_standardise_groups_zeroes_dimensions_constant_within_a_group():
    """A dimension constant (up to float32 rounding) in a group is 0 there, not rounding noise
    divided by a floored std, which a later standardisation would blow up on another corpus."""
    from src.training.data import group_scaling, standardise_groups

    rng = np.random.default_rng(5)
    data = fake_data(n=12, speakers=3)
    vectors = rng.normal(0.0, 1.0, (12, 1, 3)).astype(np.float32)
    vectors[:, 0, 1] = -100.0  # constant everywhere
    vectors[:, 0, 2] = 3e-9 + rng.normal(0.0, 1e-12, 12)  # rounding-level noise only
    data.streams["MFCC"] = vectors
    data.lengths = np.ones(12, np.int32)
    out = standardise_groups(data, data.metadata["speaker"].to_numpy()).streams["MFCC"][:, 0]
    assert not out[:, 1:].any()
    for group in np.unique(data.metadata["speaker"]):
        rows = np.flatnonzero(data.metadata["speaker"].to_numpy() == group)
        x = vectors[rows, 0, 0]
        np.testing.assert_allclose(out[rows, 0], (x - x.mean()) / x.std(), rtol=1e-4, atol=1e-5)
    mean, scale = group_scaling(np.array([[1e4, 0.0], [1e4 + 1e-3, 1.0]]))
    assert scale[0] == 0.0 and scale[1] == np.float32(2.0)  # 1e-3 on 1e4 is float32 noise


def test_a_dimension_constant_in_training_does_not_reach_the_model():
    """model_scaling gives such a dimension a ~0 scale, so another corpus's values there do not
    change the MLP's output (with the former 1e-8 variance floor they were multiplied by 1e4)."""
    from src.models.inputs import LENGTH_INPUT
    from src.models.mlp import build_mlp
    from src.training.data import UNUSED_VARIANCE, model_scaling

    rng = np.random.default_rng(2)
    train = rng.normal(0.0, 1.0, (50, 3)).astype(np.float32)
    train[:, 2] = 0.0
    mean, variance = model_scaling(train)
    assert variance[2] == np.float32(UNUSED_VARIANCE)
    np.testing.assert_allclose(variance[:2], train[:, :2].var(axis=0), rtol=1e-5)
    model = build_mlp({"ComParE": 3}, 4, ("ComParE",), (8,), 0.0, norm_stats=(mean, variance))
    target = rng.normal(0.0, 1.0, (6, 1, 3)).astype(np.float32)
    blanked = target.copy()
    blanked[..., 2] = 0.0
    lengths = np.ones(6, np.int32)
    np.testing.assert_allclose(model({"ComParE": target, LENGTH_INPUT: lengths}).numpy(),
                               model({"ComParE": blanked, LENGTH_INPUT: lengths}).numpy(),
                               atol=1e-6)


def test_speaker_norm_is_applied_again_by_test_and_predict(synthetic_features, tmp_path, capsys):
    args = ["--mode", "train", "--epoch", "3", "--split_fold", "3", "--max_folds", "1",
            "--run_id", "spk", "--speaker_norm", *TINY]
    assert cli(synthetic_features, tmp_path, *args) == 0
    model_dir = tmp_path / "models" / "EMODB" / "MFCC" / "spk"
    stored = json.loads((model_dir / "fold_01" / "result.json").read_text())
    assert cli(synthetic_features, tmp_path, "--mode", "test", "--test_path", str(model_dir)) == 0
    predictions = pd.read_csv(tmp_path / "results" / "spk-test" / "predictions.csv")
    probs = predictions[[c for c in predictions.columns if c.startswith("p_")]].to_numpy()
    np.testing.assert_allclose(probs, np.asarray(stored["probs"]), atol=1e-5)
    capsys.readouterr()
    wav = next(synthetic_features["raw"].glob("*.wav"))
    assert cli(synthetic_features, tmp_path, "--mode", "predict", "--test_path", str(model_dir),
               "--audio", str(wav)) == 0
    assert "each file is standardised with its own statistics" in capsys.readouterr().out


def test_flags_added_later_keep_older_run_ids_until_set():
    """Runs made before --time_masks/--freq_masks existed keep their ids (and resume)."""
    import hashlib

    from src.training.config import _IN_RUN_ID_WHEN_SET, _NOT_IN_RUN_ID, RunConfig

    cfg = RunConfig(data="EMODB", preset="light", lr=1e-3)
    older = {k: v for k, v in cfg.to_dict().items()
             if k not in _NOT_IN_RUN_ID and k not in _IN_RUN_ID_WHEN_SET}
    expected = hashlib.sha1(json.dumps(older, sort_keys=True).encode()).hexdigest()[:8]
    assert cfg.run_hash() == expected
    assert RunConfig(data="EMODB", preset="light", lr=1e-3, time_masks=2).run_hash() != expected
    assert RunConfig(data="EMODB", preset="light", lr=1e-3,
                     head_units="none").run_hash() != expected
    assert RunConfig(data="EMODB", preset="light", lr=1e-3,
                     balanced_batches=True).run_hash() != expected
    assert RunConfig(data="EMODB", preset="light", lr=1e-3, mixup=0.2).run_hash() != expected


def test_val_fraction_zero_trains_on_every_training_fold_file(synthetic_features, tmp_path):
    assert cli(synthetic_features, tmp_path, "--mode", "train", "--epoch", "2", "--split_fold",
               "3", "--max_folds", "1", "--run_id", "noval", "--val_fraction", "0", *TINY) == 0
    fold = tmp_path / "models" / "EMODB" / "MFCC" / "noval" / "fold_01"
    split = json.loads((fold / "split.json").read_text())
    result = json.loads((fold / "result.json").read_text())
    n_files = len(list(synthetic_features["raw"].glob("*.wav")))
    assert split["val"] == [] and result["n_val"] == 0
    assert len(split["train"]) + len(split["test"]) == n_files
    assert not set(split["train"]) & set(split["test"])
    assert not any(key.startswith("val_") for key in result["history"])


def test_timnet_head_puts_the_softmax_on_the_pooled_features(synthetic_features, tmp_path):
    """--head_units none --use_dtpm false --use_attention false is TIM-Net's classifier."""
    import keras

    assert cli(synthetic_features, tmp_path, "--mode", "train", "--epoch", "2", "--split_fold",
               "3", "--max_folds", "1", "--run_id", "timnet-head", *TINY, "--head_units",
               "none", "--use_dtpm", "false", "--use_attention", "false") == 0
    model_dir = tmp_path / "models" / "EMODB" / "MFCC" / "timnet-head"
    config = json.loads((model_dir / "config.json").read_text())
    assert config["model"]["head_units"] == [] and config["run"]["head_units"] == "none"
    model = keras.saving.load_model(model_dir / "fold_01" / "model.keras")
    dense = [layer.name for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    assert dense == ["probabilities"]
    assert model.get_layer("embedding").output.shape[-1] == config["model"]["filter_size"]


def _kernels(fold_dir):
    import keras

    import src.models.model  # noqa: F401  registers the custom layers

    model = keras.models.load_model(fold_dir / "model.keras")
    return {w.path: w.numpy() for w in model.weights if w.path.endswith("kernel")}


def test_init_from_continues_each_fold_from_the_same_folds_weights(synthetic_features, tmp_path,
                                                                  capsys):
    models = tmp_path / "models" / "EMODB" / "MFCC"
    first = ["--mode", "train", "--split_fold", "3", "--max_folds", "2", *TINY]
    assert cli(synthetic_features, tmp_path, *first, "--epoch", "3", "--run_id", "a") == 0
    # --lr tiny: one more epoch leaves the kernels where run a left them, fold by fold
    again = [*first, "--epoch", "1", "--lr", "1e-12"]
    assert cli(synthetic_features, tmp_path, *again, "--run_id", "b",
               "--init_from", str(models / "a")) == 0
    assert cli(synthetic_features, tmp_path, *again, "--run_id", "fresh") == 0
    for fold in ("fold_01", "fold_02"):
        start, continued = _kernels(models / "a" / fold), _kernels(models / "b" / fold)
        fresh = _kernels(models / "fresh" / fold)
        assert start.keys() == continued.keys()
        for name in start:
            np.testing.assert_allclose(continued[name], start[name], atol=1e-6)
        assert any(not np.allclose(fresh[name], start[name], atol=1e-3) for name in start)
    assert json.loads((models / "b" / "config.json").read_text())["run"]["init_from"] == str(
        models / "a")
    capsys.readouterr()
    # another fold rule: the source fold models saw this run's test files
    assert cli(synthetic_features, tmp_path, *again, "--run_id", "c", "--fold_seed", "7",
               "--init_from", str(models / "a")) == 2
    err = capsys.readouterr().err
    assert "--init_from" in err and "fold_01 was tested on other files" in err
    assert cli(synthetic_features, tmp_path, *again, "--run_id", "d",
               "--init_from", str(tmp_path / "nothing")) == 2
    assert "no model.keras and split.json in fold_01" in capsys.readouterr().err


def test_weight_ema_ends_training_on_the_moving_average_of_the_steps_weights():
    import keras

    from src.training.config import RunConfig
    from src.training.fitting import make_optimizer

    cfg = RunConfig(weight_ema=0.9, lr=0.05, clipnorm=0.0, lr_schedule="constant", patience=0)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((40, 3)).astype("float32"), rng.standard_normal((40, 1))
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=make_optimizer(cfg, 5), loss="mse")
    seen = []  # the raw weights after every step

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append([w.numpy().copy() for w in model.trainable_weights])

    model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0, callbacks=[Record()])
    assert len(seen) == 15
    average = seen[0]
    for step in seen[1:]:
        average = [0.9 * a + 0.1 * w for a, w in zip(average, step)]
    for final, expected, last in zip(model.trainable_weights, average, seen[-1]):
        np.testing.assert_allclose(final.numpy(), expected, rtol=1e-5, atol=1e-6)
        assert not np.allclose(final.numpy(), last, atol=1e-4)  # not the last step's weights
