"""HuBERT frame features (transformers `HubertModel`), aligned with the spectral frames.

torch and transformers are imported only when an extractor is built, so the rest of
src.data_processing stays light.

Alignment
---------
HuBERT's convolutional front end has a 400-sample receptive field and a 320-sample stride at
16 kHz: output frame t normally covers samples [320 t, 320 t + 400). The spectral features use a
centred STFT (`center=True`), whose frame t is centred on sample t * hop_length. To put HuBERT on
the same grid, each waveform is zero-padded with 200 samples on both sides before the model, so
HuBERT frame t covers [320 t - 200, 320 t + 200) -- centred on sample 320 t, exactly like spectral
frame t with the default 20 ms hop (hop_length=320 at 16 kHz). The frame count is then
`1 + n // 320` (= `expected_frames(n, <16 kHz, hop 320 config>)`); any off-by-one from the conv
arithmetic is fixed by trimming or repeating the last frame. Waveforms at another rate are
resampled to 16 kHz first (soxr HQ).

Long files
----------
Files longer than `config.hubert_chunk_seconds` are cut into chunks that overlap by 1 s (50
frames); each chunk runs separately and the frames are stitched on the global 20 ms grid, each
overlap split in the middle (half of it comes from each neighbour), so no chunk contributes its
edge frames, where context is missing.

Batching
--------
Models whose feature encoder uses layer norm (`feat_extract_norm == "layer"`) accept a padding
mask, so short inputs are batched (longest-first, bounded by `max_batch_seconds`). Group-norm
models such as facebook/hubert-base-ls960 normalise over time, which padding would change, so
they run one input at a time (correctness first).
"""
from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path
from typing import Sequence
from urllib.parse import urlparse

import numpy as np
import soxr

from .audio import AudioError
from .config import ExtractionConfig

log = logging.getLogger(__name__)

HUBERT_SAMPLE_RATE = 16000
HUBERT_HOP = 320           # samples per output frame at 16 kHz (20 ms)
HUBERT_FIELD = 400         # receptive field of the conv front end in samples
OVERLAP_SECONDS = 1.0
DEFAULT_MODEL = "facebook/hubert-base-ls960"
LOCAL_DEFAULT = Path(__file__).resolve().parents[2] / "models" / "hubert-base-ls960"

DOWNLOAD_HELP = (
    "HuBERT needs pretrained weights. On a machine with network access run\n"
    f"  hf download {DEFAULT_MODEL} --local-dir models/hubert-base-ls960\n"
    "(or: python -c \"from huggingface_hub import snapshot_download; "
    f"snapshot_download('{DEFAULT_MODEL}', local_dir='models/hubert-base-ls960')\"), "
    "copy the folder here and pass --hubert_path models/hubert-base-ls960")


class HubertUnavailable(RuntimeError):
    """HuBERT weights cannot be loaded (no network, no local folder, broken checkpoint)."""


def hubert_frames(n_samples_16k: int) -> int:
    """Frames HuBERT yields for `n_samples_16k` samples at 16 kHz on the centred 20 ms grid."""
    return 1 + int(n_samples_16k) // HUBERT_HOP


def _looks_like_local_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or Path(name).expanduser().exists() or "\\" in name


