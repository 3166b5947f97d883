"""Audio loading and spectral features: librosa equivalence, frame counts and every bad input."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
import tempfile
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from src.data_processing.audio import AudioError, load_audio
from src.data_processing.config import ExtractionConfig, timnet_config
from src.data_processing.features import expected_frames, extract_file, extract_spectral

CFG = ExtractionConfig()
REPO = Path(__file__).resolve().parents[1]


def librosa_reference(y: np.ndarray, cfg: ExtractionConfig):
    kwargs = dict(n_fft=cfg.n_fft, hop_length=cfg.hop_length, win_length=cfg.win_length,
                  n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax)
    mfcc = librosa.feature.mfcc(y=y, sr=cfg.sample_rate, n_mfcc=cfg.n_mfcc, **kwargs)
    mel = librosa.feature.melspectrogram(y=y, sr=cfg.sample_rate, **kwargs)
    log_mel = librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=cfg.top_db)
    return mfcc.T, log_mel.T


@pytest.mark.parametrize("cfg", [CFG, timnet_config("EMODB"),
                                 ExtractionConfig(n_mels=64, n_mfcc=13, fmin=50.0, fmax=7000.0)],
                         ids=["default", "timnet", "custom"])
def test_spectral_matches_librosa(cfg, make_wav, tmp_path):
    path = make_wav(tmp_path / "t.wav", 1.37, cfg.sample_rate, freq=310.0)
    y = load_audio(path, cfg)
    out = extract_spectral(y, cfg, ("MFCC", "LogMel"))
    mfcc, log_mel = librosa_reference(y, cfg)
    assert out["MFCC"].dtype == np.float32 and out["LogMel"].dtype == np.float32
    assert out["MFCC"].shape == (expected_frames(len(y), cfg), cfg.n_mfcc)
    assert out["LogMel"].shape == (expected_frames(len(y), cfg), cfg.n_mels)
    np.testing.assert_allclose(out["MFCC"], mfcc, rtol=0, atol=1e-4)
    np.testing.assert_allclose(out["LogMel"], log_mel, rtol=0, atol=1e-4)
    assert out["MFCC"].flags["C_CONTIGUOUS"]
    # one feature alone is the same as computed together
    np.testing.assert_array_equal(extract_spectral(y, cfg, ["mfcc"])["MFCC"], out["MFCC"])


def test_spectral_matches_librosa_on_real_speech(data_root):
    path = data_root / "EMODB" / "wav" / "03a01Fa.wav"
    y = load_audio(path, CFG)
    out = extract_spectral(y, CFG)
    mfcc, log_mel = librosa_reference(y, CFG)
    np.testing.assert_allclose(out["MFCC"], mfcc, rtol=0, atol=1e-4)
    np.testing.assert_allclose(out["LogMel"], log_mel, rtol=0, atol=1e-4)
    assert out["MFCC"].shape[0] == 1 + sf.info(path).frames // CFG.hop_length


@pytest.mark.parametrize("n", [400, 401, 511, 512, 639, 640, 641, 16000, 16319, 16320])
def test_frame_count(n):
    y = np.random.default_rng(n).standard_normal(n).astype(np.float32) * 0.1
    out = extract_spectral(y, CFG)
    assert out["LogMel"].shape[0] == expected_frames(n, CFG) == 1 + n // 320
    assert np.isfinite(out["LogMel"]).all() and np.isfinite(out["MFCC"]).all()


def test_unknown_feature_and_bad_shape():
    with pytest.raises(ValueError, match="unknown feature"):
        extract_spectral(np.zeros(1000, np.float32), CFG, ["Pitch"])
    with pytest.raises(ValueError, match="1-D"):
        extract_spectral(np.zeros((2, 1000), np.float32), CFG)


def test_non_finite_waveform_is_refused_not_patched():
    y = np.full(2000, 0.1, np.float32)
    y[100] = np.inf
    with pytest.raises(AudioError, match="non-finite"):
        extract_spectral(y, CFG)


# -------------------------------------------------------------------------------- bad inputs
def write_float(path: Path, data: np.ndarray, sr: int = 16000) -> Path:
    sf.write(path, data, sr, subtype="FLOAT")
    return path


def bad_file(kind: str, folder: Path, make_wav) -> Path:
    path = folder / f"{kind}.wav"
    if kind == "missing":
        return path
    if kind == "zero_byte":
        path.write_bytes(b"")
    elif kind == "corrupt":
        good = make_wav(folder / "good.wav", 1.0)
        path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt " + good.read_bytes()[200:400])
    elif kind == "text":
        path.write_text("this is not audio at all\n" * 50)
    elif kind == "silent":
        sf.write(path, np.zeros(16000, np.float32), 16000)
    elif kind == "too_short":
        make_wav(path, 399 / 16000)
    elif kind == "too_short_8k":
        make_wav(path, 150 / 8000, sr=8000)   # 300 samples after resampling to 16 kHz
    elif kind == "nan":
        data = np.full(16000, 0.1, np.float32)
        data[5000] = np.nan
        write_float(path, data)
    elif kind == "inf":
        data = np.full(16000, 0.1, np.float32)
        data[7] = -np.inf
        write_float(path, data)
    return path


@pytest.mark.parametrize("kind,reason", [
    ("missing", "cannot read audio"), ("zero_byte", "cannot read audio: empty"),
    ("corrupt", "cannot read audio"), ("text", "cannot read audio"), ("silent", "silent"),
    ("too_short", "too short"), ("too_short_8k", "too short"), ("nan", "NaN"), ("inf", "NaN/Inf"),
])
def test_bad_inputs_raise_audio_error(kind, reason, tmp_path, make_wav):
    path = bad_file(kind, tmp_path, make_wav)
    with pytest.raises(AudioError, match=reason):
        load_audio(path, CFG)
    with pytest.raises(AudioError):
        extract_file(path, CFG)


@pytest.mark.parametrize("sr", [8000, 22050, 44100, 48000])
def test_resampled_input(sr, tmp_path, make_wav):
    path = make_wav(tmp_path / f"r{sr}.wav", 1.25, sr=sr)
    y = load_audio(path, CFG)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) - 1.25 * 16000) <= 1
    out = extract_file(path, CFG)
    assert out["MFCC"].shape[0] == 1 + len(y) // 320 == pytest.approx(1.25 * 50 + 1, abs=1)
    # the resampled tone keeps its pitch: spectral peak near 220 Hz
    spectrum = np.abs(np.fft.rfft(y))
    assert abs(np.argmax(spectrum) * 16000 / len(y) - 220.0) < 5.0


def test_stereo_is_down_mixed(tmp_path, make_wav):
    path = make_wav(tmp_path / "st.wav", 0.5, channels=2, subtype="FLOAT")
    data, _ = sf.read(path, dtype="float32")
    assert data.shape[1] == 2 and not np.allclose(data[:, 0], data[:, 1])
    np.testing.assert_allclose(load_audio(path, CFG), data.mean(axis=1), atol=1e-7)


def test_normalise_fix_length_and_trim(tmp_path, make_wav):
    path = make_wav(tmp_path / "n.wav", 1.0, amplitude=0.2)
    y0 = load_audio(path, CFG)
    peak = load_audio(path, dataclasses.replace(CFG, normalize="peak"))
    assert np.max(np.abs(peak)) == pytest.approx(1.0, abs=1e-6)
    rms = load_audio(path, dataclasses.replace(CFG, normalize="rms"))
    assert np.sqrt(np.mean(rms.astype(np.float64) ** 2)) == pytest.approx(0.1, rel=1e-4)

    padded = load_audio(path, dataclasses.replace(CFG, fixed_samples=20000))
    assert len(padded) == 20000 and np.all(padded[16000:] == 0)
    np.testing.assert_array_equal(padded[:16000], y0)
    cropped = load_audio(path, dataclasses.replace(CFG, fixed_samples=10000))
    np.testing.assert_array_equal(cropped, y0[3000:13000])

    quiet = np.concatenate([np.zeros(8000, np.float32), y0, np.zeros(8000, np.float32)])
    sf.write(tmp_path / "pad.wav", quiet, 16000, subtype="FLOAT")
    trimmed = load_audio(tmp_path / "pad.wav", dataclasses.replace(CFG, trim_silence=True))
    assert 15000 <= len(trimmed) <= 18000 < len(quiet)


def test_extract_file_streams(tmp_path, make_wav):
    path = make_wav(tmp_path / "x.wav", 0.8)
    out = extract_file(path, CFG, ["LogMel", "MFCC"])
    assert list(out) == ["LogMel", "MFCC"]
    assert out["LogMel"].shape == (1 + 12800 // 320, 128) and out["MFCC"].shape == (41, 40)
    with pytest.raises(ValueError, match="unknown feature"):
        extract_file(path, CFG, ["Chroma"])


def test_data_processing_never_imports_tensorflow_or_torch():
    code = ("import sys; import src.data_processing.run_data_processing, src.data_processing.store,"
            " src.data_processing.features, src.data_processing.hubert, src.data_processing.download;"
            " bad = [m for m in ('tensorflow', 'torch', 'keras', 'torchaudio') if m in sys.modules];"
            " print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------------------------- properties
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sr=st.sampled_from([8000, 16000, 22050, 44100, 48000]),
       seconds=st.floats(min_value=0.0, max_value=3.0),
       amplitude=st.floats(min_value=1e-3, max_value=1.0),
       freq=st.floats(min_value=50.0, max_value=3900.0),
       subtype=st.sampled_from(["PCM_16", "FLOAT"]))
def test_features_finite_for_any_valid_input(sr, seconds, amplitude, freq, subtype):
    min_n = int(np.ceil(CFG.win_length * sr / CFG.sample_rate)) + 2
    n = max(min_n, int(seconds * sr))
    t = np.arange(n) / sr
    data = (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "p.wav"
        sf.write(path, data, sr, subtype=subtype)
        y = load_audio(path, CFG)
        out = extract_file(path, CFG)
    assert abs(len(y) - n * CFG.sample_rate / sr) <= 1
    for name, dims in (("MFCC", CFG.n_mfcc), ("LogMel", CFG.n_mels)):
        assert out[name].shape == (1 + len(y) // CFG.hop_length, dims)
        assert np.isfinite(out[name]).all()
