"""Extraction settings shared by the feature extractors, the feature store and `predict`.

One frozen dataclass describes how audio becomes frames. It is saved beside every feature set
(`config.json`) and every trained model, and its hash names the feature-set folder, so features
made with different settings never mix.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

FRAME_FEATURES = ("MFCC", "LogMel", "HuBERT")
SMILE_FEATURES = ("eGeMAPS", "ComParE")  # openSMILE eGeMAPSv02 and ComParE_2016
ENCODER_FEATURES = ("GE2E",)  # pretrained speaker encoder (resemblyzer), speaker_encoder.py
# features with a level (`smile_level`): one vector per utterance or frames on the 20 ms grid
LEVELLED_FEATURES = SMILE_FEATURES + ENCODER_FEATURES
FEATURE_TYPES = FRAME_FEATURES + LEVELLED_FEATURES
SMILE_LEVELS = ("functionals", "lld")
FUSION = "FUSION"


@dataclasses.dataclass(frozen=True)
class ExtractionConfig:
    """How one file's waveform turns into (frames, dims) arrays.

    Defaults: 16 kHz, 25 ms Hann window (400 samples) zero-padded to a 512-point FFT, 20 ms hop
    (320 samples), so every stream runs at 50 frames/s like HuBERT's output. TIM-Net's setting is
    reachable with `timnet_config()`.
    """

    sample_rate: int = 16000
    n_fft: int = 512
    win_length: int = 400
    hop_length: int = 320
    n_mels: int = 128
    n_mfcc: int = 40
    fmin: float = 0.0
    fmax: float | None = None
    top_db: float | None = 80.0
    # Waveform conditioning (off by default; recorded so a model can refuse mismatched input).
    trim_silence: bool = False
    trim_top_db: float = 30.0
    normalize: str = "none"  # none | peak | rms
    # Fixed-length pad / centre-crop in samples (TIM-Net: EMODB 96000, RAVDESS 110000); 0 = off.
    fixed_samples: int = 0
    # HuBERT
    hubert_path: str = "facebook/hubert-base-ls960"
    hubert_layer: int = -1
    hubert_chunk_seconds: float = 20.0
    # openSMILE and GE2E: one vector per utterance (functionals) or frames on the 20 ms grid (lld)
    smile_level: str = "functionals"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ExtractionConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def feature_hash(self, feature: str) -> str:
        """8-hex-digit hash of the settings that affect `feature` (names its folder)."""
        return hashlib.sha1(
            json.dumps(self.relevant_settings(feature), sort_keys=True).encode()
        ).hexdigest()[:8]

    def relevant_settings(self, feature: str) -> dict[str, Any]:
        """The subset of settings that change the values of `feature`."""
        common = ["sample_rate", "trim_silence", "trim_top_db", "normalize", "fixed_samples"]
        spectral = ["n_fft", "win_length", "hop_length", "n_mels", "fmin", "fmax", "top_db"]
        per_feature = {
            "MFCC": common + spectral + ["n_mfcc"],
            "LogMel": common + spectral,
            "HuBERT": common + ["hubert_path", "hubert_layer", "hubert_chunk_seconds"],
        }
        lld_grid = ["hop_length"] if self.smile_level == "lld" else []
        for name in LEVELLED_FEATURES:
            per_feature[name] = common + ["smile_level"] + lld_grid
        if feature not in per_feature:
            raise ValueError(f"unknown feature {feature!r}; expected one of {FEATURE_TYPES}")
        values = self.to_dict()
        return {"feature": feature, **{k: values[k] for k in per_feature[feature]}}


def expected_frames(n_samples: int, config: ExtractionConfig) -> int:
    """Frames that a centred STFT of `n_samples` samples yields (1 + n // hop for even n_fft):
    the frame grid shared by every frame-level feature."""
    pad = 2 * (config.n_fft // 2)
    return 1 + (int(n_samples) + pad - config.n_fft) // config.hop_length


def is_utterance_level(feature: str, config: ExtractionConfig | dict) -> bool:
    """True when `feature` made with `config` is one vector per utterance (stored as (1, dims)):
    openSMILE and GE2E functionals. Every other feature is frame-level (frames, dims)."""
    level = config.get("smile_level", "functionals") if isinstance(config, dict) \
        else config.smile_level
    return feature in LEVELLED_FEATURES and level == "functionals"


def timnet_config(dataset: str) -> ExtractionConfig:
    """TIM-Net's published front end: librosa defaults at 22.05 kHz, 39 MFCCs, fixed length."""
    fixed = {"EMODB": 96000, "RAVDESS": 110000}.get(dataset.upper(), 0)
    return ExtractionConfig(sample_rate=22050, n_fft=2048, win_length=2048, hop_length=512,
                            n_mfcc=39, fixed_samples=fixed)
