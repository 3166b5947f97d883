"""--vtlp: vocal tract length perturbation of stored MFCC / LogMel frames (issue 18, LOSO)."""
from __future__ import annotations

import json

import librosa
import numpy as np
import pandas as pd
import pytest
import scipy.fft

from src.data_processing.vtlp import log_mel_warp, mfcc_warp, vtlp_frequency
from src.training.config import RunConfig
from src.training.data import DataError, load_ser_data, valid_frames
from src.training.vtlp_copies import vtlp_copies, warped, with_copies
from tests.synthetic import TINY, cli


def test_vtlp_frequency_scales_below_the_boundary_and_keeps_nyquist():
    freqs = np.array([0.0, 500.0, 1000.0, 3000.0, 8000.0])
    g = vtlp_frequency(freqs, 1.1, 16000)
    np.testing.assert_allclose(g[:4], 1.1 * freqs[:4])
    assert g[-1] == pytest.approx(8000.0)
    cut = 4800.0 / 1.1  # continuous where the two pieces meet
    below, above = vtlp_frequency(np.array([cut - 1e-6, cut + 1e-6]), 1.1, 16000)
    assert below == pytest.approx(above, abs=1e-4)
    np.testing.assert_allclose(vtlp_frequency(freqs, 1.0, 16000), freqs)
    with pytest.raises(ValueError, match="positive"):
        vtlp_frequency(freqs, 0.0, 16000)


def test_log_mel_warp_moves_a_formant_by_the_factor():
    """A log-mel bump centred at 1000 Hz, warped by 1.1, peaks at the band nearest
    1000 / 1.1 Hz (each band reads the original at 1.1 x its own frequency)."""
    sr, n_mels = 16000, 128
    centres = librosa.mel_frequencies(n_mels + 2, fmax=sr / 2)[1:-1]
    bump = np.exp(-0.5 * ((centres - 1000.0) / 60.0) ** 2)
    warp = log_mel_warp(1.1, sr, n_mels)
    np.testing.assert_allclose(warp.sum(axis=1), 1.0)
    assert np.argmax(warp @ bump) == np.argmin(np.abs(centres - 1000.0 / 1.1))
    assert np.argmax(log_mel_warp(0.9, sr, n_mels) @ bump) == \
        np.argmin(np.abs(centres - 1000.0 / 0.9))
    np.testing.assert_array_equal(log_mel_warp(1.0, sr, n_mels), np.eye(n_mels))


def test_mfcc_warp_is_the_dct_of_the_warped_envelope():
    """W c equals the first k DCT coefficients of the warped log-mel envelope that c describes
    (scipy's inverse DCT of c padded to n_mels bands), and W is the identity at 1."""
    sr, n_mels, k = 22050, 128, 39
    c = np.random.default_rng(0).normal(size=k)
    envelope = scipy.fft.idct(np.pad(c, (0, n_mels - k)), type=2, norm="ortho")
    expected = scipy.fft.dct(log_mel_warp(0.9, sr, n_mels) @ envelope, type=2,
                             norm="ortho")[:k]
    np.testing.assert_allclose(mfcc_warp(0.9, sr, n_mels, k) @ c, expected, atol=1e-10)
    np.testing.assert_allclose(mfcc_warp(1.0, sr, n_mels, k), np.eye(k), atol=1e-12)
    with pytest.raises(ValueError, match="n_mfcc"):
        mfcc_warp(0.9, sr, 20, 39)


def test_copies_are_new_standardised_speakers_and_join_only_the_training_files(
        synthetic_features):
    raw = load_ser_data("EMODB", "MFCC", synthetic_features["features"])
    copies = vtlp_copies(raw, (0.9, 1.1), speaker_norm=True)
    for alpha, copy in zip((0.9, 1.1), copies):
        assert list(copy.file_ids) == [f"{f}@vtlp{alpha:g}" for f in raw.file_ids]
        valid = valid_frames(copy)
        for speaker in set(copy.speakers):
            assert speaker.endswith(f"@vtlp{alpha:g}")
            frames = copy.streams["MFCC"][copy.speakers == speaker][valid[copy.speakers ==
                                                                           speaker]]
            np.testing.assert_allclose(frames.mean(axis=0), 0.0, atol=1e-4)
            np.testing.assert_allclose(frames.std(axis=0), 1.0, atol=1e-3)
        assert not copy.streams["MFCC"][~valid].any()  # padding stays zero
    unnormalised = warped(raw, 0.9)
    config = raw.extraction["MFCC"]
    matrix = mfcc_warp(0.9, config["sample_rate"], config["n_mels"], config["n_mfcc"],
                       config["fmin"], config["fmax"])
    np.testing.assert_allclose(unnormalised.streams["MFCC"][0, 0],
                               matrix @ raw.streams["MFCC"][0, 0], rtol=1e-4, atol=1e-3)
    train = raw.subset(np.arange(0, raw.n, 2))
    joined = with_copies(train, raw, copies)
    assert joined.n == 3 * train.n
    assert list(joined.file_ids[train.n:2 * train.n]) == [f"{f}@vtlp0.9" for f in train.file_ids]
    np.testing.assert_array_equal(joined.labels[2 * train.n:], train.labels)


def test_vtlp_rejects_streams_it_cannot_warp(synthetic_features):
    raw = load_ser_data("EMODB", "MFCC", synthetic_features["features"])
    raw.streams["ComParE"] = raw.streams.pop("MFCC")
    raw.extraction["ComParE"] = raw.extraction.pop("MFCC")
    with pytest.raises(DataError, match="--vtlp.*ComParE"):
        warped(raw, 0.9)


@pytest.mark.parametrize("value", ["1.0", "0.5", "0.9,0.9", "fast"])
def test_vtlp_flag_rejects_bad_factors(value):
    with pytest.raises(ValueError, match="--vtlp"):
        RunConfig(vtlp=value).vtlp_factors()


def test_vtlp_training_run_and_test_mode_reproduce(synthetic_features, tmp_path, capsys):
    args = ["--mode", "train", "--epoch", "2", "--protocol", "loso", "--max_folds", "1",
            "--speaker_norm", "--vtlp", "0.9,1.1", "--val_fraction", "0", "--run_id", "vtlp",
            *TINY]
    assert cli(synthetic_features, tmp_path, *args) == 0
    fold = tmp_path / "models" / "EMODB" / "MFCC" / "vtlp" / "fold_01"
    split = json.loads((fold / "split.json").read_text())
    result = json.loads((fold / "result.json").read_text())
    originals = [f for f in split["train"] if "@vtlp" not in f]
    assert result["n_train"] == len(split["train"]) == 3 * len(originals)
    assert {f.split("@")[0] for f in split["train"]} == set(originals)
    assert not set(originals) & set(split["test"])
    assert cli(synthetic_features, tmp_path, "--mode", "test", "--test_path",
               str(fold.parent)) == 0
    predictions = pd.read_csv(tmp_path / "results" / "vtlp-test" / "predictions.csv")
    probs = predictions[[c for c in predictions.columns if c.startswith("p_")]].to_numpy()
    np.testing.assert_allclose(probs, np.asarray(result["probs"]), atol=1e-5)
    with pytest.raises(SystemExit):
        cli(synthetic_features, tmp_path, "--mode", "train-lmmd", "--vtlp", "0.9")
    assert "--vtlp needs --mode train" in capsys.readouterr().err
