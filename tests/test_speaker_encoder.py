"""GE2E features (src/data_processing/speaker_encoder.py) against resemblyzer's own encoder."""
from __future__ import annotations

import importlib.util
import json
import sys
import types

import numpy as np
import pandas as pd
import pytest

from src.data_processing import speaker_encoder
from src.data_processing.audio import AudioError
from src.data_processing.config import ExtractionConfig, expected_frames, is_utterance_level
from src.data_processing.run_data_processing import main as extract_main
from src.data_processing.speaker_encoder import (EncoderUnavailable, encoder_mel, encoder_states,
                                                 extract_ge2e)
from src.data_processing.store import load_feature_set
from tests.synthetic import SR, cli, tone

pytest.importorskip("torch")
if importlib.util.find_spec("resemblyzer") is None:
    pytest.skip("resemblyzer is not installed", allow_module_level=True)


@pytest.fixture(scope="module")
def resemblyzer():
    """resemblyzer itself, its unused VAD dependency stubbed (webrtcvad imports pkg_resources,
    which new setuptools no longer has; the reference path below never calls it)."""
    saved = sys.modules.get("webrtcvad")
    sys.modules.setdefault("webrtcvad", types.ModuleType("webrtcvad"))
    import resemblyzer as module
    from resemblyzer import audio

    yield module, audio, module.VoiceEncoder("cpu", verbose=False)
    if saved is None:
        sys.modules.pop("webrtcvad", None)


def _speechlike(seconds: float, rate: int = SR, gain: float = 0.05) -> np.ndarray:
    rng = np.random.default_rng(3)
    t = np.arange(int(seconds * rate)) / rate
    y = sum(np.sin(2 * np.pi * f * t * (1 + 0.05 * np.sin(3 * t))) / k
            for k, f in enumerate((140.0, 280.0, 560.0, 1120.0), start=1))
    return (gain * y * (0.6 + 0.4 * np.sin(2 * np.pi * 2.5 * t)) +
            0.002 * rng.standard_normal(len(t))).astype(np.float32)


def test_front_end_equals_resemblyzers(resemblyzer):
    _, audio, _ = resemblyzer
    y = _speechlike(1.3)
    reference = audio.wav_to_mel_spectrogram(audio.normalize_volume(y, -30, increase_only=True))
    np.testing.assert_allclose(encoder_mel(y, SR), reference, rtol=1e-5, atol=1e-7)
    loud = 20 * y  # above -30 dBFS: left as it is (increase only)
    np.testing.assert_allclose(encoder_mel(loud, SR), audio.wav_to_mel_spectrogram(loud),
                               rtol=1e-5, atol=1e-6)


def test_embedding_and_states_equal_resemblyzers_encoder(resemblyzer):
    import torch

    _, audio, encoder = resemblyzer
    mel = encoder_mel(_speechlike(1.7), SR)
    embedding, states = encoder_states(mel)
    with torch.no_grad():
        x = torch.from_numpy(mel)[None]
        reference_embedding = encoder(x)[0].numpy()
        last_layer = encoder.lstm(x)[0][0].numpy()
    np.testing.assert_allclose(embedding, reference_embedding, rtol=1e-4, atol=1e-6)
    assert [s.shape for s in states] == [(len(mel), 256)] * 3
    np.testing.assert_allclose(states[2], last_layer, rtol=1e-4, atol=1e-6)


def test_functionals_are_embedding_then_mean_and_std_of_each_layer():
    y = _speechlike(1.2)
    vector = extract_ge2e(y, ExtractionConfig())
    embedding, states = encoder_states(encoder_mel(y, SR))
    assert vector.shape == (1, 1792) and vector.dtype == np.float32
    expected = np.concatenate([embedding] + [f(s, axis=0) for s in states for f in (np.mean, np.std)])
    np.testing.assert_allclose(vector[0], expected, rtol=1e-5, atol=1e-6)
    assert is_utterance_level("GE2E", ExtractionConfig())


