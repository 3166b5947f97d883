"""Keras layers of the speech-emotion model (TIM-Net style temporal network plus pooling).

Shape legend: B = batch, T = padded frame count, C/F = channels, K = levels, S = streams.

Padding convention
------------------
Every utterance in a batch occupies frames ``[0, length)``; frames ``[length, T)`` are padding
and may hold anything. The layers here take ``lengths`` (B,) int explicitly (no Keras masks):

* ``TemporalBlock`` convolutions are causal, so a frame only sees frames before it; padding sits
  after the valid frames and therefore never reaches them.
* ``ReverseValid`` reverses only the valid frames (``tf.reverse_sequence``), so the time-reversed
  sequence keeps its padding at the end and the backward direction is causal over the same
  valid frames.
* Pooling layers (``MaskedMeanPooling``, ``TemporalPyramidPooling``) average valid frames only.

Together these make the model's inference output independent of how much padding follows an
utterance and of what the padding contains. (In training mode BatchNormalization batch
statistics do include padded frames, as in TIM-Net.)

All layers are registered under the ``ser`` package, so a model saved as ``.keras`` loads with
``keras.models.load_model(path)`` once this module has been imported.
"""
from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
import tensorflow as tf

BLOCK_TYPES = ("residual", "gated")

__all__ = [
    "BLOCK_TYPES",
    "length_mask",
    "validate_activation",
    "TemporalBlock",
    "ReverseValid",
    "ZeroPadded",
    "PaddingAttentionMask",
    "MaskedMeanPooling",
    "WeightLayer",
    "StreamWeights",
    "TemporalPyramidPooling",
    "SpecAugment",
]


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def _clipped_lengths(lengths, time_steps):
    """lengths (B,) or (B, 1) any int/float -> int32 (B,) clipped to [0, time_steps]."""
    lengths = tf.reshape(tf.cast(lengths, tf.int32), [-1])
    return tf.clip_by_value(lengths, 0, tf.cast(time_steps, tf.int32))


def length_mask(lengths, time_steps):
    """Valid-frame mask.

    Args:
        lengths: (B,) integer frame counts (values above ``time_steps`` are clipped).
        time_steps: T, a Python int or scalar tensor.

    Returns:
        bool (B, T): ``mask[b, t] = t < lengths[b]``.
    """
    return tf.sequence_mask(_clipped_lengths(lengths, time_steps), time_steps)


def validate_activation(activation):
    """Return ``activation`` if Keras knows it, else raise a ValueError naming it."""
    try:
        keras.activations.get(activation)
    except (ValueError, TypeError) as err:
        raise ValueError(
            f"unknown activation {activation!r}; use a keras.activations name such as "
            f"'relu', 'gelu', 'elu', 'swish' or 'linear'"
        ) from err
    return activation


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_rate(name, value):
    if not isinstance(value, (int, float, np.floating)) or not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{name} must be a float in [0, 1), got {value!r}")
    return float(value)


def _zero_padding(x, lengths):
    """x (B, T, F) with frames t >= length set to 0 (tf.where, so inf/NaN padding is safe)."""
    mask = length_mask(lengths, tf.shape(x)[1])[:, :, None]
    return tf.where(mask, x, tf.zeros_like(x))


