"""GE2E: the hidden states of a pretrained speaker encoder as features.

The encoder is Resemblyzer's voice encoder (the `resemblyzer` PyPI package ships its weights,
`resemblyzer/pretrained.pt`, so nothing is downloaded): a 3-layer LSTM (40 mel bands -> 256 units
per layer) trained with the generalised end-to-end (GE2E) speaker-verification loss, then a
256-unit linear layer + ReLU whose output, L2-normalised, is the speaker embedding. Its input is
resemblyzer's own front end: a 16 kHz waveform, volume raised to -30 dBFS when quieter
(`normalize_volume(..., increase_only=True)`), a power mel spectrogram of 40 bands, 25 ms window,
10 ms hop (`wav_to_mel_spectrogram`). Resemblyzer's voice-activity trimming is not applied (the
corpora's files are single utterances).

`ExtractionConfig.smile_level` picks the level, as for openSMILE:
- "functionals": one (1, 1792) vector per utterance = [embedding of the whole utterance (256) |
  mean over frames of layer 1's states (256) | their standard deviation (256) | the same for
  layer 2 | layer 3]. The embedding is the encoder's own output for the whole mel spectrogram
  (`VoiceEncoder.forward`), not resemblyzer's average over 1.6 s partials.
- "lld": the three layers' states side by side, (frames, 768), moved from the encoder's 10 ms
  grid (frame i centred on i x 10 ms) onto the project's frame grid by linear interpolation
  (`smile.resample_to_grid`).

Only the weights file is read from resemblyzer (with `torch.load(weights_only=True)`, so no code
runs); the network and front end are rebuilt here from its hyperparameters, and
tests/test_speaker_encoder.py checks them against resemblyzer's own `VoiceEncoder` and
`wav_to_mel_spectrogram`. torch is imported only when the encoder is first used.
"""
from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np
import soxr

from .audio import AudioError
from .config import ExtractionConfig
from .smile import grid_times, resample_to_grid

ENCODER_RATE = 16000      # resemblyzer.hparams: sampling_rate
ENCODER_WINDOW = 400      # mel_window_length 25 ms
ENCODER_HOP = 160         # mel_window_step 10 ms
ENCODER_HOP_S = ENCODER_HOP / ENCODER_RATE
N_MELS = 40               # mel_n_channels
TARGET_DBFS = -30.0       # audio_norm_target_dBFS
LAYERS, UNITS = 3, 256    # model_num_layers, model_hidden_size (= model_embedding_size)
FUNCTIONAL_DIMS = UNITS + LAYERS * 2 * UNITS   # 1792
FRAME_DIMS = LAYERS * UNITS                    # 768


class EncoderUnavailable(RuntimeError):
    """The encoder's weights (shipped in the resemblyzer package) are not installed."""


def weights_path() -> Path:
    """`pretrained.pt` inside the installed resemblyzer package (found without importing it:
    its audio module imports webrtcvad, which needs pkg_resources, for a VAD we do not use).
    Raises EncoderUnavailable (one line, how to fix) when it is missing."""
    spec = importlib.util.find_spec("resemblyzer")
    path = (Path(next(iter(spec.submodule_search_locations))) / "pretrained.pt"
            if spec is not None and spec.submodule_search_locations else None)
    if path is None or not path.is_file():
        raise EncoderUnavailable("GE2E needs the resemblyzer package, which ships the encoder "
                                 "weights (resemblyzer/pretrained.pt): pip install resemblyzer "
                                 "(it is in requirements.txt)")
    return path


def require_encoder() -> None:
    """Raise EncoderUnavailable unless the encoder's weights are installed (nothing loaded)."""
    weights_path()


@functools.lru_cache(maxsize=1)
def load_encoder():
    """([one single-layer torch LSTM per layer], linear layer) with the encoder's weights, CPU,
    eval mode, cached per process. One LSTM per layer so that each layer's states can be read
    (torch's multi-layer LSTM returns only the last one's); chained they are the encoder's
    3-layer LSTM."""
    import torch

    torch.set_num_threads(1)
    checkpoint = torch.load(weights_path(), map_location="cpu", weights_only=True)
    state = checkpoint["model_state"]
    layers = []
    for index in range(LAYERS):
        layer = torch.nn.LSTM(N_MELS if index == 0 else UNITS, UNITS, 1, batch_first=True)
        layer.load_state_dict({name[len("lstm."):].replace(f"_l{index}", "_l0"): value
                               for name, value in state.items()
                               if name.startswith("lstm.") and name.endswith(f"_l{index}")})
        layers.append(layer.eval())
    linear = torch.nn.Linear(UNITS, UNITS)
    linear.load_state_dict({"weight": state["linear.weight"], "bias": state["linear.bias"]})
    return layers, linear.eval()


def encoder_mel(y: np.ndarray, sample_rate: int) -> np.ndarray:
    """(frames, 40) float32: the encoder's input for a mono waveform at `sample_rate`, as
    resemblyzer makes it (`normalize_volume(wav, -30, increase_only=True)` then
    `wav_to_mel_spectrogram`): resampled to 16 kHz (soxr HQ), scaled up to -30 dBFS RMS when
    quieter, librosa power mel spectrogram, 40 bands, 400-sample window, 160-sample hop."""
    import librosa  # heavy: librosa

    y = np.asarray(y, dtype=np.float32)
    if sample_rate != ENCODER_RATE:
        y = soxr.resample(y, sample_rate, ENCODER_RATE, quality="HQ").astype(np.float32)
    if not np.isfinite(y).all():
        raise AudioError("non-finite samples (NaN/Inf)")
    rms = float(np.sqrt(np.mean(np.square(y, dtype=np.float64)))) if y.size else 0.0
    if rms == 0.0:
        raise AudioError("GE2E: silent input (all samples zero)")
    gain_db = TARGET_DBFS - 20 * np.log10(rms)
    if gain_db > 0:
        y = (y * 10 ** (gain_db / 20)).astype(np.float32)
    mel = librosa.feature.melspectrogram(y=y, sr=ENCODER_RATE, n_fft=ENCODER_WINDOW,
                                         hop_length=ENCODER_HOP, n_mels=N_MELS)
    return np.ascontiguousarray(mel.T, dtype=np.float32)


def encoder_states(mel: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """(embedding (256,), [states (frames, 256) of layers 1..3]) of one (frames, 40) mel."""
    import torch

    layers, linear = load_encoder()
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(mel, dtype=np.float32))[None]
        states = []
        for layer in layers:
            x, _ = layer(x)
            states.append(x[0].numpy())
        raw = torch.relu(linear(x[0, -1]))
        embedding = (raw / torch.clamp(torch.norm(raw), min=1e-12)).numpy()
    return embedding, states


def extract_ge2e(y: np.ndarray, config: ExtractionConfig) -> np.ndarray:
    """GE2E features of a conditioned mono waveform at config.sample_rate: (1, 1792)
    functionals or (frames, 768) states on the frame grid, float32 (see the module doc)."""
    embedding, states = encoder_states(encoder_mel(y, config.sample_rate))
    if config.smile_level == "functionals":
        parts = [embedding] + [stat for s in states for stat in (s.mean(0), s.std(0))]
        out = np.concatenate(parts)[None]
    else:
        frames = np.concatenate(states, axis=1)
        centres = np.arange(len(frames)) * ENCODER_HOP_S
        out = resample_to_grid(frames, centres, grid_times(len(y), config))
    if not np.isfinite(out).all():
        raise AudioError("GE2E returned non-finite values")
    return np.ascontiguousarray(out, dtype=np.float32)
