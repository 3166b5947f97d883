"""Pooling layers over time: masked mean, temporal pyramid, mean and standard deviation, and the
vector of an utterance-level stream (registered under the ``ser`` package, so saved models load
once this module is imported). Padding convention: see src.models.layers."""
from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf

from src.models.layers import check_int, clipped_lengths, zero_padding

__all__ = ["MaskedMeanPooling", "TemporalPyramidPooling", "MaskedMeanStdPooling", "FirstFrame"]


@keras.saving.register_keras_serializable(package="ser")
class MaskedMeanPooling(keras.layers.Layer):
    """Mean over valid frames: [x (B, T, F), lengths (B,)] -> (B, F).

    An utterance of length 0 gives zeros (the count is floored at 1).
    """

    def call(self, inputs):
        x, lengths = inputs
        time_steps = tf.shape(x)[1]
        x = zero_padding(x, lengths)
        count = tf.cast(tf.maximum(clipped_lengths(lengths, time_steps), 1), x.dtype)
        return tf.reduce_sum(x, axis=1) / count[:, None]

    def compute_output_shape(self, input_shape):
        shape = input_shape[0]
        return (shape[0], shape[2])


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
        self.scales = tuple(check_int("each scale", s, 1) for s in scales)
        self.n_segments = sum(self.scales)

    def call(self, inputs):
        x, lengths = inputs
        time_steps = tf.shape(x)[1]
        lengths = clipped_lengths(lengths, time_steps)  # (B,)
        x = zero_padding(x, lengths)
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
class MaskedMeanStdPooling(keras.layers.Layer):
    """[x (B, T, F), lengths (B,)] -> (B, 2F): mean and (population) standard deviation over
    each utterance's valid frames [0, length); padding never counts."""

    def call(self, inputs):
        x, lengths = inputs
        steps = tf.shape(x)[1]
        valid = tf.sequence_mask(tf.minimum(lengths, steps), steps, dtype=x.dtype)[..., None]
        count = tf.maximum(tf.reduce_sum(valid, axis=1), 1.0)
        mean = tf.reduce_sum(x * valid, axis=1) / count
        var = tf.reduce_sum(tf.square(x - mean[:, None, :]) * valid, axis=1) / count
        return tf.concat([mean, tf.sqrt(var)], axis=-1)

    def compute_output_shape(self, input_shape):
        shape = input_shape[0]
        return (shape[0], 2 * shape[2])


@keras.saving.register_keras_serializable(package="ser")
class FirstFrame(keras.layers.Layer):
    """(B, T, F) -> (B, F): the vector of an utterance-level stream stored as one frame."""

    def call(self, x):
        return x[:, 0, :]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])
