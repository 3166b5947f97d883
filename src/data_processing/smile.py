"""openSMILE paralinguistic features (audEERING's `opensmile` package, which ships the
SMILExtract library and its configs; nothing is downloaded).

    eGeMAPS = eGeMAPSv02  (Eyben et al. 2016): 88 functionals, or 25 low-level descriptors
    ComParE = ComParE_2016 (the ComParE challenge set): 6373 functionals, or 65 descriptors

`ExtractionConfig.smile_level` picks the level:
- "functionals": one vector per utterance, returned as a (1, dims) array (so the feature store
  and the padded training arrays treat it as an utterance of one frame).
- "lld": openSMILE's low-level descriptors (a 10 ms hop with 20 ms (eGeMAPS) or 60 ms
  (ComParE) windows) resampled onto the project's frame grid: frame t of every stream is centred
  on t * hop_length / sample_rate seconds (20 ms steps with the defaults) and there are
  `expected_frames(len(y), config)` of them, as for MFCC/LogMel/HuBERT. Each descriptor is
  linearly interpolated between the centres of openSMILE's frames ((start + end) / 2), and held
  constant before the first and after the last centre (`np.interp`).

openSMILE emits NaN/Inf on silent or too-short input (e.g. pitch statistics without a voiced
frame). Such a file is not stored: `extract_smile` raises AudioError naming how many values were
not finite, and the extraction lists the file in the set's failures.csv with that reason.
"""
from __future__ import annotations

import functools

import numpy as np

from .audio import AudioError
from .config import SMILE_FEATURES, SMILE_LEVELS, ExtractionConfig, expected_frames

SMILE_SETS = {"eGeMAPS": "eGeMAPSv02", "ComParE": "ComParE_2016"}


@functools.lru_cache(maxsize=4)
def smile_extractor(feature: str, level: str):
    """One `opensmile.Smile` per (feature, level) per process (building one parses its config)."""
    import opensmile  # heavy: opensmile

    if feature not in SMILE_FEATURES or level not in SMILE_LEVELS:
        raise ValueError(f"unknown openSMILE feature/level {feature!r}/{level!r}; expected one "
                         f"of {', '.join(SMILE_FEATURES)} / {', '.join(SMILE_LEVELS)}")
    feature_level = (opensmile.FeatureLevel.Functionals if level == "functionals"
                     else opensmile.FeatureLevel.LowLevelDescriptors)
    return opensmile.Smile(feature_set=getattr(opensmile.FeatureSet, SMILE_SETS[feature]),
                           feature_level=feature_level)


def grid_times(n_samples: int, config: ExtractionConfig) -> np.ndarray:
    """(frames,) centre times in seconds of the project's frame grid for a signal of
    `n_samples` samples: t * hop / sr for t < 1 + n_samples // hop (a centred STFT's count)."""
    return np.arange(expected_frames(n_samples, config)) * config.hop_length / config.sample_rate


def resample_to_grid(values: np.ndarray, centres: np.ndarray, times: np.ndarray) -> np.ndarray:
    """(len(times), dims): each column of `values` (frames, dims), sampled at `centres`
    seconds, linearly interpolated at `times` (held constant outside the centres)."""
    out = np.empty((len(times), values.shape[1]), dtype=np.float32)
    for d in range(values.shape[1]):
        out[:, d] = np.interp(times, centres, values[:, d])
    return out


def extract_smile(y: np.ndarray, config: ExtractionConfig, feature: str) -> np.ndarray:
    """openSMILE `feature` of a mono waveform at config.sample_rate: (1, dims) functionals or
    (frames, dims) descriptors on the frame grid, float32. Raises AudioError when openSMILE fails
    or returns non-finite values."""
    smile = smile_extractor(feature, config.smile_level)
    try:
        table = smile.process_signal(np.asarray(y, dtype=np.float32), config.sample_rate)
    except Exception as exc:  # noqa: BLE001 - openSMILE raises plain RuntimeErrors
        raise AudioError(f"openSMILE {feature} failed: {exc}") from None
    values = table.to_numpy(dtype=np.float64)
    if values.size == 0:
        raise AudioError(f"openSMILE {feature} returned no frames (input too short)")
    bad = int((~np.isfinite(values)).sum())
    if bad:
        raise AudioError(f"openSMILE {feature} returned {bad} non-finite value(s) "
                         f"(silent or too-short input)")
    if config.smile_level == "functionals":
        return np.ascontiguousarray(values[:1], dtype=np.float32)
    starts = table.index.get_level_values("start").total_seconds().to_numpy()
    ends = table.index.get_level_values("end").total_seconds().to_numpy()
    return resample_to_grid(values, (starts + ends) / 2, grid_times(len(y), config))


def smile_feature_names(feature: str, level: str) -> list[str]:
    """openSMILE's column names of `feature` at `level`
    (e.g. 'F0semitoneFrom27.5Hz_sma3nz_amean')."""
    return list(smile_extractor(feature, level).feature_names)
