"""Synthetic corpora for end-to-end tests: emotions coded by pitch, so classes are separable."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

SR = 16000
# EMODB letters -> a tone frequency: classes are separable by pitch.
TONES = {"W": 220.0, "T": 660.0, "N": 1500.0}
# A tiny, fast network for CLI tests.
TINY = ["--filter_size", "8", "--kernel_size", "2", "--stack_size", "1", "--dilation_size", "3",
        "--batch_size", "8", "--lr", "3e-3", "--patience", "0", "--verbose", "0"]


def tone(freq: float, seconds: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    wave = 0.4 * np.sin(2 * np.pi * freq * t) + 0.2 * np.sin(2 * np.pi * 2 * freq * t)
    return (wave + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def write_emodb_like(root: Path, speakers=("03", "08", "10", "11"), per_class=4,
                     seed=0) -> Path:
    """Files named like EMODB (SSTTTEV.wav) with pitch-coded emotions."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for speaker in speakers:
        for letter, freq in TONES.items():
            for k in range(per_class):
                seconds = rng.uniform(0.6, 1.4)
                jitter = freq * rng.uniform(0.95, 1.05)
                sf.write(root / f"{speaker}a0{k}{letter}{'abcd'[k % 4]}.wav",
                         tone(jitter, seconds, rng), SR)
    return root


def write_shifted_manifest(root: Path, scale: float, noise: float, per_class=6, seed=1,
                           labels=("angry", "sad", "neutral"), gain: float = 1.0) -> Path:
    """A CSV-manifest corpus of the same pitch-coded emotions with every pitch scaled by `scale`,
    louder background noise and the level multiplied by `gain`: a deliberate domain shift."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for label, freq in zip(labels, TONES.values()):
        for k in range(per_class):
            name = f"{label}_{k:02d}.wav"
            wave = tone(freq * scale * rng.uniform(0.95, 1.05), rng.uniform(0.6, 1.4), rng)
            wave = wave + noise * rng.standard_normal(len(wave)).astype(np.float32)
            sf.write(root / name, gain * wave, SR)
            rows.append({"path": name, "label": label, "speaker": f"t{k % 3}"})
    manifest = root / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest


def cli(setup: dict, tmp: Path, *args: str) -> int:
    """`python -m src.training.main --data EMODB ...` on the `synthetic_features` corpus, with
    results and models under `tmp`."""
    from src.training.main import main as train_main

    return train_main(["--data", "EMODB", "--features_root", str(setup["features"]),
                       "--results_root", str(tmp / "results"), "--models_root",
                       str(tmp / "models"), *args])
