"""Training data: feature sets loaded into padded arrays, label encoding and tf.data batches.

Utterances keep their true lengths. Batches are built from length-sorted groups so that each batch
is padded only to its own longest member (rounded up to `PAD_MULTIPLE` frames, which bounds the
number of distinct shapes), and the model masks the padding using the `length` input.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from src.data_processing.config import FEATURE_TYPES, FUSION, is_utterance_level
from src.data_processing.store import load_feature_set, load_fusion_set

log = logging.getLogger(__name__)

PAD_MULTIPLE = 16
from src.models.inputs import LENGTH_INPUT


class DataError(ValueError):
    """Training data cannot be assembled as asked (bad label set, empty corpus, ...)."""


@dataclasses.dataclass
class SERData:
    """One corpus ready for training.

    streams: stream name -> (N, T_max, D) float32, zero padded after each utterance's length;
        an utterance-level stream (openSMILE functionals) is (N, 1, D) and always valid.
    lengths: (N,) int32 valid frames of the frame-level streams (1 when there are none);
    labels: (N,) int class indices into `class_names`.
    """

    dataset: str
    streams: dict[str, np.ndarray]
    lengths: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    metadata: pd.DataFrame
    extraction: dict[str, dict]
    feature_hashes: dict[str, str]

    @property
    def n(self) -> int:
        return len(self.lengths)

    @property
    def input_dims(self) -> dict[str, int]:
        return {name: int(array.shape[-1]) for name, array in self.streams.items()}

    @property
    def utterance_streams(self) -> list[str]:
        """Streams holding one vector per utterance, (N, 1, D)."""
        return [name for name in self.streams
                if is_utterance_level(name, self.extraction.get(name, {}))]

    @property
    def frame_streams(self) -> list[str]:
        """Streams holding frames, (N, T_max, D), valid up to `lengths`."""
        return [name for name in self.streams if name not in self.utterance_streams]

    @property
    def file_ids(self) -> np.ndarray:
        return self.metadata["file_id"].to_numpy()

    @property
    def speakers(self) -> np.ndarray:
        return self.metadata["speaker"].astype(str).to_numpy()

    def subset(self, index: np.ndarray) -> "SERData":
        """Rows `index` (kept in that order)."""
        return dataclasses.replace(
            self,
            streams={k: v[index] for k, v in self.streams.items()},
            lengths=self.lengths[index],
            labels=self.labels[index],
            metadata=self.metadata.iloc[index].reset_index(drop=True),
        )


def stream_names(feature_type: str, fusion_streams: str | None = None) -> list[str]:
    """Streams that make up `feature_type` (FUSION defaults to MFCC+LogMel)."""
    if feature_type == FUSION:
        names = [s.strip() for s in (fusion_streams or "MFCC,LogMel").split(",") if s.strip()]
        bad = [s for s in names if s not in FEATURE_TYPES]
        if bad or not names:
            raise DataError(f"--fusion_streams {fusion_streams!r}: use a comma list of "
                            f"{', '.join(FEATURE_TYPES)}")
        return names
    if feature_type not in FEATURE_TYPES:
        raise DataError(f"--feature_type {feature_type!r}: use one of "
                        f"{', '.join(FEATURE_TYPES + (FUSION,))}")
    return [feature_type]


def load_ser_data(dataset: str, feature_type: str, features_root: str | Path,
                  fusion_streams: str | None = None, class_names: list[str] | None = None,
                  feature_hashes: dict[str, str] | None = None,
                  max_frames: int = 0, speaker_norm: bool = False) -> SERData:
    """Load extracted features of `dataset` as padded arrays.

    class_names: keep only these labels, in this order (others are dropped and logged);
    default: every label in the corpus, sorted. max_frames > 0 centre-crops longer utterances
    (recorded in metadata column `cropped`). speaker_norm: standardise every speaker's
    utterances with that speaker's own statistics (`standardise_groups`), after both.
    """
    names = stream_names(feature_type, fusion_streams)
    hashes = feature_hashes or {}
    if len(names) == 1:
        fs = load_feature_set(dataset, names[0], features_root=features_root,
                              config_hash=hashes.get(names[0]))
        arrays = {names[0]: fs.arrays}
        metadata = fs.metadata
        configs = {names[0]: fs.config}
        found_hashes = {names[0]: fs.path.name}
    else:
        arrays, metadata, configs = load_fusion_set(dataset, names, features_root=features_root,
                                                    config_hashes=hashes or None)
        found_hashes = {n: configs[n].feature_hash(n) for n in names}
    metadata = metadata.reset_index(drop=True)
    labels_text = metadata["label"].astype(str).to_numpy()
    if class_names is None:
        class_names = sorted(set(labels_text))
    keep = np.flatnonzero(np.isin(labels_text, class_names))
    dropped = len(labels_text) - len(keep)
    if dropped:
        counts = pd.Series(labels_text[~np.isin(labels_text, class_names)]).value_counts()
        log.info("%s: dropped %d files outside the label set (%s)", dataset, dropped,
                 ", ".join(f"{k} {v}" for k, v in counts.items()))
    if len(keep) == 0:
        raise DataError(f"{dataset}: no file has a label in {class_names}")
    metadata = metadata.iloc[keep].reset_index(drop=True)
    utterance = [n for n in names if is_utterance_level(n, configs[n])]
    framed = [n for n in names if n not in utterance]
    lengths = np.array([arrays[framed[0]][i].shape[0] if framed else 1 for i in keep],
                       dtype=np.int32)
    if max_frames > 0 and framed:
        metadata["cropped"] = lengths > max_frames
        lengths = np.minimum(lengths, max_frames)
    streams = {name: (np.stack([arrays[name][i] for i in keep]).astype(np.float32)
                      if name in utterance else
                      pad_sequences([arrays[name][i] for i in keep], lengths))
               for name in names}
    label_index = {name: i for i, name in enumerate(class_names)}
    labels = np.array([label_index[t] for t in metadata["label"].astype(str)], dtype=np.int32)
    data = SERData(dataset=dataset.upper(), streams=streams, lengths=lengths, labels=labels,
                   class_names=list(class_names), metadata=metadata,
                   extraction={n: c.to_dict() for n, c in configs.items()},
                   feature_hashes=found_hashes)
    return standardise_groups(data, speaker_groups(data)) if speaker_norm else data


def concatenate(parts: list[SERData]) -> SERData:
    """The rows of `parts` one after the other (corpus, classes and extraction of the first);
    frame-level streams are zero padded to the longest of them."""
    first = parts[0]
    streams = {}
    for name in first.streams:
        frames = max(p.streams[name].shape[1] for p in parts)
        streams[name] = np.concatenate([_pad_time(p.streams[name], frames) for p in parts])
    return dataclasses.replace(
        first, streams=streams, lengths=np.concatenate([p.lengths for p in parts]),
        labels=np.concatenate([p.labels for p in parts]).astype(first.labels.dtype),
        metadata=pd.concat([p.metadata for p in parts], ignore_index=True))


def _pad_time(array: np.ndarray, frames: int) -> np.ndarray:
    """(N, T, D) zero padded to (N, frames, D)."""
    if array.shape[1] == frames:
        return array
    return np.pad(array, ((0, 0), (0, frames - array.shape[1]), (0, 0)))


def speaker_groups(data: SERData) -> np.ndarray:
    """(N,) speaker id of every utterance ("" where the corpus names none: one group)."""
    if "speaker" not in data.metadata:
        return np.full(data.n, "", dtype=object)
    return data.metadata["speaker"].fillna("").astype(str).to_numpy()


def pad_sequences(arrays: list[np.ndarray], lengths: np.ndarray) -> np.ndarray:
    """Stack (T_i, D) arrays into (N, max(lengths), D), centre-cropping each to lengths[i]."""
    t_max = int(lengths.max())
    out = np.zeros((len(arrays), t_max, arrays[0].shape[1]), dtype=np.float32)
    for i, (array, length) in enumerate(zip(arrays, lengths)):
        start = (array.shape[0] - length) // 2
        out[i, :length] = array[start:start + length]
    return out


def valid_frames(data: SERData, stream: str | None = None) -> np.ndarray:
    """(N, T) bool: True on each utterance's real frames of `stream` (default: the first
    frame-level one), False on padding; all True for an utterance-level stream ((N, 1))."""
    stream = stream or (data.frame_streams or list(data.streams))[0]
    t_max = data.streams[stream].shape[1]
    if stream in data.utterance_streams:
        return np.ones((data.n, t_max), dtype=bool)
    return np.arange(t_max)[None, :] < data.lengths[:, None]


# Normalization variance of a dimension the training data holds constant (scale ~1e-15).
UNUSED_VARIANCE = 1e30


def normalisation_stats(data: SERData) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-stream mean and variance over the valid frames of `data` (over the utterances for an
    utterance-level stream): {stream: ((D,), (D,))}."""
    return {name: model_scaling(array[valid_frames(data, name)])
            for name, array in data.streams.items()}


