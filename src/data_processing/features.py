"""Spectral features: MFCC and log-mel from one STFT per waveform.

For a waveform `y` at `config.sample_rate`:

    power = |librosa.stft(y, n_fft, hop_length, win_length, window="hann", center=True)|**2
    mel   = mel_basis(sr, n_fft, n_mels, fmin, fmax) @ power               (librosa.filters.mel)
    LogMel = power_to_db(mel, ref=1.0, amin=1e-10, top_db=config.top_db)  -> (frames, n_mels)
    MFCC   = scipy.fft.dct(LogMel, type=2, norm="ortho", over mels)[:n_mfcc] -> (frames, n_mfcc)

which equals `librosa.feature.mfcc` / `power_to_db(librosa.feature.melspectrogram(...))` with the
same settings (tests/test_audio_features.py checks both). With `center=True` the frame count is
`expected_frames(len(y), config)` = 1 + len(y) // hop_length for an even n_fft, and frame t is
centred on sample t * hop_length (20 ms steps with the defaults, the same grid as HuBERT).
"""
from __future__ import annotations

import functools
import os
import warnings
from typing import Iterable, Sequence

import numpy as np
import scipy.fft

from .audio import AudioError, load_audio
from .config import ENCODER_FEATURES, FEATURE_TYPES, SMILE_FEATURES, ExtractionConfig
from .config import expected_frames  # noqa: F401 - part of this module's interface
from .hubert import HubertExtractor
from .smile import extract_smile
from .speaker_encoder import extract_ge2e

SPECTRAL_FEATURES = ("MFCC", "LogMel")


@functools.lru_cache(maxsize=16)
def mel_basis(sample_rate: int, n_fft: int, n_mels: int, fmin: float,
              fmax: float | None) -> np.ndarray:
    """librosa's Slaney mel filterbank (n_mels, 1 + n_fft // 2), float32, cached per process."""
    import librosa  # heavy: librosa

    basis = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax,
                                dtype=np.float32)
    basis.setflags(write=False)
    return basis


def check_features(features: Iterable[str], allowed: Sequence[str] = SPECTRAL_FEATURES) -> tuple[str, ...]:
    """Canonical feature names (case-insensitive match against `allowed`), order kept."""
    lookup = {name.lower(): name for name in allowed}
    names = []
    for feature in features:
        key = str(feature).strip().lower()
        if key not in lookup:
            raise ValueError(f"unknown feature {feature!r}; expected one of {', '.join(allowed)}")
        if lookup[key] not in names:
            names.append(lookup[key])
    if not names:
        raise ValueError("no features requested")
    return tuple(names)


def extract_spectral(y: np.ndarray, config: ExtractionConfig,
                     features: Iterable[str] = SPECTRAL_FEATURES) -> dict[str, np.ndarray]:
    """MFCC and/or LogMel of a mono waveform at `config.sample_rate`, from one STFT.

    Returns {name: float32 C-contiguous array (frames, dims)}. Raises AudioError when the result
    is not finite (never papered over with nan_to_num).
    """
    import librosa  # heavy: librosa

    names = check_features(features)
    y = np.asarray(y, dtype=np.float32)
    if y.ndim != 1:
        raise ValueError(f"expected a 1-D waveform, got shape {y.shape}")
    if not np.isfinite(y).all():
        raise AudioError("non-finite samples (NaN/Inf)")
    with warnings.catch_warnings():
        # librosa warns when n_fft exceeds the signal; a signal of one window is still valid.
        warnings.filterwarnings("ignore", message="n_fft=.* is too large", category=UserWarning)
        spectrum = librosa.stft(y, n_fft=config.n_fft, hop_length=config.hop_length,
                                win_length=config.win_length, window="hann", center=True)
    power = np.square(spectrum.real) + np.square(spectrum.imag)
    mel = mel_basis(config.sample_rate, config.n_fft, config.n_mels, config.fmin, config.fmax) @ power
    log_mel = librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=config.top_db)
    if not np.isfinite(log_mel).all():
        raise AudioError("non-finite spectral features")
    out: dict[str, np.ndarray] = {}
    for name in names:
        if name == "LogMel":
            out[name] = np.ascontiguousarray(log_mel.T, dtype=np.float32)
        else:
            mfcc = scipy.fft.dct(log_mel, axis=0, type=2, norm="ortho")[: config.n_mfcc]
            out[name] = np.ascontiguousarray(mfcc.T, dtype=np.float32)
    return out


def extract_arrays(y: np.ndarray, config: ExtractionConfig,
                   features: Iterable[str]) -> dict[str, np.ndarray]:
    """Spectral (MFCC, LogMel), openSMILE (eGeMAPS, ComParE) and GE2E features of one
    conditioned waveform: {feature: float32 (frames, dims), or (1, dims) for functionals}."""
    names = check_features(features, SPECTRAL_FEATURES + SMILE_FEATURES + ENCODER_FEATURES)
    spectral = [n for n in names if n in SPECTRAL_FEATURES]
    out = extract_spectral(y, config, spectral) if spectral else {}
    for name in names:
        if name in SMILE_FEATURES:
            out[name] = extract_smile(y, config, name)
        elif name in ENCODER_FEATURES:
            out[name] = extract_ge2e(y, config)
    return {name: out[name] for name in names}


def extract_file(path: str | os.PathLike, config: ExtractionConfig,
                 features: Iterable[str] = SPECTRAL_FEATURES, hubert=None) -> dict[str, np.ndarray]:
    """Load `path` with `load_audio` and return {feature: (frames, dims) float32}.

    `features` may include "HuBERT"; pass a ready `HubertExtractor` as `hubert` to reuse a
    loaded model (otherwise one is built from `config`, which is slow). All frame-level streams
    of one file have `expected_frames(len(y), config)` frames when config.hop_length is 320 at
    16 kHz; openSMILE functionals are (1, dims).
    """
    names = check_features(features, FEATURE_TYPES)
    y = load_audio(path, config)
    out = extract_arrays(y, config, [n for n in names if n != "HuBERT"]) \
        if any(n != "HuBERT" for n in names) else {}
    if "HuBERT" in names:
        if hubert is None:
            hubert = _cached_hubert(config)
        out["HuBERT"] = hubert.extract_one(y, config.sample_rate)
    return {name: out[name] for name in names}


_HUBERT_CACHE: dict = {}


def _cached_hubert(config: ExtractionConfig):
    """One HubertExtractor per (path, layer, chunking) per process, reused across files."""
    key = (config.hubert_path, config.hubert_layer, config.hubert_chunk_seconds)
    if key not in _HUBERT_CACHE:
        _HUBERT_CACHE.clear()  # keep at most one model in memory
        _HUBERT_CACHE[key] = HubertExtractor(config)
    return _HUBERT_CACHE[key]
