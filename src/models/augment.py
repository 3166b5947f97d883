"""SpecAugment-style masking of frame-level features in training (registered under ``ser``)."""
from __future__ import annotations

import keras
import tensorflow as tf

from src.models.layers import clipped_lengths

__all__ = ["SpecAugment"]


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
            valid = tf.cast(clipped_lengths(lengths, steps), tf.float32)
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