# --------------------------------------------------------------------------------------------
# temporal block
# --------------------------------------------------------------------------------------------
@keras.saving.register_keras_serializable(package="ser")
class TemporalBlock(keras.layers.Layer):
    """Two causal dilated convolutions with a residual or gated skip (TIM-Net's
    Temporal-Aware Block).

    branch = 2 x [Conv1D(filters, kernel_size, dilation_rate, causal) -> BatchNormalization
                  -> activation -> SpatialDropout1D(dropout)]
    skip   = input, or a 1x1 Conv1D(filters) of it when the channel count differs
    block="residual": out = activation(skip + branch)
    block="gated":    out = skip * sigmoid(branch)            (TIM-Net)

    Input (B, T, C) -> output (B, T, filters). Causal: output frame t depends on input frames
    t - 2 * (kernel_size - 1) * dilation_rate ... t only.
    """

    def __init__(self, filters, kernel_size=2, dilation_rate=1, dropout=0.0,
                 activation="relu", block="residual", **kwargs):
        super().__init__(**kwargs)
        self.filters = _check_int("filters", filters, 1)
        self.kernel_size = _check_int("kernel_size", kernel_size, 1)
        self.dilation_rate = _check_int("dilation_rate", dilation_rate, 1)
        self.dropout = _check_rate("dropout", dropout)
        self.activation = validate_activation(activation)
        if block not in BLOCK_TYPES:
            raise ValueError(f"unknown block type {block!r}; expected one of {BLOCK_TYPES}")
        self.block = block
        self._act = keras.activations.get(activation)
        self.convs, self.norms, self.drops = [], [], []
        for j in range(2):
            self.convs.append(keras.layers.Conv1D(
                self.filters, self.kernel_size, dilation_rate=self.dilation_rate,
                padding="causal", name=f"conv{j + 1}"))
            # Built under a tf.distribute strategy, the batch statistics are taken over the
            # global batch (all replicas), as on one device; elsewhere plain batch moments.
            self.norms.append(keras.layers.BatchNormalization(
                name=f"bn{j + 1}", synchronized=tf.distribute.has_strategy()))
            self.drops.append(keras.layers.SpatialDropout1D(self.dropout, name=f"drop{j + 1}"))
        self.projection = None

    def build(self, input_shape):
        channels = input_shape[-1]
        shape = tuple(input_shape)
        for conv, norm in zip(self.convs, self.norms):
            conv.build(shape)
            shape = conv.compute_output_shape(shape)
            norm.build(shape)
        if channels != self.filters:
            self.projection = keras.layers.Conv1D(self.filters, 1, name="projection")
            self.projection.build(tuple(input_shape))

    def call(self, inputs, training=None):
        branch = inputs
        for conv, norm, drop in zip(self.convs, self.norms, self.drops):
            branch = conv(branch)
            branch = norm(branch, training=training)
            branch = self._act(branch)
            branch = drop(branch, training=training)
        skip = self.projection(inputs) if self.projection is not None else inputs
        if self.block == "gated":
            return skip * keras.ops.sigmoid(branch)
        return self._act(skip + branch)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.filters,)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, kernel_size=self.kernel_size,
                      dilation_rate=self.dilation_rate, dropout=self.dropout,
                      activation=self.activation, block=self.block)
        return config


# --------------------------------------------------------------------------------------------
# padding-aware utilities
# --------------------------------------------------------------------------------------------
@keras.saving.register_keras_serializable(package="ser")
class ReverseValid(keras.layers.Layer):
    """Reverse each sequence over its valid frames only.

    Inputs [x (B, T, F), lengths (B,) int] -> (B, T, F) with
    ``out[b, t] = x[b, lengths[b] - 1 - t]`` for t < lengths[b] and ``out[b, t] = x[b, t]``
    otherwise (padding stays at the end). Applying it twice is the identity.
    """

    def call(self, inputs):
        x, lengths = inputs
        lengths = _clipped_lengths(lengths, tf.shape(x)[1])
        return tf.reverse_sequence(x, lengths, seq_axis=1, batch_axis=0)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])


@keras.saving.register_keras_serializable(package="ser")
class ZeroPadded(keras.layers.Layer):
    """Set padding frames to zero: [x (B, T, F), lengths (B,)] -> (B, T, F).

    Used before non-causal layers (e.g. 'same' convolutions in the fusion front end) so that
    valid frames next to the padding see zeros, exactly as if the utterance were not padded.
    """

    def call(self, inputs):
        x, lengths = inputs
        return _zero_padding(x, lengths)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])


@keras.saving.register_keras_serializable(package="ser")
class PaddingAttentionMask(keras.layers.Layer):
    """Key-padding mask for keras.layers.MultiHeadAttention.

    Inputs [x (B, T, F), lengths (B,)] -> bool (B, T, T) with ``mask[b, q, k] = k < lengths[b]``
    (every query may attend to every valid key, never to padding).
    """

    def call(self, inputs):
        x, lengths = inputs
        time_steps = tf.shape(x)[1]
        keys = length_mask(lengths, time_steps)[:, None, :]  # (B, 1, T)
        return tf.broadcast_to(keys, tf.stack([tf.shape(x)[0], time_steps, time_steps]))

    def compute_output_shape(self, input_shape):
        shape = input_shape[0]
        return (shape[0], shape[1], shape[1])

    def compute_output_spec(self, inputs):
        shape = inputs[0].shape
        return keras.KerasTensor((shape[0], shape[1], shape[1]), dtype="bool")


