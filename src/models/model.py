"""Functional speech-emotion model: (optional multi-stream fusion) -> bidirectional TCN
(TIM-Net style) -> level fusion -> self-attention -> dynamic temporal pyramid pooling -> head.

Inputs (a dict when calling the model):
    one float32 (B, T, dim) tensor per stream, keyed by stream name ("MFCC", "LogMel", ...);
    "length": int32 (B,), each utterance's true frame count; frames [length, T) are padding.
Output: softmax probabilities (B, n_classes) from the Dense layer "probabilities"; the layer
"embedding" holds the (B, head_units[-1]) utterance embedding.

Fused model (frame-level and utterance-level streams)
-----------------------------------------------------
Utterance-level streams (openSMILE functionals, (B, 1, dim), named in `utterance_streams`) skip
the temporal network:
    u = LayerNorm(Dense(fusion_width)(Dropout(head_dropout)(concat(Normalization(stream)[:, 0]))))
    z = concat(LayerNorm(pooled temporal features), u)       # layer "fused_embedding"
and z feeds the head. Both halves are layer-normalised, so 6373 ComParE dimensions enter at
the width and scale of the 39-78 pooled temporal ones instead of drowning them.

Front end
---------
Each stream is optionally standardised (Normalization "norm_<stream>") and its padding frames
are zeroed. One stream feeds the temporal network directly. Several streams (fusion) are each
projected to (B, T, fusion_width): "MFCC" Conv1D(W, 3, same) + BN + ReLU; "LogMel" as an image
(B, T, mel, 1): Conv2D(16, 3x3, same) + BN + ReLU + MaxPool(1, 4) over mel, flattened per frame
and Dense(W); "HuBERT" Dense(W) + LayerNorm; any other name Dense(W). Then
x = LayerNorm(StreamWeights(projections)); x = x + MHA(x, x, key padding mask).

Temporal network and the combination of directions and levels
--------------------------------------------------------------
    fwd_0 = Conv1D(F, 1, causal)(x)                     # separate 1x1 input convs per direction
    bwd_0 = Conv1D(F, 1, causal)(ReverseValid(x))       # valid frames reversed, padding at end
    for level k = 1..K (K = stack_size * dilation_size, dilation 2**(k-1 mod dilation_size)):
        fwd_k = TemporalBlock_k^fwd(fwd_{k-1})          # separate weights per direction
        bwd_k = TemporalBlock_k^bwd(bwd_{k-1})
        h_k   = fwd_k + ReverseValid(bwd_k)             # (B, T, F), back in forward time
    fused = sum_k w_k * h_k                             # WeightLayer
with w = softmax(a), a initialised to 0 (level_weights="softmax"), or w unconstrained and
initialised U(-0.05, 0.05) (level_weights="linear", TIM-Net's).
Because masked mean pooling is linear, MaskedMean(fused) = sum_k w_k * g_k with
g_k = MaskedMean(h_k): the same as TIM-Net's weighting of pooled levels, while the fused
*sequence* stays available for attention and pyramid pooling.
Unlike TIM-Net, the backward output is re-reversed before the sum so that frame t of h_k
combines past (forward) and future (backward) context of the same frame t.

Padding never influences valid frames at inference: convolutions in the TCN are causal and run
on sequences whose padding follows the valid frames in both directions; non-causal front-end
layers see zeroed padding; attention uses key-padding masks; pooling is masked.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import keras
import numpy as np

from src.models.augment import SpecAugment
from src.models.inputs import LENGTH_INPUT
from src.models.layers import (
    BLOCK_TYPES,
    LEVEL_WEIGHTINGS,
    PaddingAttentionMask,
    ReverseValid,
    StreamWeights,
    TemporalBlock,
    WeightLayer,
    ZeroPadded,
    validate_activation,
)
from src.models.pooling import FirstFrame, MaskedMeanPooling, TemporalPyramidPooling


PYRAMID_SCALES = (1, 2, 4)
PYRAMID_HEADS = 4
LOGMEL_FILTERS = 16
LOGMEL_POOL = 4

__all__ = ["ModelConfig", "PRESETS", "LENGTH_INPUT", "receptive_field", "build_model"]


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _rate(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) \
            or not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    return float(value)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of `build_model`; validated at construction (ValueError).

    filter_size: channels F of the temporal network.
    kernel_size, stack_size, dilation_size: each of the stack_size stacks has dilation_size
        TemporalBlocks with dilations 2**i, i in range(dilation_size) (TIM-Net convention).
    dropout: SpatialDropout1D rate inside TemporalBlocks.
    activation: any keras.activations name.
    block: "residual" (activation(x + branch)) or "gated" (x * sigmoid(branch), TIM-Net).
    level_weights: "softmax" (weights of the K levels sum to 1) or "linear" (unconstrained
        weights initialised U(-0.05, 0.05), TIM-Net's WeightLayer).
    use_dtpm: dynamic temporal pyramid pooling (else masked global average pooling).
    use_attention: multi-head self-attention over the fused temporal sequence.
    n_heads: heads of that attention and of the fusion attention.
    fusion_width: common width W of the streams in multi-stream (fusion) models.
    head_units: Dense sizes of the classifier head; the last one is the "embedding" layer.
        Empty: the softmax sits on the pooled features (TIM-Net), which are then the
        "embedding".
    head_dropout: Dropout after each head Dense layer.
    time_masks, freq_masks: SpecAugment spans per utterance in training (0 = off), each up to
        time_mask_width of the utterance's frames / freq_mask_width of its feature channels.
    """

    filter_size: int = 128
    kernel_size: int = 3
    stack_size: int = 3
    dilation_size: int = 8
    dropout: float = 0.4
    activation: str = "relu"
    block: str = "residual"
    level_weights: str = "softmax"
    use_dtpm: bool = True
    use_attention: bool = True
    n_heads: int = 8
    fusion_width: int = 128
    head_units: tuple[int, ...] = (1024, 512)
    head_dropout: float = 0.4
    time_masks: int = 0
    freq_masks: int = 0
    time_mask_width: float = 0.1
    freq_mask_width: float = 0.15

    def __post_init__(self) -> None:
        for name in ("filter_size", "kernel_size", "stack_size", "dilation_size", "n_heads",
                     "fusion_width"):
            object.__setattr__(self, name, _positive_int(name, getattr(self, name)))
        for name in ("time_masks", "freq_masks"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
            object.__setattr__(self, name, int(value))
        for name in ("dropout", "head_dropout", "time_mask_width", "freq_mask_width"):
            object.__setattr__(self, name, _rate(name, getattr(self, name)))
        if self.block not in BLOCK_TYPES:
            raise ValueError(f"unknown block type {self.block!r}; expected one of {BLOCK_TYPES}")
        if self.level_weights not in LEVEL_WEIGHTINGS:
            raise ValueError(f"unknown level weighting {self.level_weights!r}; expected one of "
                             f"{LEVEL_WEIGHTINGS}")
        validate_activation(self.activation)
        units = self.head_units
        if isinstance(units, (int, np.integer)):
            units = (units,)
        units = tuple(_positive_int("head_units entries", u) for u in units)
        object.__setattr__(self, "head_units", units)
        for name in ("use_dtpm", "use_attention"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
            object.__setattr__(self, name, bool(getattr(self, name)))

    @property
    def dilations(self) -> list[int]:
        """Dilation of every TemporalBlock in order (length stack_size * dilation_size)."""
        return [2 ** i for _ in range(self.stack_size) for i in range(self.dilation_size)]

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["head_units"] = list(self.head_units)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig field(s) {unknown}; known: {sorted(known)}")
        return cls(**values)


PRESETS: dict[str, ModelConfig] = {
    "default": ModelConfig(),
    # TIM-Net-sized temporal network (39 filters, kernel 2, one stack of 8 gated blocks,
    # dropout 0.1) for CPU training; attention, DTPM and the head are kept.
    "light": ModelConfig(filter_size=39, kernel_size=2, stack_size=1, dilation_size=8,
                         dropout=0.1, block="gated", fusion_width=64),
    # TIM-Net exactly (Ye et al. 2023, Jiaxin-Ye/TIM-Net_SER): the light temporal network with
    # linear level weights and the softmax straight on the weighted pooled levels.
    "timnet": ModelConfig(filter_size=39, kernel_size=2, stack_size=1, dilation_size=8,
                          dropout=0.1, block="gated", level_weights="linear", use_dtpm=False,
                          use_attention=False, head_units=(), fusion_width=64),
}


def receptive_field(config: ModelConfig) -> int:
    """Frames seen by one output frame of one direction of the temporal network.

    Each TemporalBlock has two causal convolutions of width kernel_size and dilation d, adding
    2 * (kernel_size - 1) * d frames of past context; the 1x1 input convolution adds none.
    The bidirectional network spans 2 * receptive_field - 1 frames centred on the frame.
    """
    return 1 + sum(2 * (config.kernel_size - 1) * d for d in config.dilations)


# --------------------------------------------------------------------------------------------
# building blocks (functional)
# --------------------------------------------------------------------------------------------
def _masked_self_attention(x, lengths, n_heads: int, name: str):
    """(B, T, F) -> (B, T, F) multi-head self-attention output (no residual), keys masked."""
    width = x.shape[-1]
    mask = PaddingAttentionMask(name=f"{name}_mask")([x, lengths])
    mha = keras.layers.MultiHeadAttention(num_heads=n_heads, key_dim=max(1, width // n_heads),
                                          name=name)
    return mha(x, x, attention_mask=mask)


def _stream_projection(name: str, x, width: int):
    """Project one stream (B, T, dim) to (B, T, width) with a stream-specific front end.

    `x` must have zeroed padding: the 'same' convolutions look one frame ahead."""
    kind = name.lower().replace("_", "").replace("-", "")
    dim = x.shape[-1]
    if kind == "mfcc":
        x = keras.layers.Conv1D(width, 3, padding="same", name=f"{name}_conv")(x)
        x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
        return keras.layers.Activation("relu", name=f"{name}_relu")(x)
    if kind in ("logmel", "mel", "melspectrogram"):
        x = keras.layers.Reshape((-1, dim, 1), name=f"{name}_to_image")(x)
        x = keras.layers.Conv2D(LOGMEL_FILTERS, (3, 3), padding="same", name=f"{name}_conv")(x)
        x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
        x = keras.layers.Activation("relu", name=f"{name}_relu")(x)
        pool = min(LOGMEL_POOL, dim)
        x = keras.layers.MaxPooling2D(pool_size=(1, pool), name=f"{name}_pool")(x)
        x = keras.layers.Reshape((-1, (dim // pool) * LOGMEL_FILTERS), name=f"{name}_to_seq")(x)
        return keras.layers.Dense(width, name=f"{name}_dense")(x)
    if kind == "hubert":
        x = keras.layers.Dense(width, name=f"{name}_dense")(x)
        return keras.layers.LayerNormalization(name=f"{name}_ln")(x)
    return keras.layers.Dense(width, name=f"{name}_dense")(x)


def _temporal_network(x, lengths, config: ModelConfig):
    """(B, T, C) -> fused temporal sequence (B, T, F); see the module docstring."""
    filters = config.filter_size
    forward = keras.layers.Conv1D(filters, 1, padding="causal", name="tcn_fwd_input")(x)
    backward = ReverseValid(name="tcn_reverse_input")([x, lengths])
    backward = keras.layers.Conv1D(filters, 1, padding="causal", name="tcn_bwd_input")(backward)
    levels = []
    for k, dilation in enumerate(config.dilations):
        block_args = dict(filters=filters, kernel_size=config.kernel_size,
                          dilation_rate=dilation, dropout=config.dropout,
                          activation=config.activation, block=config.block)
        forward = TemporalBlock(**block_args, name=f"tcn_fwd_block{k}")(forward)
        backward = TemporalBlock(**block_args, name=f"tcn_bwd_block{k}")(backward)
        restored = ReverseValid(name=f"tcn_reverse_level{k}")([backward, lengths])
        levels.append(keras.layers.Add(name=f"tcn_level{k}")([forward, restored]))
    return WeightLayer(config.level_weights, name="level_weights")(levels)


def _check_inputs(input_dims, n_classes, norm_stats):
    if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) \
            or n_classes < 2:
        raise ValueError(f"n_classes must be an integer >= 2, got {n_classes!r}")
    if not isinstance(input_dims, dict) or not input_dims:
        raise ValueError("input_dims must be a non-empty dict {stream name: feature dim}")
    for name, dim in input_dims.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"stream names must be non-empty strings, got {name!r}")
        if name == LENGTH_INPUT:
            raise ValueError(f"{LENGTH_INPUT!r} is reserved for the length input")
        _positive_int(f"input_dims[{name!r}]", dim)
    for name, stats in (norm_stats or {}).items():
        if name not in input_dims:
            raise ValueError(f"norm_stats has stream {name!r} that is not in input_dims "
                             f"{sorted(input_dims)}")
        if not isinstance(stats, (tuple, list)) or len(stats) != 2:
            raise ValueError(f"norm_stats[{name!r}] must be a (mean, variance) pair")
        mean, variance = (np.asarray(s, dtype=np.float32) for s in stats)
        if mean.shape != (input_dims[name],) or variance.shape != (input_dims[name],):
            raise ValueError(f"norm_stats[{name!r}] mean/variance must have shape "
                             f"({input_dims[name]},), got {mean.shape} and {variance.shape}")
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(variance))) \
                or np.any(variance < 0):
            raise ValueError(f"norm_stats[{name!r}] must be finite with variance >= 0")


def _normalised(x, stream: str, norm_stats: dict):
    """`x` standardised by layer f"norm_{stream}" with norm_stats[stream] = (mean, variance),
    or unchanged when the stream has no statistics."""
    if stream not in norm_stats:
        return x
    mean, variance = (np.asarray(v, dtype=np.float32) for v in norm_stats[stream])
    return keras.layers.Normalization(mean=mean, variance=variance, name=f"norm_{stream}")(x)


def _utterance_projection(inputs: dict, names: list[str], norm_stats: dict, width: int,
                          dropout: float):
    """Functional: utterance-level streams (B, 1, dim) -> (B, width) projected vector.

    v = concat(Normalization(stream)[:, 0]) -> Dropout(dropout) -> Dense(width) -> LayerNorm, so
    a 6373-dim ComParE vector enters the fused embedding at the same width and scale as the
    pooled temporal features."""
    parts = [FirstFrame(name=f"{stream}_vector")(_normalised(inputs[stream], stream, norm_stats))
             for stream in names]
    x = parts[0] if len(parts) == 1 else keras.layers.Concatenate(name="utterance_concat")(parts)
    x = keras.layers.Dropout(dropout, name="utterance_dropout")(x)
    x = keras.layers.Dense(width, name="utterance_projection")(x)
    return keras.layers.LayerNormalization(name="utterance_ln")(x)


def build_model(input_dims: dict[str, int], n_classes: int, config: ModelConfig | None = None,
                norm_stats: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
                name: str = "ser_model", utterance_streams=()) -> keras.Model:
    """Build the (uncompiled) functional model.

    Args:
        input_dims: {stream name: feature dim}; one stream -> single-stream model, several ->
            fusion model. Front ends by name: "MFCC", "LogMel", "HuBERT", else a Dense.
        n_classes: number of emotion classes (>= 2).
        config: ModelConfig (default ModelConfig()).
        norm_stats: optional {stream: (mean (dim,), variance (dim,))}; each listed stream is
            standardised inside the model by Normalization layer f"norm_{stream}".
        utterance_streams: streams of `input_dims` that hold one vector per utterance
            ((B, 1, dim), openSMILE functionals). They skip the temporal network: projected by
            `_utterance_projection` to (B, fusion_width) and concatenated with the
            LayerNorm-ed pooled temporal features before the head (the fused model). At least
            one stream must be frame-level.
    Returns:
        keras.Model taking {stream: (B, T, dim) float32, "length": (B,) int32} and returning
        (B, n_classes) softmax probabilities.
    """
    config = config or ModelConfig()
    if not isinstance(config, ModelConfig):
        raise ValueError(f"config must be a ModelConfig, got {type(config).__name__}")
    _check_inputs(input_dims, n_classes, norm_stats)
    norm_stats = norm_stats or {}

    utterance = [s for s in input_dims if s in utterance_streams]
    framed = [s for s in input_dims if s not in utterance]
    if not framed:
        raise ValueError(f"the temporal model needs a frame-level stream; {', '.join(utterance)} "
                         f"hold one vector per utterance (use an utterance-level model)")
    inputs = {s: keras.Input(shape=(1 if s in utterance else None, int(d)), dtype="float32",
                             name=s) for s, d in input_dims.items()}
    lengths = keras.Input(shape=(), dtype="int32", name=LENGTH_INPUT)
    inputs[LENGTH_INPUT] = lengths

    streams = {}
    for stream in framed:
        x = _normalised(inputs[stream], stream, norm_stats)
        if config.time_masks or config.freq_masks:
            x = SpecAugment(config.time_masks, config.freq_masks, config.time_mask_width,
                            config.freq_mask_width, name=f"{stream}_spec_augment")([x, lengths])
        streams[stream] = ZeroPadded(name=f"{stream}_padding_to_zero")([x, lengths])

    if len(streams) == 1:
        x = next(iter(streams.values()))
    else:
        width = config.fusion_width
        projected = [_stream_projection(s, x, width) for s, x in streams.items()]
        x = StreamWeights(name="stream_weights")(projected)
        x = keras.layers.LayerNormalization(name="fusion_ln")(x)
        attended = _masked_self_attention(x, lengths, config.n_heads, "fusion_attention")
        x = keras.layers.Add(name="fusion_residual")([x, attended])

    x = _temporal_network(x, lengths, config)

    if config.use_attention:
        attended = _masked_self_attention(x, lengths, config.n_heads, "temporal_attention")
        x = keras.layers.Add(name="temporal_residual")([x, attended])
        x = keras.layers.LayerNormalization(name="temporal_ln")(x)

    if config.use_dtpm:
        tokens = TemporalPyramidPooling(PYRAMID_SCALES, name="pyramid_pooling")([x, lengths])
        width = tokens.shape[-1]
        cross = keras.layers.MultiHeadAttention(
            num_heads=PYRAMID_HEADS, key_dim=max(1, width // PYRAMID_HEADS),
            name="pyramid_attention")(tokens, tokens)
        tokens = keras.layers.Add(name="pyramid_residual")([tokens, cross])
        tokens = keras.layers.LayerNormalization(name="pyramid_ln")(tokens)
        x = keras.layers.GlobalAveragePooling1D(name="pyramid_mean")(tokens)
    else:
        x = MaskedMeanPooling(name="masked_mean_pooling")([x, lengths])

    if utterance:
        x = keras.layers.LayerNormalization(name="temporal_embedding_ln")(x)
        vector = _utterance_projection(inputs, utterance, norm_stats, config.fusion_width,
                                       config.head_dropout)
        x = keras.layers.Concatenate(name="fused_embedding")([x, vector])
    if not config.head_units:
        x = keras.layers.Identity(name="embedding")(x)
    for i, units in enumerate(config.head_units):
        last = i == len(config.head_units) - 1
        x = keras.layers.Dense(units, activation=config.activation,
                               name="embedding" if last else f"head_dense{i}")(x)
        x = keras.layers.Dropout(config.head_dropout, name=f"head_dropout{i}")(x)
    outputs = keras.layers.Dense(n_classes, activation="softmax", dtype="float32",
                                 name="probabilities")(x)
    return keras.Model(inputs=inputs, outputs=outputs, name=name)
