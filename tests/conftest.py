"""Shared fixtures: synthetic WAV files and the read-only shared corpora.

`make_wav(path, seconds=1.0, sr=16000, channels=1, subtype="PCM_16", freq=220.0, amplitude=0.5)`
writes a tone (with a little deterministic noise) with soundfile and returns the path.
`data_root` is <workspace>/shared/data (the read-only EMODB/RAVDESS copies); tests that need it
are skipped when it is absent.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def tone(seconds: float, sr: int = 16000, freq: float = 220.0, amplitude: float = 0.5,
         seed: int = 0) -> np.ndarray:
    """Mono float32 tone with harmonics and light noise."""
    n = int(round(seconds * sr))
    t = np.arange(n) / sr
    rng = np.random.default_rng(seed)
    wave = np.sin(2 * np.pi * freq * t) + 0.3 * np.sin(2 * np.pi * 3 * freq * t)
    wave = wave / 1.3 + 0.02 * rng.standard_normal(n)
    return (amplitude * wave).astype(np.float32)


def write_wav(path, seconds: float = 1.0, sr: int = 16000, channels: int = 1,
              subtype: str = "PCM_16", freq: float = 220.0, amplitude: float = 0.5,
              seed: int = 0) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mono = tone(seconds, sr, freq, amplitude, seed)
    data = mono if channels == 1 else np.stack(
        [mono * (1.0 - 0.2 * c) for c in range(channels)], axis=1)
    sf.write(path, data, sr, subtype=subtype)
    return path


@pytest.fixture
def make_wav():
    """The `write_wav` helper: make_wav(path, seconds, sr, channels, subtype, ...) -> Path."""
    return write_wav


@pytest.fixture
def data_root() -> Path:
    if not (SHARED_DATA / "EMODB").is_dir() or not (SHARED_DATA / "RAVDESS").is_dir():
        pytest.skip(f"shared corpora not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def synthetic_features(tmp_path_factory) -> dict:
    """An EMODB-like synthetic corpus (pitch-coded emotions) with MFCC and LogMel extracted:
    {"base", "raw", "features"} paths."""
    from src.data_processing.run_data_processing import main as extract_main
    from tests.synthetic import write_emodb_like

    base = tmp_path_factory.mktemp("synthetic")
    raw = write_emodb_like(base / "raw")
    features = base / "features"
    code = extract_main(["--dataset", "EMODB", "--raw_dir", str(raw), "--features_root",
                         str(features), "--features", "MFCC,LogMel", "--workers", "1"])
    assert code == 0
    return {"base": base, "raw": raw, "features": features}