@keras.saving.register_keras_serializable(package="ser")
class MaskedMeanPooling(keras.layers.Layer):
    """Mean over valid frames: [x (B, T, F), lengths (B,)] -> (B, F).

    An utterance of length 0 gives zeros (the count is floored at 1).
    """

    def call(self, inputs):
        x, lengths = inputs
        time_steps = tf.shape(x)[1]
        x = _zero_padding(x, lengths)
        count = tf.cast(tf.maximum(_clipped_lengths(lengths, time_steps), 1), x.dtype)
        return tf.reduce_sum(x, axis=1) / count[:, None]

    def compute_output_shape(self, input_shape):
        shape = input_shape[0]
        return (shape[0], shape[2])


# --------------------------------------------------------------------------------------------
# learned softmax mixtures
# --------------------------------------------------------------------------------------------
class _SoftmaxWeightedSum(keras.layers.Layer):
    """sum_k softmax(logits)_k * x_k over a list of K tensors of equal shape (B, T, F), or over
    axis 1 of one (B, K, T, F) tensor. Logits start at zero, i.e. uniform weights."""

    _logits_name = "logits"

    def build(self, input_shape):
        if isinstance(input_shape, (list, tuple)) and input_shape and \
                isinstance(input_shape[0], (list, tuple)):
            count = len(input_shape)
        else:
            if len(input_shape) != 4 or input_shape[1] is None:
                raise ValueError(
                    f"{type(self).__name__} expects a list of (B, T, F) tensors or one "
                    f"(B, K, T, F) tensor with known K; got shape {input_shape}")
            count = input_shape[1]
        self.count = int(count)
        self.logits = self.add_weight(name=self._logits_name, shape=(self.count,),
                                      initializer="zeros", trainable=True)

    def call(self, inputs):
        weights = keras.ops.softmax(self.logits)
        if isinstance(inputs, (list, tuple)):
            out = inputs[0] * keras.ops.cast(weights[0], inputs[0].dtype)
            for k in range(1, len(inputs)):
                out = out + inputs[k] * keras.ops.cast(weights[k], inputs[k].dtype)
            return out
        return tf.einsum("k,bktf->btf", tf.cast(weights, inputs.dtype), inputs)

    def compute_output_shape(self, input_shape):
        if isinstance(input_shape, (list, tuple)) and input_shape and \
                isinstance(input_shape[0], (list, tuple)):
            return tuple(input_shape[0])
        return (input_shape[0],) + tuple(input_shape[2:])

    def mixture_weights(self) -> np.ndarray:
        """Softmax weights (K,) as a NumPy array (sums to 1)."""
        return keras.ops.convert_to_numpy(keras.ops.softmax(self.logits))


@keras.saving.register_keras_serializable(package="ser")
class WeightLayer(_SoftmaxWeightedSum):
    """Learned softmax weights over the K temporal levels (dynamic fusion, after TIM-Net).

    Inputs: list of K tensors (B, T, F) or one (B, K, T, F) tensor -> (B, T, F) =
    sum_k w_k * h_k with w = softmax(logits), logits initialised to 0 (uniform 1/K).
    """

    _logits_name = "level_logits"

    def level_weights(self) -> np.ndarray:
        """Softmax level weights (K,), summing to 1."""
        return self.mixture_weights()


@keras.saving.register_keras_serializable(package="ser")
class StreamWeights(_SoftmaxWeightedSum):
    """Learned softmax weights over S feature streams projected to a common width.

    Inputs: list of S tensors (B, T, W) -> (B, T, W) = sum_s w_s * x_s, logits initialised to 0.
    """

    _logits_name = "stream_logits"

    def stream_weights(self) -> np.ndarray:
        """Softmax stream weights (S,), summing to 1."""
        return self.mixture_weights()


