"""Audio loading: any file libsndfile reads -> mono float32 at the configured rate, or AudioError.

`load_audio` is the single entry point for every extractor (spectral, HuBERT, `predict`), so a
file is conditioned the same way wherever it is used:

1. read with soundfile (always 2-D, float32), refuse empty/corrupt/non-audio files;
2. down-mix to mono (channel mean);
3. refuse NaN/Inf samples and silent files (peak below 1e-6);
4. resample with soxr (quality "HQ") when the file's rate differs from `config.sample_rate`;
5. refuse signals shorter than one analysis window (`config.win_length` samples);
6. optionally trim leading/trailing silence, normalise (peak -> 1.0, rms -> 0.1) and pad with
   zeros at the end / centre-crop to `config.fixed_samples`.
"""
from __future__ import annotations

import os

import numpy as np
import soundfile as sf
import soxr

from .config import ExtractionConfig

SILENCE_PEAK = 1e-6
RMS_TARGET = 0.1


class AudioError(ValueError):
    """A file cannot be used; the message is a short reason (goes into failures.csv)."""


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Read `path` as (mono float32 samples, sample rate) without any checks on the content."""
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise AudioError(f"cannot read audio: {exc.strerror or exc}") from None
    if size == 0:
        raise AudioError("cannot read audio: empty file (0 bytes)")
    try:
        data, rate = sf.read(path, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError, OSError, TypeError) as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise AudioError(f"cannot read audio: {reason}") from None
    if data.shape[1] == 1:
        mono = data[:, 0]
    else:
        mono = data.mean(axis=1, dtype=np.float32)
    return np.ascontiguousarray(mono, dtype=np.float32), int(rate)


def condition(y: np.ndarray, rate: int, config: ExtractionConfig) -> np.ndarray:
    """Checks, resampling and optional trim/normalise/fix-length of a mono waveform."""
    if y.size == 0:
        raise AudioError("too short: no samples")
    if not np.isfinite(y).all():
        raise AudioError("non-finite samples (NaN/Inf)")
    if float(np.max(np.abs(y))) < SILENCE_PEAK:
        raise AudioError("silent: peak below 1e-6")
    if rate != config.sample_rate:
        y = soxr.resample(y, rate, config.sample_rate, quality="HQ")
        y = np.ascontiguousarray(y, dtype=np.float32)
    if len(y) < config.win_length:
        raise AudioError(f"too short: {len(y)} samples < one {config.win_length}-sample window")

    if config.trim_silence:
        import librosa  # heavy: librosa

        y, _ = librosa.effects.trim(y, top_db=config.trim_top_db)
        if len(y) < config.win_length:
            raise AudioError(f"too short after trimming silence: {len(y)} samples")

    if config.normalize == "peak":
        y = y / np.max(np.abs(y))
    elif config.normalize == "rms":
        rms = float(np.sqrt(np.mean(np.square(y, dtype=np.float64))))
        y = y * (RMS_TARGET / rms)
    elif config.normalize != "none":
        raise ValueError(f"normalize must be none, peak or rms, not {config.normalize!r}")

    if config.fixed_samples:
        y = fix_length(y, config.fixed_samples)
    return np.ascontiguousarray(y, dtype=np.float32)


def fix_length(y: np.ndarray, n: int) -> np.ndarray:
    """Zero-pad at the end, or take the centre `n` samples."""
    if len(y) < n:
        return np.pad(y, (0, n - len(y)))
    start = (len(y) - n) // 2
    return y[start:start + n]


def load_audio(path: str | os.PathLike, config: ExtractionConfig) -> np.ndarray:
    """Mono float32 waveform of `path` at `config.sample_rate`, conditioned per `config`.

    Raises AudioError (short reason) for unreadable, zero-byte, non-audio, NaN/Inf, silent and
    too-short files.
    """
    y, rate = read_audio(path)
    return condition(y, rate, config)


def fixed_length_warning(paths, min_files: int = 20, share: float = 0.9) -> str | None:
    """One line when at least `share` of the (>= `min_files`) audio files `paths` last the same
    time to 10 ms (file headers only), else None. A corpus copy cut or padded to one length
    loses the end of every longer utterance and the duration cue (the RAVDESS copy of this
    project's machine: 1434 files of 2.39 s, most cut while speaking;
    benchmarks/bench_truncation.py measures what such a cut costs)."""
    seconds = []
    for path in paths:
        try:
            info = sf.info(str(path))
        except Exception:  # noqa: BLE001 - unreadable files are extraction's failures to report
            continue
        seconds.append(round(info.frames / info.samplerate, 2))
    if len(seconds) < min_files:
        return None
    values, counts = np.unique(seconds, return_counts=True)
    if counts.max() < share * len(seconds):
        return None
    return (f"{counts.max()} of {len(seconds)} files last exactly "
            f"{values[counts.argmax()]:.2f} s: the corpus looks cut or padded to one length, "
            f"so longer utterances have lost their end (compare with the original recordings)")
