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
* Pooling layers (``MaskedMeanPooling``, ``TemporalPyramidPooling`` in src.models.pooling)
  average valid frames only.

Together these make the model's inference output independent of how much padding follows an
utterance and of what the padding contains. (In training mode BatchNormalization batch
statistics do include padded frames, as in TIM-Net.)

All layers are registered under the ``ser`` package, so a model saved as ``.keras`` loads with
``keras.models.load_model(path)`` once this module has been imported.
"""
from __future__ import annotations


import keras
import numpy as np
import tensorflow as tf

BLOCK_TYPES = ("residual", "gated")
LEVEL_WEIGHTINGS = ("softmax", "linear")

__all__ = [
    "BLOCK_TYPES",
    "length_mask",
    "clipped_lengths",
    "zero_padding",
    "check_int",
    "validate_activation",
    "TemporalBlock",
    "ReverseValid",
    "ZeroPadded",
    "PaddingAttentionMask",
    "WeightLayer",
    "StreamWeights",
]


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def clipped_lengths(lengths, time_steps):
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
    return tf.sequence_mask(clipped_lengths(lengths, time_steps), time_steps)


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


def check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_rate(name, value):
    if not isinstance(value, (int, float, np.floating)) or not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{name} must be a float in [0, 1), got {value!r}")
    return float(value)


def zero_padding(x, lengths):
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
        self.filters = check_int("filters", filters, 1)
        self.kernel_size = check_int("kernel_size", kernel_size, 1)
        self.dilation_rate = check_int("dilation_rate", dilation_rate, 1)
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
        lengths = clipped_lengths(lengths, tf.shape(x)[1])
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
        return zero_padding(x, lengths)

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
                                      initializer=self._initializer(), trainable=True)

    def _initializer(self):
        return "zeros"

    def _weights(self):
        return keras.ops.softmax(self.logits)

    def call(self, inputs):
        weights = self._weights()
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
    """Learned weights over the K temporal levels (dynamic fusion, after TIM-Net).

    Inputs: list of K tensors (B, T, F) or one (B, K, T, F) tensor -> (B, T, F) =
    sum_k w_k * h_k with
        normalize="softmax": w = softmax(logits), logits initialised to 0 (uniform 1/K);
        normalize="linear":  w = logits, unconstrained, initialised U(-0.05, 0.05) (TIM-Net's
                             WeightLayer: Keras' "uniform" initializer, no normalisation).
    """

    _logits_name = "level_logits"

    def __init__(self, normalize: str = "softmax", **kwargs):
        super().__init__(**kwargs)
        if normalize not in LEVEL_WEIGHTINGS:
            raise ValueError(f"unknown level weighting {normalize!r}; expected one of "
                             f"{LEVEL_WEIGHTINGS}")
        self.normalize = normalize

    def _initializer(self):
        if self.normalize == "linear":
            return keras.initializers.RandomUniform(-0.05, 0.05)
        return "zeros"

    def _weights(self):
        return self.logits if self.normalize == "linear" else keras.ops.softmax(self.logits)

    def level_weights(self) -> np.ndarray:
        """Level weights (K,): softmax ones sum to 1, linear ones are the raw weights."""
        return keras.ops.convert_to_numpy(self._weights())

    def get_config(self):
        return {**super().get_config(), "normalize": self.normalize}


@keras.saving.register_keras_serializable(package="ser")
class StreamWeights(_SoftmaxWeightedSum):
    """Learned softmax weights over S feature streams projected to a common width.

    Inputs: list of S tensors (B, T, W) -> (B, T, W) = sum_s w_s * x_s, logits initialised to 0.
    """

    _logits_name = "stream_logits"

    def stream_weights(self) -> np.ndarray:
        """Softmax stream weights (S,), summing to 1."""
        return self.mixture_weights()
