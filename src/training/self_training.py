"""Class-balanced self-training across corpora (`--self_training ROUNDS`, `--mode train-lmmd`).

After the fold's first fit, round r = 1..R labels a share r / (R + 1) of the target corpus with
the model's own predictions and trains again, from scratch, on the source training files plus
those pseudo-labelled target files (the target stays the unlabelled adaptation target as well).
Each class receives the same number of target files: its most confident ones (the highest
predicted probability of that class), so a class the source model over-predicts on the target
(e.g. neutral absorbing the calm-sounding takes of another corpus) cannot take over the pseudo
labels; this is class-balanced self-training (Zou et al., ECCV 2018) with its assumption of a
roughly balanced target. Target labels are never read.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from src.training.data import SERData, concatenate


def round_share(round_index: int, rounds: int) -> float:
    """Share of the target pseudo-labelled in round `round_index` (1-based) of `rounds`."""
    return round_index / (rounds + 1)


def balanced_pseudo_labels(probs: np.ndarray, share: float) -> tuple[np.ndarray, np.ndarray]:
    """Class-balanced pseudo-labels of `share` of the N target files.

    probs: (N, K) predicted probabilities. Each class gets floor(share * N / K) files: the
    (file, class) pairs are taken in descending probability, a pair kept while its file is
    unassigned and its class below quota. Returns (file indices (M,), class indices (M,)),
    sorted by file index; M = K * quota unless files run out.
    """
    n, k = probs.shape
    quota = int(share * n / k)
    taken = np.zeros(k, dtype=int)
    label = np.full(n, -1)
    for flat in np.argsort(-probs, axis=None, kind="stable"):
        file, cls = divmod(int(flat), k)
        if label[file] < 0 and taken[cls] < quota:
            label[file], taken[cls] = cls, taken[cls] + 1
            if taken.sum() == quota * k:
                break
    index = np.flatnonzero(label >= 0)
    return index, label[index]


def with_pseudo_labelled(train: SERData, target: SERData, index: np.ndarray,
                         labels: np.ndarray) -> SERData:
    """`train` followed by target files `index` carrying `labels` (class indices of
    train.class_names); frame-level streams are zero padded to the longer of the two."""
    extra = target.subset(index)
    extra = dataclasses.replace(extra, labels=np.asarray(labels), metadata=extra.metadata.assign(
        label=[train.class_names[c] for c in labels]))
    return concatenate([train, extra])