# --------------------------------------------------------------------------------------------
# pyramid pooling
# --------------------------------------------------------------------------------------------
@keras.saving.register_keras_serializable(package="ser")
class TemporalPyramidPooling(keras.layers.Layer):
    """Masked mean pooling of each utterance's valid frames into equal segments per scale.

    Inputs [x (B, T, F), lengths (B,)] -> (B, sum(scales), F); with scales (1, 2, 4) that is
    (B, 7, F): token 0 = whole utterance, tokens 1-2 = halves, tokens 3-6 = quarters.
    Segment j of scale s covers frames [floor(j * L / s), floor((j + 1) * L / s)) of an
    utterance of length L (its own length, not T). Segments that are empty (L < s) take the
    utterance's global mean instead.
    """

    def __init__(self, scales: Sequence[int] = (1, 2, 4), **kwargs):
        super().__init__(**kwargs)
        scales = tuple(scales)
        if not scales:
            raise ValueError("scales must be a non-empty sequence of positive integers")
        self.scales = tuple(_check_int("each scale", s, 1) for s in scales)
        self.n_segments = sum(self.scales)

    def call(self, inputs):
        x, lengths = inputs
        time_steps = tf.shape(x)[1]
        lengths = _clipped_lengths(lengths, time_steps)  # (B,)
        x = _zero_padding(x, lengths)
        starts, ends = [], []
        for s in self.scales:
            for j in range(s):
                starts.append((j * lengths) // s)
                ends.append(((j + 1) * lengths) // s)
        starts = tf.stack(starts, axis=1)[:, :, None]  # (B, S, 1)
        ends = tf.stack(ends, axis=1)[:, :, None]
        frames = tf.range(time_steps)[None, None, :]  # (1, 1, T)
        segment = tf.cast((frames >= starts) & (frames < ends), x.dtype)  # (B, S, T)
        sums = tf.einsum("bst,btf->bsf", segment, x)
        counts = tf.reduce_sum(segment, axis=2, keepdims=True)  # (B, S, 1)
        means = sums / tf.maximum(counts, 1.0)
        total = tf.cast(tf.maximum(lengths, 1), x.dtype)[:, None, None]
        global_mean = tf.reduce_sum(x, axis=1, keepdims=True) / total  # (B, 1, F)
        return tf.where(counts > 0, means, global_mean)

    def compute_output_shape(self, input_shape):
        shape = input_shape[0]
        return (shape[0], self.n_segments, shape[2])

    def get_config(self):
        config = super().get_config()
        config.update(scales=list(self.scales))
        return config


@keras.saving.register_keras_serializable(package="ser")
class SpecAugment(keras.layers.Layer):
    """SpecAugment-style masking of standardised features, in training only.

    Inputs [x (B, T, F), lengths (B,)] -> (B, T, F). In training, each utterance gets
    `time_masks` spans of frames, each up to `time_width` x its own valid length, and
    `freq_masks` bands of feature channels, each up to `freq_width` x F, set to 0 (the mean of
    standardised features). Spans are drawn inside the valid frames. At inference: identity.
    """

    def __init__(self, time_masks=2, freq_masks=2, time_width=0.1, freq_width=0.15, seed=None,
                 **kwargs):
        super().__init__(**kwargs)
        self.time_masks, self.freq_masks = int(time_masks), int(freq_masks)
        self.time_width, self.freq_width = float(time_width), float(freq_width)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    @staticmethod
    def _spans(n_masks, extent, max_width, size, batch, seed):
        """(B, size) bool: n_masks random spans per row, each of width < max_width * extent,
        starting inside [0, extent - width]; extent (B,) float."""
        extent = tf.reshape(extent, [-1, 1])
        width = tf.floor(keras.random.uniform((batch, n_masks), seed=seed) * max_width * extent)
        start = tf.floor(keras.random.uniform((batch, n_masks), seed=seed) *
                         tf.maximum(extent - width, 0.0))
        positions = tf.cast(tf.range(size), tf.float32)[None, None, :]
        inside = (positions >= start[..., None]) & (positions < (start + width)[..., None])
        return tf.reduce_any(inside, axis=1)

    def call(self, inputs, training=None):
        x, lengths = inputs
        if not training or (self.time_masks == 0 and self.freq_masks == 0):
            return x
        batch, steps, dims = tf.shape(x)[0], tf.shape(x)[1], tf.shape(x)[2]
        keep = tf.ones_like(x, dtype=tf.bool)  # (B, T, F)
        if self.time_masks:
            valid = tf.cast(_clipped_lengths(lengths, steps), tf.float32)
            masked = self._spans(self.time_masks, valid, self.time_width, steps, batch,
                                 self.seed_generator)
            keep &= ~masked[:, :, None]
        if self.freq_masks:
            extent = tf.fill([batch], tf.cast(dims, tf.float32))
            masked = self._spans(self.freq_masks, extent, self.freq_width, dims, batch,
                                 self.seed_generator)
            keep &= ~masked[:, None, :]
        return tf.where(keep, x, tf.zeros_like(x))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])

    def get_config(self):
        config = super().get_config()
        config.update(time_masks=self.time_masks, freq_masks=self.freq_masks,
                      time_width=self.time_width, freq_width=self.freq_width, seed=self.seed)
        return config