def test_frames_lie_on_the_20ms_grid():
    cfg = ExtractionConfig(smile_level="lld")
    y = _speechlike(1.01)
    frames = extract_ge2e(y, cfg)
    assert frames.shape == (expected_frames(len(y), cfg), 768)
    _, states = encoder_states(encoder_mel(y, SR))
    encoder_frames = np.concatenate(states, axis=1)  # 10 ms grid: frame 2t is at t x 20 ms
    np.testing.assert_allclose(frames[:-1], encoder_frames[::2][: len(frames) - 1], atol=1e-6)
    assert not is_utterance_level("GE2E", cfg)


def test_other_sample_rates_are_resampled_to_16k():
    y16 = _speechlike(1.0)
    y8 = _speechlike(1.0, rate=8000)
    cfg8 = ExtractionConfig(sample_rate=8000)
    assert extract_ge2e(y8, cfg8).shape == (1, 1792)
    assert encoder_mel(y8, 8000).shape[0] == encoder_mel(y16, SR).shape[0]


def test_silent_input_is_refused():
    with pytest.raises(AudioError, match="silent"):
        extract_ge2e(np.zeros(SR, dtype=np.float32), ExtractionConfig())


def test_missing_package_gives_one_clear_line(monkeypatch, synthetic_features, tmp_path, capsys):
    monkeypatch.setattr(speaker_encoder.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(EncoderUnavailable, match="pip install resemblyzer"):
        speaker_encoder.require_encoder()
    code = extract_main(["--dataset", "EMODB", "--raw_dir", str(synthetic_features["raw"]),
                         "--features", "GE2E",
                         "--features_root", str(tmp_path / "f"), "--no_progress"])
    err = capsys.readouterr().err
    assert code == 2 and "resemblyzer" in err and "Traceback" not in err


@pytest.fixture(scope="module")
def ge2e_setup(synthetic_features):
    code = extract_main(["--dataset", "EMODB", "--raw_dir", str(synthetic_features["raw"]),
                         "--features_root", str(synthetic_features["features"]),
                         "--features", "GE2E", "--workers", "2", "--no_progress"])
    assert code == 0
    return synthetic_features


def test_extraction_stores_what_extract_ge2e_gives(ge2e_setup):
    from src.data_processing.audio import load_audio

    fs = load_feature_set("EMODB", "GE2E", ge2e_setup["features"],
                          config_hash=ExtractionConfig().feature_hash("GE2E"))
    assert len(fs.arrays) == len(fs.metadata) > 0
    for i in (0, 5):
        direct = extract_ge2e(load_audio(fs.metadata.loc[i, "path"], ExtractionConfig()),
                              ExtractionConfig())
        np.testing.assert_allclose(fs.arrays[i], direct, rtol=1e-5, atol=1e-6)


def test_logreg_on_ge2e_trains_and_predicts_new_audio(ge2e_setup, tmp_path):
    import soundfile as sf

    assert cli(ge2e_setup, tmp_path, "--mode", "train", "--feature_type", "GE2E", "--model",
               "logreg", "--protocol", "loso", "--speaker_norm", "--run_id", "ge2e",
               "--verbose", "0") == 0
    run_dir = tmp_path / "models" / "EMODB" / "GE2E" / "ge2e"
    assert json.loads((run_dir / "config.json").read_text())["input_dims"] == {"GE2E": 1792}
    wav = tmp_path / "new.wav"
    sf.write(wav, tone(1500.0, 1.0, np.random.default_rng(7)), SR)
    out = tmp_path / "preds.csv"
    assert cli(ge2e_setup, tmp_path, "--mode", "predict", "--test_path", str(run_dir),
               "--audio", str(wav), "--output", str(out)) == 0
    table = pd.read_csv(out)
    assert len(table) == 1 and table.loc[0, "emotion"] in set(
        json.loads((run_dir / "config.json").read_text())["class_names"])