def model_scaling(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean (D,), variance (D,)) of `frames` (n, D) for a model's Normalization layer; a
    dimension at float32 noise level (`group_scaling`) gets variance UNUSED_VARIANCE, i.e. a
    scale of ~0: it carried nothing in training, and values another corpus has there must not
    reach the model multiplied by 1/sqrt(floor) (ComParE dimensions constant within every
    RAVDESS speaker vary in EMODB: the R->E MLP fell to chance with them)."""
    mean, scale = group_scaling(frames)
    variance = np.where(scale > 0, 1.0 / np.square(np.where(scale > 0, scale, 1.0)),
                        UNUSED_VARIANCE)
    return mean.astype(np.float32), variance.astype(np.float32)


def utterance_matrix(data: SERData) -> np.ndarray:
    """(N, D) one vector per utterance, streams side by side in `data.streams` order: an
    utterance-level stream's vector, or a frame-level stream's mean and standard deviation over
    its valid frames (2 x D). The input of the utterance-level models (svm, logreg, and the
    same pooling inside the Keras `mlp`, `src.models.mlp.UtterancePooling`)."""
    parts = []
    for name, array in data.streams.items():
        if name in data.utterance_streams:
            parts.append(array[:, 0, :])
            continue
        valid = valid_frames(data, name)[..., None]
        count = np.maximum(valid.sum(axis=1), 1)
        mean = (array * valid).sum(axis=1) / count
        var = (np.square(array - mean[:, None, :]) * valid).sum(axis=1) / count
        parts.extend([mean, np.sqrt(var)])
    return np.concatenate(parts, axis=1).astype(np.float32)


def standardise_groups(data: SERData, groups: np.ndarray) -> SERData:
    """Standardise each group's utterances (e.g. one speaker's) with the mean and variance of
    that group's valid frames, per stream and feature dimension; padding stays zero.

    groups: (N,) labels. Unsupervised (labels are never read), so it may use a test speaker's
    own recordings, as speaker normalisation in speaker-independent SER does.
    """
    streams = {name: np.zeros_like(array) for name, array in data.streams.items()}
    for group in pd.unique(groups):
        rows = np.flatnonzero(groups == group)
        for name, array in data.streams.items():
            valid = valid_frames(data, name)[rows]
            mean, scale = group_scaling(array[rows][valid])
            streams[name][rows] = np.where(valid[..., None], (array[rows] - mean) * scale, 0.0)
    return dataclasses.replace(data, streams=streams)


def group_scaling(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean (D,), scale (D,)) that standardise `frames` (n, D): scale = 1/std, and 0 for a
    dimension whose variance is at float32 noise level (var <= 1e-8 + 1e-10 mean^2).

    A dimension that is constant within a group carries nothing in that group; dividing its
    rounding noise by a floored std (the former rule) gave values near zero but not zero, which
    the model's own standardisation then blew up by 10^4 on another corpus (ComParE has ~60 such
    dimensions: R->E logistic regression 27 % UAR with them, 51 % without).
    """
    frames = frames.astype(np.float64)
    mean, var = frames.mean(axis=0), frames.var(axis=0)
    informative = var > 1e-8 + 1e-10 * np.square(mean)
    scale = np.where(informative, 1.0 / np.sqrt(np.where(informative, var, 1.0)), 0.0)
    return mean, scale  # float64: x - mean of a large-mean feature loses digits in float32