class HubertExtractor:
    """Frame-level HuBERT hidden states for 16 kHz waveforms.

    `config.hubert_path` is a folder made by `save_pretrained` / `hf download` (loaded with
    local_files_only) or a hub id (tried from the local cache first, then the network).
    `config.hubert_layer` picks the output: -1 = last hidden state, 0 = the input of the first
    transformer layer, k = output of layer k.
    """

    def __init__(self, config: ExtractionConfig, device: str | None = None,
                 max_batch_seconds: float = 64.0, max_batch_size: int = 16):
        import torch

        self.config = config
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = _load_model(config.hubert_path).to(self.device).eval()
        model_config = self.model.config
        n_states = model_config.num_hidden_layers + 1
        if not -n_states <= config.hubert_layer < n_states:
            raise ValueError(f"hubert_layer {config.hubert_layer} out of range for a model with "
                             f"{model_config.num_hidden_layers} layers (use -1 or 0..{n_states - 1})")
        if config.hubert_chunk_seconds < 2 * OVERLAP_SECONDS:
            raise ValueError("hubert_chunk_seconds must be at least 2 s (chunks overlap by 1 s)")
        self.supports_mask = getattr(model_config, "feat_extract_norm", "group") == "layer"
        self.do_normalize = _read_do_normalize(config.hubert_path)
        log.info("HuBERT %s: layer %d, %s, waveform normalisation %s", config.hubert_path,
                 config.hubert_layer, "batched with padding mask" if self.supports_mask
                 else "one input at a time", "on" if self.do_normalize else "off")
        self.hidden_size = int(model_config.hidden_size)
        self.max_batch_samples = int(max_batch_seconds * HUBERT_SAMPLE_RATE)
        self.max_batch_size = max_batch_size
        self.chunk_frames = int(round(config.hubert_chunk_seconds * HUBERT_SAMPLE_RATE / HUBERT_HOP))
        self.overlap_frames = int(round(OVERLAP_SECONDS * HUBERT_SAMPLE_RATE / HUBERT_HOP))

    # ------------------------------------------------------------------ public
    def extract(self, waveforms: Sequence[np.ndarray],
                sample_rate: int = HUBERT_SAMPLE_RATE) -> list[np.ndarray]:
        """(frames, hidden) float32 per waveform; frames = 1 + n_16k // 320 (see module doc)."""
        prepared = [self._prepare(w, sample_rate) for w in waveforms]
        pieces = []  # (waveform index, first global frame, padded samples)
        for index, padded in enumerate(prepared):
            for start_frame, samples in self._chunks(padded):
                pieces.append((index, start_frame, samples))
        outputs = self._run(pieces)

        results = []
        for index, padded in enumerate(prepared):
            n_samples = len(padded) - HUBERT_FIELD
            parts = [(start, frames) for (i, start, _), frames in zip(pieces, outputs) if i == index]
            stitched = self._stitch(parts)
            results.append(_fit_frames(stitched, hubert_frames(n_samples)))
        for array in results:
            if not np.isfinite(array).all():
                raise AudioError("non-finite HuBERT features")
        return results

    def extract_one(self, waveform: np.ndarray, sample_rate: int = HUBERT_SAMPLE_RATE) -> np.ndarray:
        return self.extract([waveform], sample_rate)[0]

    # --------------------------------------------------------------- internals
    def _prepare(self, waveform: np.ndarray, sample_rate: int) -> np.ndarray:
        y = np.asarray(waveform, dtype=np.float32)
        if y.ndim != 1:
            raise ValueError(f"expected a 1-D waveform, got shape {y.shape}")
        if sample_rate != HUBERT_SAMPLE_RATE:
            y = soxr.resample(y, sample_rate, HUBERT_SAMPLE_RATE, quality="HQ").astype(np.float32)
        if self.do_normalize:
            y = (y - y.mean()) / np.sqrt(y.var() + 1e-7)
        half = HUBERT_FIELD // 2
        return np.pad(y, (half, half)).astype(np.float32)

    def _chunks(self, padded: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """Split a padded waveform into overlapping chunks: (first global frame, samples)."""
        chunk_samples = self.chunk_frames * HUBERT_HOP + HUBERT_FIELD - HUBERT_HOP
        if len(padded) <= chunk_samples:
            return [(0, padded)]
        step = self.chunk_frames - self.overlap_frames
        chunks, start = [], 0
        while True:
            begin = start * HUBERT_HOP
            chunks.append((start, padded[begin:begin + chunk_samples]))
            if begin + chunk_samples >= len(padded):
                return chunks
            start += step

    @staticmethod
    def _stitch(parts: list[tuple[int, np.ndarray]]) -> np.ndarray:
        """Join chunk outputs on the global frame grid, splitting each overlap in its middle."""
        if len(parts) == 1:
            return parts[0][1]
        kept = []
        keep_from = 0
        for k, (start, frames) in enumerate(parts):
            if k + 1 < len(parts):
                next_start = parts[k + 1][0]
                overlap = start + len(frames) - next_start
                keep_to = next_start + overlap // 2
            else:
                keep_to = start + len(frames)
            kept.append(frames[keep_from - start:keep_to - start])
            keep_from = keep_to
        return np.concatenate(kept, axis=0)

    def _run(self, pieces: list[tuple[int, int, np.ndarray]]) -> list[np.ndarray]:
        import torch

        outputs: list[np.ndarray | None] = [None] * len(pieces)
        order = sorted(range(len(pieces)), key=lambda i: -len(pieces[i][2]))
        batches: list[list[int]] = []
        for i in order:
            if (self.supports_mask and batches
                    and len(batches[-1]) < self.max_batch_size
                    and len(pieces[batches[-1][0]][2]) * (len(batches[-1]) + 1) <= self.max_batch_samples):
                batches[-1].append(i)
            else:
                batches.append([i])
        with torch.inference_mode():
            for batch in batches:
                lengths = [len(pieces[i][2]) for i in batch]
                longest = max(lengths)
                values = np.zeros((len(batch), longest), dtype=np.float32)
                for row, i in enumerate(batch):
                    values[row, :lengths[row]] = pieces[i][2]
                inputs = torch.from_numpy(values).to(self.device)
                kwargs = {}
                if len(batch) > 1:
                    mask = np.zeros((len(batch), longest), dtype=np.int64)
                    for row, n in enumerate(lengths):
                        mask[row, :n] = 1
                    kwargs["attention_mask"] = torch.from_numpy(mask).to(self.device)
                layer = self.config.hubert_layer
                result = self.model(inputs, output_hidden_states=layer != -1, **kwargs)
                hidden = result.last_hidden_state if layer == -1 else result.hidden_states[layer]
                hidden = hidden.float().cpu().numpy()
                n_frames = self.model._get_feat_extract_output_lengths(torch.tensor(lengths)).tolist()
                for row, i in enumerate(batch):
                    outputs[i] = np.ascontiguousarray(hidden[row, :int(n_frames[row])])
        return outputs  # type: ignore[return-value]


def _fit_frames(frames: np.ndarray, n: int) -> np.ndarray:
    """Trim to `n` frames or repeat the last frame up to `n`."""
    if len(frames) >= n:
        return np.ascontiguousarray(frames[:n], dtype=np.float32)
    if len(frames) == 0:
        raise AudioError("too short for HuBERT")
    pad = np.repeat(frames[-1:], n - len(frames), axis=0)
    return np.ascontiguousarray(np.concatenate([frames, pad]), dtype=np.float32)


def _read_do_normalize(name: str) -> bool:
    """Whether the checkpoint's feature extractor normalises waveforms (default False)."""
    folder = Path(name).expanduser()
    candidates = [folder / "preprocessor_config.json"] if folder.is_dir() else []
    if not folder.is_dir():
        try:
            from huggingface_hub import try_to_load_from_cache  # heavy: huggingface_hub

            cached = try_to_load_from_cache(name, "preprocessor_config.json")
            if isinstance(cached, str):
                candidates.append(Path(cached))
        except Exception:  # noqa: BLE001 - a missing cache only means "use the default"
            pass
    for candidate in candidates:
        try:
            return bool(json.loads(candidate.read_text()).get("do_normalize", False))
        except (OSError, ValueError):
            continue
    return False


def _hub_reachable(timeout: float = 3.0) -> tuple[bool, str]:
    """Quick check before a download attempt (huggingface_hub would retry for ~30 s)."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return False, "HF_HUB_OFFLINE is set"
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host = endpoint.hostname or "huggingface.co"
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True, ""
    except OSError as exc:
        return False, f"no network access to {host}: {exc.strerror or exc}"


def _load_model(name: str):
    """HubertModel from a local folder (offline) or a hub id (cache first, then network)."""
    try:
        from transformers import HubertModel
    except ImportError as exc:  # pragma: no cover - transformers is a requirement
        raise HubertUnavailable(f"transformers is not installed ({exc}). {DOWNLOAD_HELP}") from None
    name = str(name)
    folder = Path(name).expanduser()
    if _looks_like_local_path(name) and not folder.is_dir():
        raise HubertUnavailable(f"HuBERT folder {folder} does not exist or is not a folder.\n"
                                f"{DOWNLOAD_HELP}")
    if not folder.is_dir() and name == DEFAULT_MODEL and LOCAL_DEFAULT.is_dir():
        folder = LOCAL_DEFAULT  # the place DOWNLOAD_HELP suggests
    try:
        if folder.is_dir():
            return HubertModel.from_pretrained(str(folder), local_files_only=True)
        try:
            return HubertModel.from_pretrained(name, local_files_only=True)
        except OSError:
            reachable, why = _hub_reachable()
            if not reachable:
                raise HubertUnavailable(f"HuBERT {name!r} is not in the local Hugging Face cache "
                                        f"and the hub cannot be reached ({why}).\n{DOWNLOAD_HELP}")
            log.info("HuBERT %s not in the local cache; downloading it", name)
            return HubertModel.from_pretrained(name)
    except HubertUnavailable:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure here means "no usable weights"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HubertUnavailable(f"cannot load HuBERT weights from {name!r}: {reason}\n"
                                f"{DOWNLOAD_HELP}") from exc
