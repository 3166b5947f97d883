"""Utterance-level Keras models: the `mlp` classifier, and the pooling both it and the fused
temporal model use to turn streams into one vector per utterance.

The inputs are those of every model of the project (a dict of (B, T, dim) streams plus the
"length" input), so the same tf.data batches, fitting, adaptation trainer, saving and prediction
serve the MLP too:

    v = concat over streams of
          x[:, 0, :]                           utterance-level stream (openSMILE functionals)
          [masked mean, masked std over time]  frame-level stream (MFCC, LogMel, LLDs, ...)
    v = Normalization(train mean, train variance)(v)                    "norm_utterance"
    h = Dropout(Dense(units[0], relu)) ... Dense(units[-1], relu)        "embedding"
    p = Dense(n_classes, softmax)                                        "probabilities"

which equals `src.training.data.utterance_matrix` followed by the MLP (tests check the pooling
against it).
"""
from __future__ import annotations

from typing import Sequence

import keras
import numpy as np

from src.models.model import LENGTH_INPUT
from src.models.pooling import FirstFrame, MaskedMeanStdPooling

__all__ = ["pooled_utterance", "build_mlp"]


def pooled_utterance(inputs: dict, utterance_streams: Sequence[str], names: Sequence[str]):
    """Functional: one (B, D) vector per utterance from the stream inputs `names` (see module
    docstring), in `names` order."""
    parts = []
    for name in names:
        if name in utterance_streams:
            parts.append(FirstFrame(name=f"{name}_vector")(inputs[name]))
        else:
            parts.append(MaskedMeanStdPooling(name=f"{name}_mean_std")(
                [inputs[name], inputs[LENGTH_INPUT]]))
    return parts[0] if len(parts) == 1 else keras.layers.Concatenate(name="utterance_concat")(parts)


def build_mlp(input_dims: dict[str, int], n_classes: int, utterance_streams: Sequence[str] = (),
              units: Sequence[int] = (256, 128), dropout: float = 0.3,
              norm_stats: tuple[np.ndarray, np.ndarray] | None = None,
              name: str = "ser_mlp") -> keras.Model:
    """Uncompiled MLP over pooled utterance vectors.

    input_dims: {stream: dim}; utterance_streams: those stored as (B, 1, dim).
    norm_stats: (mean (D,), variance (D,)) of the pooled training vectors (D = sum of dim for
    utterance streams and 2 x dim for frame streams), applied by the "norm_utterance" layer.
    Returns a model taking {stream: (B, T, dim), "length": (B,)} -> (B, n_classes); its layer
    "embedding" is the last hidden layer (B, units[-1]).
    """
    if n_classes < 2 or not units or min(units) < 1 or not 0 <= dropout < 1:
        raise ValueError(f"build_mlp: need n_classes >= 2, positive units and dropout in [0, 1); "
                         f"got {n_classes}, {tuple(units)}, {dropout}")
    inputs = {s: keras.Input(shape=(1 if s in utterance_streams else None, int(d)),
                             dtype="float32", name=s) for s, d in input_dims.items()}
    inputs[LENGTH_INPUT] = keras.Input(shape=(), dtype="int32", name=LENGTH_INPUT)
    x = pooled_utterance(inputs, utterance_streams, list(input_dims))
    if norm_stats is not None:
        mean, variance = (np.asarray(v, dtype=np.float32) for v in norm_stats)
        x = keras.layers.Normalization(mean=mean, variance=np.maximum(variance, 1e-8),
                                       name="norm_utterance")(x)
    for i, size in enumerate(units):
        last = i == len(units) - 1
        x = keras.layers.Dense(int(size), activation="relu",
                               name="embedding" if last else f"mlp_dense{i}")(x)
        x = keras.layers.Dropout(dropout, name=f"mlp_dropout{i}")(x)
    outputs = keras.layers.Dense(n_classes, activation="softmax", dtype="float32",
                                 name="probabilities")(x)
    return keras.Model(inputs=inputs, outputs=outputs, name=name)
