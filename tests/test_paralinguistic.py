"""openSMILE features (eGeMAPS / ComParE) and the utterance-level model families (mlp, svm,
logreg) and the fused model, end to end on synthetic audio."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from src.data_processing.config import ExtractionConfig
from src.data_processing.features import expected_frames
from src.data_processing.run_data_processing import main as extract_main
from src.data_processing.smile import extract_smile, resample_to_grid
from src.data_processing.store import load_feature_set
from src.training.data import SERData, load_ser_data, speaker_groups, utterance_matrix
from tests.synthetic import TINY, cli

opensmile = pytest.importorskip("opensmile")


@pytest.fixture(scope="session")
def smile_setup(synthetic_features):
    """The synthetic EMODB-like corpus with eGeMAPS functionals and LLDs added."""
    for level in ("functionals", "lld"):
        code = extract_main(["--dataset", "EMODB", "--raw_dir", str(synthetic_features["raw"]),
                             "--features_root", str(synthetic_features["features"]),
                             "--features", "eGeMAPS", "--smile_level", level, "--workers", "1",
                             "--no_progress"])
        assert code == 0
    return synthetic_features


def _lld_hash() -> str:
    return ExtractionConfig(smile_level="lld").feature_hash("eGeMAPS")


def test_functionals_equal_a_direct_opensmile_call(smile_setup):
    fs = load_feature_set("EMODB", "eGeMAPS", smile_setup["features"],
                          config_hash=ExtractionConfig().feature_hash("eGeMAPS"))
    smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                            feature_level=opensmile.FeatureLevel.Functionals)
    for i in (0, 7):
        direct = smile.process_file(fs.metadata.loc[i, "path"]).to_numpy(np.float32)
        assert fs.arrays[i].shape == (1, 88)
        np.testing.assert_allclose(fs.arrays[i], direct, rtol=1e-5, atol=1e-5)


def test_lld_frames_lie_on_the_20ms_grid(smile_setup):
    fs = load_feature_set("EMODB", "eGeMAPS", smile_setup["features"], config_hash=_lld_hash())
    cfg = ExtractionConfig(smile_level="lld")
    mfcc = load_feature_set("EMODB", "MFCC", smile_setup["features"])
    for i in range(3):
        seconds = fs.metadata.loc[i, "duration_s"]
        n = expected_frames(int(round(seconds * cfg.sample_rate)), cfg)
        assert fs.arrays[i].shape == (n, 25)
        same = mfcc.metadata.index[mfcc.metadata["file_id"] == fs.metadata.loc[i, "file_id"]][0]
        assert mfcc.arrays[same].shape[0] == n  # the same frames as MFCC of that file


def test_resampling_interpolates_between_frame_centres():
    centres = np.array([0.01, 0.02, 0.03, 0.04, 0.05])
    values = np.stack([2.0 * centres + 1.0, -centres], axis=1)
    times = np.array([0.0, 0.015, 0.02, 0.041, 0.06])
    out = resample_to_grid(values, centres, times)
    inside = np.array([2 * 0.015 + 1, 2 * 0.02 + 1, 2 * 0.041 + 1])
    np.testing.assert_allclose(out[1:4, 0], inside, rtol=1e-6)
    assert out[0, 0] == pytest.approx(2 * 0.01 + 1) and out[-1, 1] == pytest.approx(-0.05)


def test_non_finite_opensmile_output_is_a_failure_not_a_feature(monkeypatch, tmp_path, make_wav):
    from src.data_processing import smile as smile_module
    from src.data_processing.audio import AudioError

    class NaNSmile:
        def process_signal(self, y, rate):
            return pd.DataFrame([[1.0, np.nan, np.inf]])

    monkeypatch.setattr(smile_module, "smile_extractor", lambda feature, level: NaNSmile())
    with pytest.raises(AudioError, match="2 non-finite"):
        extract_smile(np.zeros(16000, np.float32), ExtractionConfig(), "eGeMAPS")
    # end to end: the file lands in failures.csv and no array is written
    raw = tmp_path / "raw"
    make_wav(raw / "03a01Wa.wav", seconds=0.8)
    make_wav(raw / "03a01Ta.wav", seconds=0.8, freq=660.0)
    features = tmp_path / "features"
    code = extract_main(["--dataset", "EMODB", "--raw_dir", str(raw), "--features_root",
                         str(features), "--features", "eGeMAPS", "--workers", "0",
                         "--no_progress"])
    assert code == 1  # no usable file
    set_dir = next((features / "EMODB" / "eGeMAPS").iterdir())
    failures = pd.read_csv(set_dir / "failures.csv")
    assert len(failures) == 2 and failures["reason"].str.contains("non-finite").all()
    assert not list(set_dir.glob("*.npy"))


def test_silent_and_tiny_files_never_store_non_finite_values(tmp_path, make_wav):
    raw = tmp_path / "raw"
    make_wav(raw / "03a01Wa.wav", seconds=1.0)
    make_wav(raw / "03a02Wa.wav", seconds=1.0, amplitude=0.0)   # digital silence
    make_wav(raw / "03a03Wa.wav", seconds=0.01)                 # 10 ms
    features = tmp_path / "features"
    extract_main(["--dataset", "EMODB", "--raw_dir", str(raw), "--features_root", str(features),
                  "--features", "ComParE", "--workers", "0", "--no_progress"])
    set_dir = next((features / "EMODB" / "ComParE").iterdir())
    stored = list(set_dir.glob("*.npy"))
    failed = pd.read_csv(set_dir / "failures.csv")
    assert len(stored) + len(failed) == 3
    for path in stored:
        assert np.isfinite(np.load(path)).all()


def test_utterance_streams_load_as_one_frame_and_speaker_norm_standardises_them(smile_setup):
    data = load_ser_data("EMODB", "eGeMAPS", smile_setup["features"], speaker_norm=True)
    assert data.streams["eGeMAPS"].shape == (data.n, 1, 88)
    assert data.utterance_streams == ["eGeMAPS"] and (data.lengths == 1).all()
    raw = load_ser_data("EMODB", "eGeMAPS", smile_setup["features"])
    groups = speaker_groups(raw)
    for speaker in np.unique(groups):
        rows = raw.streams["eGeMAPS"][groups == speaker, 0].astype(np.float64)
        mean, var = rows.mean(0), rows.var(0)
        informative = var > 1e-8 + 1e-10 * mean ** 2  # else constant in the group: 0
        expected = np.where(informative, (rows - mean) / np.sqrt(np.where(informative, var, 1)),
                            0.0)
        np.testing.assert_allclose(data.streams["eGeMAPS"][groups == speaker, 0], expected,
                                   rtol=1e-4, atol=1e-4)


def test_fusion_keeps_frames_of_frame_streams_beside_utterance_vectors(smile_setup):
    data = load_ser_data("EMODB", "FUSION", smile_setup["features"],
                         fusion_streams="MFCC,eGeMAPS")
    mfcc = load_ser_data("EMODB", "MFCC", smile_setup["features"])
    np.testing.assert_array_equal(data.lengths, mfcc.lengths)
    assert data.streams["eGeMAPS"].shape[1:] == (1, 88)
    assert data.frame_streams == ["MFCC"]


def test_utterance_matrix_matches_the_keras_pooling():
    import keras

    from src.models.pooling import MaskedMeanStdPooling

    rng = np.random.default_rng(0)
    lengths = np.array([3, 7, 5], np.int32)
    frames = rng.normal(size=(3, 7, 4)).astype(np.float32)
    frames[0, 3:] = 99.0  # padding must not count
    data = SERData("X", {"MFCC": frames, "eGeMAPS": rng.normal(size=(3, 1, 2)).astype("f4")},
                   lengths, np.zeros(3, np.int32), ["a", "b"],
                   pd.DataFrame({"file_id": ["a", "b", "c"]}),
                   {"MFCC": {}, "eGeMAPS": {"smile_level": "functionals"}}, {})
    matrix = utterance_matrix(data)
    assert matrix.shape == (3, 2 * 4 + 2)
    valid = frames[0, :3]
    np.testing.assert_allclose(matrix[0, :4], valid.mean(0), rtol=1e-5)
    np.testing.assert_allclose(matrix[0, 4:8], valid.std(0), rtol=1e-5)
    np.testing.assert_allclose(matrix[:, 8:], data.streams["eGeMAPS"][:, 0])
    pooled = keras.ops.convert_to_numpy(MaskedMeanStdPooling()([frames, lengths]))
    np.testing.assert_allclose(pooled, matrix[:, :8], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("model", ["logreg", "svm", "mlp"])
def test_each_family_trains_saves_reloads_and_reproduces(model, smile_setup, tmp_path):
    from src.training.config import RunConfig
    from src.training.estimators import load_estimator, make_estimator

    data = load_ser_data("EMODB", "eGeMAPS", smile_setup["features"], speaker_norm=True)
    cfg = RunConfig(model=model, epoch=15, batch_size=8, lr=3e-3, patience=0, verbose=0)
    estimator = make_estimator(cfg, data.class_names)
    estimator.fit(data, None, seed=1)
    probs = estimator.predict_proba(data)
    assert probs.shape == (data.n, 3) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert (probs.argmax(1) == data.labels).mean() > 0.8  # pitch-coded classes separate
    estimator.save(tmp_path)
    assert (tmp_path / ("model.keras" if model == "mlp" else "model.skops")).is_file()
    again = load_estimator(tmp_path, data.class_names)
    np.testing.assert_allclose(again.predict_proba(data), probs, rtol=1e-5, atol=1e-6)
    assert again.embed(data).shape[0] == data.n


def test_skops_refuses_a_file_naming_foreign_types(tmp_path):
    import skops.io

    from src.models.classic import load_classic

    skops.io.dump({"x": pd.Timestamp("2020-01-01")}, tmp_path / "bad.skops")
    with pytest.raises(ValueError, match="refuses to load"):
        load_classic(tmp_path / "bad.skops")


@pytest.mark.parametrize("model", ["svm", "mlp"])
def test_mode_test_reproduces_the_training_figures(model, smile_setup, tmp_path):
    args = ["--feature_type", "eGeMAPS", "--model", model, "--split_fold", "3", "--speaker_norm",
            "--epoch", "5", *TINY, "--run_id", f"utt-{model}"]
    assert cli(smile_setup, tmp_path, "--mode", "train", *args) == 0
    run_dir = tmp_path / "models" / "EMODB" / "eGeMAPS" / f"utt-{model}"
    assert cli(smile_setup, tmp_path, "--mode", "test", "--feature_type", "eGeMAPS",
               "--test_path", str(run_dir)) == 0
    trained = json.loads((tmp_path / "results" / f"utt-{model}" / "metrics.json").read_text())
    tested = json.loads((tmp_path / "results" / f"utt-{model}-test" / "metrics.json")
                        .read_text())
    for key in ("war_mean", "uar_mean", "macro_f1_mean", "uar_pooled"):
        assert tested[key] == pytest.approx(trained[key], abs=1e-9)


def test_fused_model_trains_and_predicts_new_audio(smile_setup, tmp_path, make_wav):
    args = ["--feature_type", "FUSION", "--fusion_streams", "MFCC,eGeMAPS", "--split_fold", "2",
            "--epoch", "3", *TINY, "--run_id", "fused"]
    assert cli(smile_setup, tmp_path, "--mode", "train", *args) == 0
    run_dir = tmp_path / "models" / "EMODB" / "FUSION" / "fused"
    config = json.loads((run_dir / "config.json").read_text())
    assert config["input_dims"] == {"MFCC": 40, "eGeMAPS": 88}
    wav = make_wav(tmp_path / "new.wav", seconds=1.1, freq=660.0)
    out = tmp_path / "preds.csv"
    assert cli(smile_setup, tmp_path, "--mode", "predict", "--test_path", str(run_dir),
               "--audio", str(wav), "--output", str(out)) == 0
    table = pd.read_csv(out)
    assert len(table) == 1 and table.loc[0, "emotion"] in config["class_names"]


def test_utterance_model_predicts_new_audio(smile_setup, tmp_path):
    import soundfile as sf

    from tests.synthetic import SR, tone

    assert cli(smile_setup, tmp_path, "--mode", "train", "--feature_type", "eGeMAPS", "--model",
               "logreg", "--split_fold", "2", "--run_id", "lr", "--verbose", "0") == 0
    wav = tmp_path / "new.wav"  # a new take of the corpus's neutral tone
    sf.write(wav, tone(1500.0, 1.0, np.random.default_rng(7)), SR)
    out = tmp_path / "preds.csv"
    run_dir = tmp_path / "models" / "EMODB" / "eGeMAPS" / "lr"
    assert cli(smile_setup, tmp_path, "--mode", "predict", "--test_path", str(run_dir),
               "--audio", str(wav), "--output", str(out)) == 0
    assert pd.read_csv(out).loc[0, "emotion"] == "neutral"  # 1500 Hz codes neutral


@pytest.mark.parametrize("model,feature,flag", [("svm", "MFCC", "--frame_pooling"),
                                                ("tcn", "eGeMAPS", "--model tcn")])
def test_bad_model_feature_combination_names_both_flags(model, feature, flag, smile_setup,
                                                        tmp_path, capsys):
    code = cli(smile_setup, tmp_path, "--mode", "train", "--feature_type", feature, "--model",
               model, "--split_fold", "2", "--verbose", "0")
    err = capsys.readouterr().err
    assert code == 2 and f"--model {model}" in err and f"--feature_type {feature}" in err
    assert flag in err and "Traceback" not in err


def test_pooled_frame_features_feed_utterance_models(smile_setup, tmp_path):
    assert cli(smile_setup, tmp_path, "--mode", "train", "--feature_type", "MFCC", "--model",
               "logreg", "--frame_pooling", "mean_std", "--split_fold", "2", "--run_id", "pool",
               "--verbose", "0") == 0
    metrics = json.loads((tmp_path / "results" / "pool" / "metrics.json").read_text())
    assert metrics["uar_mean"] > 0.8