def class_balanced_draw(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(n,) indices drawn with replacement so that every class is equally likely at each draw
    (minority classes repeat, majority files may be left out of an epoch)."""
    counts = np.bincount(labels)
    weights = 1.0 / counts[labels]
    return rng.choice(len(labels), size=len(labels), p=weights / weights.sum())


def length_sorted_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator | None,
                          group_batches: int = 8,
                          balance_labels: np.ndarray | None = None) -> list[np.ndarray]:
    """Split indices into batches of similar length.

    With `rng` (training): shuffle, sort within groups of `group_batches` batches, shuffle the
    batch order; with `balance_labels` too, the epoch is a class-balanced draw of as many
    indices (`class_balanced_draw`) instead of a permutation. Without `rng` (evaluation): one
    deterministic length-sorted pass over every index.
    """
    n = len(lengths)
    if rng is None:
        order = np.argsort(lengths, kind="stable")
        return [order[i:i + batch_size] for i in range(0, n, batch_size)]
    if balance_labels is None:
        order = rng.permutation(n)
    else:
        order = class_balanced_draw(balance_labels, rng)
    group = batch_size * group_batches
    batches = []
    for start in range(0, n, group):
        chunk = order[start:start + group]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def mixup_partners(batch_size: int, alpha: float, rng: np.random.Generator
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Mixup draw for one batch: (partner positions (B,) int32, weights (B,) float32).

    Each file i is mixed as w_i * x_i + (1 - w_i) * x_partner(i) with a partner from the same
    batch (a permutation) and w_i ~ Beta(alpha, alpha) folded to [0.5, 1], so the file keeps the
    larger share and a batch never mixes a file mostly away (Zhang et al. 2018).
    """
    weights = rng.beta(alpha, alpha, size=batch_size)
    weights = np.maximum(weights, 1.0 - weights)
    return rng.permutation(batch_size).astype(np.int32), weights.astype(np.float32)


def make_dataset(data: SERData, batch_size: int, seed: int | None, n_classes: int,
                 training: bool, n_slices: int = 1, slices: Sequence[int] = (0,),
                 repeat: bool = False, balanced: bool = False, mixup: float = 0.0,
                 soft_labels: np.ndarray | None = None):
    """tf.data pipeline of ({stream: (B,T,D), "length": (B,)}, one-hot (B,C)) batches.

    Index batches come from `length_sorted_batches`; each batch gathers its rows from in-memory
    tensors and is cut to its longest utterance rounded up to PAD_MULTIPLE, so no per-sample
    Python runs in the loop. Training re-draws the batch order every epoch from `seed`.

    n_slices > 1 cuts every batch into that many near-equal slices (`np.array_split`, in the
    batch's length order), each padded like the whole batch, and yields only the slices listed
    in `slices`, one element each: the per-worker input of a tf.distribute run in which
    `batch_size` is the global batch and every worker draws the same batches from `seed`.
    repeat: endless, drawing a new batch order on every pass (train with `steps_per_epoch`).
    balanced (training only): each epoch draws files class-balanced (`class_balanced_draw`).
    mixup > 0 (training only): every batch mixes each file with a partner of the same batch
    (`mixup_partners`, Beta(mixup, mixup)); features and one-hot labels are mixed with the same
    weight and the length is the longer of the two. Drawn from its own generator, so the batch
    order is the one without mixup.
    soft_labels (N, C): batch these rows instead of the one-hot labels (a teacher's
    probabilities; `data.labels` is then not read).
    """
    import tensorflow as tf  # heavy: tensorflow

    if n_slices > 1:
        sizes = [len(b) for b in length_sorted_batches(
            data.lengths, batch_size, np.random.default_rng(0) if training else None)]
        if min(sizes) < n_slices:  # sizes do not depend on the draw
            raise DataError(f"a batch of {min(sizes)} of the {data.n} files cannot be split "
                            f"over {n_slices} replicas; change --batch_size")
    streams = {k: tf.constant(v) for k, v in data.streams.items()}
    lengths = tf.constant(data.lengths)
    label_rows = (tf.one_hot(tf.constant(data.labels), n_classes) if soft_labels is None
                  else tf.constant(np.asarray(soft_labels, dtype=np.float32)))
    rng = np.random.default_rng(seed) if training else None
    balance_labels = data.labels if balanced else None
    mix_rng = (np.random.default_rng([0 if seed is None else seed, 1])
               if training and mixup else None)

    def index_batches():
        for batch in length_sorted_batches(data.lengths, batch_size, rng,
                                           balance_labels=balance_labels):
            t = int(np.ceil(data.lengths[batch].max() / PAD_MULTIPLE) * PAD_MULTIPLE)
            pieces = np.array_split(batch, n_slices)
            for i in slices:
                index = pieces[i].astype(np.int32)
                if mix_rng is None:
                    yield index, np.int32(t)
                else:
                    partner, weight = mixup_partners(len(index), mixup, mix_rng)
                    yield index, np.int32(t), index[partner], weight

    def gather(index, t):
        inputs = {k: tf.gather(v, index)[:, :t] for k, v in streams.items()}
        inputs[LENGTH_INPUT] = tf.gather(lengths, index)
        return inputs, tf.gather(label_rows, index)

    utterance = set(data.utterance_streams)
    first_stream = next((k for k in streams if k not in utterance), next(iter(streams)))

    def gather_mixed(index, t, partner, weight):
        (inputs, labels), (other, other_labels) = gather(index, t), gather(partner, t)
        frames = tf.range(tf.shape(inputs[first_stream])[1])[None, :]  # t, or T_max if shorter
        own = frames < inputs[LENGTH_INPUT][:, None]
        theirs = frames < other[LENGTH_INPUT][:, None]
        # frames only one of the two files has are copied from it, not mixed with padding
        w = tf.where(own & theirs, weight[:, None], tf.cast(own, tf.float32))[:, :, None]
        w_utt = weight[:, None, None]  # an utterance vector is always mixed
        mixed = {k: (w_utt if k in utterance else w) * inputs[k]
                 + (1.0 - (w_utt if k in utterance else w)) * other[k] for k in streams}
        mixed[LENGTH_INPUT] = tf.maximum(inputs[LENGTH_INPUT], other[LENGTH_INPUT])
        return mixed, weight[:, None] * labels + (1.0 - weight[:, None]) * other_labels

    n_batches = int(np.ceil(data.n / batch_size)) * len(slices)
    signature = (tf.TensorSpec(shape=(None,), dtype=tf.int32),
                 tf.TensorSpec(shape=(), dtype=tf.int32))
    if mix_rng is not None:
        signature += (tf.TensorSpec(shape=(None,), dtype=tf.int32),
                      tf.TensorSpec(shape=(None,), dtype=tf.float32))
    dataset = tf.data.Dataset.from_generator(index_batches, output_signature=signature)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(n_batches))
    if repeat:
        dataset = dataset.repeat()
    return dataset.map(gather if mix_rng is None else gather_mixed).prefetch(2)
