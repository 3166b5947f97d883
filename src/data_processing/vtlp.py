"""Vocal tract length perturbation (VTLP) of stored log-mel and MFCC frames, as linear maps.

VTLP (Jaitly & Hinton 2013) rescales the frequency axis of a spectrum by a factor alpha around
1, which mimics a speaker with a shorter or longer vocal tract. Applied to features already
extracted it is a fixed linear map per alpha:

    LogMel (frames, n_mels):  L' = L @ M.T,  M (n_mels, n_mels): band j of the warped spectrum
        reads the original at frequency g(f_j), f_j the band's centre, by linear interpolation
        between the two neighbouring bands (`log_mel_warp`);
    MFCC (frames, k) = L @ D_k.T with D_k the first k rows of the orthonormal DCT-II over the
        mel bands: c' = c @ W.T with W = D_k M D_k.T (k, k), the warp of the smooth envelope
        D_k.T c that the k coefficients describe (`mfcc_warp`). W is the identity at alpha 1.

g is the piecewise-linear VTLP map: f -> alpha f up to a boundary, then a straight line to the
Nyquist frequency (so the band edges stay put). With alpha > 1 each band reads the original at
a higher frequency: formants move down, as from a longer vocal tract.
"""
from __future__ import annotations

import librosa
import numpy as np
import scipy.fft

__all__ = ["vtlp_frequency", "log_mel_warp", "mfcc_warp", "BOUNDARY_HZ"]

BOUNDARY_HZ = 4800.0  # Jaitly & Hinton's F_hi


def vtlp_frequency(freqs: np.ndarray, alpha: float, sample_rate: int,
                   boundary_hz: float = BOUNDARY_HZ) -> np.ndarray:
    """g(f) (same shape as freqs, Hz): alpha f below boundary min(alpha, 1) / alpha, then the
    line from there to (nyquist, nyquist)."""
    if alpha <= 0:
        raise ValueError(f"the VTLP factor must be positive, got {alpha}")
    freqs = np.asarray(freqs, dtype=np.float64)
    nyquist = sample_rate / 2.0
    boundary = min(boundary_hz, 0.9 * nyquist)
    cut = boundary * min(alpha, 1.0) / alpha
    slope = (nyquist - boundary * min(alpha, 1.0)) / (nyquist - cut)
    return np.where(freqs <= cut, alpha * freqs, nyquist - slope * (nyquist - freqs))


def log_mel_warp(alpha: float, sample_rate: int, n_mels: int, fmin: float = 0.0,
                 fmax: float | None = None) -> np.ndarray:
    """M (n_mels, n_mels) float64: warped log-mel = M @ log-mel (one frame, bands of librosa's
    Slaney mel filterbank with these settings); rows sum to 1."""
    fmax = sample_rate / 2.0 if fmax is None else float(fmax)
    centres_hz = librosa.mel_frequencies(n_mels + 2, fmin=fmin, fmax=fmax)[1:-1]
    centres_mel = librosa.hz_to_mel(centres_hz)
    source_mel = librosa.hz_to_mel(vtlp_frequency(centres_hz, alpha, sample_rate))
    position = np.interp(source_mel, centres_mel, np.arange(n_mels, dtype=np.float64))
    low = np.floor(position).astype(int)
    high = np.minimum(low + 1, n_mels - 1)
    frac = position - low
    warp = np.zeros((n_mels, n_mels))
    rows = np.arange(n_mels)
    np.add.at(warp, (rows, low), 1.0 - frac)
    np.add.at(warp, (rows, high), frac)
    return warp


def mfcc_warp(alpha: float, sample_rate: int, n_mels: int, n_mfcc: int, fmin: float = 0.0,
              fmax: float | None = None) -> np.ndarray:
    """W (n_mfcc, n_mfcc) float64: warped MFCC = W @ MFCC (one frame), for MFCC = the first
    n_mfcc orthonormal DCT-II coefficients of the log-mel bands."""
    if not 0 < n_mfcc <= n_mels:
        raise ValueError(f"n_mfcc must be in [1, n_mels={n_mels}], got {n_mfcc}")
    dct = scipy.fft.dct(np.eye(n_mels), type=2, norm="ortho", axis=0)[:n_mfcc]  # D_k
    return dct @ log_mel_warp(alpha, sample_rate, n_mels, fmin, fmax) @ dct.T
