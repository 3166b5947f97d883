"""Adversarial domain adaptation parts (DANN, Ganin & Lempitsky 2015).

Usage: domain_logit = build_domain_classifier(dim)(GradientReversal()(embedding)); set the
reversal strength each step with ``grl.set_scale(adaptation_lambda(progress))``.
"""
from __future__ import annotations

import keras
import tensorflow as tf

__all__ = ["GradientReversal", "build_domain_classifier"]


@tf.custom_gradient
def _reverse_gradient(x, scale):
    def grad(upstream):
        return -tf.cast(scale, upstream.dtype) * upstream, tf.zeros_like(scale)

    return tf.identity(x), grad


@keras.saving.register_keras_serializable(package="ser")
class GradientReversal(keras.layers.Layer):
    """Identity forward; multiplies the incoming gradient by -scale backward.

    Input (..., D) -> output (..., D). ``scale`` is a non-trainable scalar variable
    (``layer.scale``), so a schedule can change it during training without retracing:
    ``layer.set_scale(v)`` or ``layer.scale.assign(v)``.
    """

    def __init__(self, scale=1.0, **kwargs):
        super().__init__(**kwargs)
        self.initial_scale = float(scale)
        self.scale = self.add_weight(
            name="scale", shape=(), initializer=keras.initializers.Constant(self.initial_scale),
            trainable=False)

    def set_scale(self, value) -> None:
        """Set the gradient multiplier (Python float or scalar tensor)."""
        self.scale.assign(tf.cast(value, self.scale.dtype))

    def call(self, inputs):
        scale = tf.convert_to_tensor(self.scale)
        return _reverse_gradient(inputs, tf.cast(scale, inputs.dtype))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(scale=self.initial_scale)
        return config


def build_domain_classifier(input_dim: int, hidden: int = 256, dropout: float = 0.5,
                            name: str = "domain_classifier") -> keras.Sequential:
    """MLP (B, input_dim) -> (B, 1) domain logit (source vs target; apply sigmoid for p).

    Dense(hidden, relu) -> Dropout -> Dense(hidden, relu) -> Dropout -> Dense(1). The gradient
    reversal layer is not included; put a GradientReversal in front of it.
    """
    for arg, value in (("input_dim", input_dim), ("hidden", hidden)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{arg} must be a positive integer, got {value!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    return keras.Sequential([
        keras.Input(shape=(input_dim,)),
        keras.layers.Dense(hidden, activation="relu", name="domain_dense0"),
        keras.layers.Dropout(dropout, name="domain_dropout0"),
        keras.layers.Dense(hidden, activation="relu", name="domain_dense1"),
        keras.layers.Dropout(dropout, name="domain_dropout1"),
        keras.layers.Dense(1, name="domain_logit"),
    ], name=name)
