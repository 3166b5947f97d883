"""Utterance pooling layers shared by the MLP and the fused temporal model (registered under
the ``ser`` package, so saved models load once this module is imported)."""
from __future__ import annotations

import keras
import tensorflow as tf

__all__ = ["MaskedMeanStdPooling", "FirstFrame"]


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
