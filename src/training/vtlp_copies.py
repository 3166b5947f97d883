"""`--vtlp FACTORS`: the training files again, once per factor, with their frequency axis warped.

Each copy is a set of pseudo-speakers (speaker "03" warped by 0.9 is speaker "03@vtlp0.9"),
standardised with its own statistics under --speaker_norm, as a new speaker would be. The warp
is applied to the raw (unstandardised) frames (`src.data_processing.vtlp`); only the training
part of a fold receives copies, never its validation or test files.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from src.data_processing.vtlp import log_mel_warp, mfcc_warp
from src.training.data import (DataError, SERData, concatenate, speaker_groups,
                               standardise_groups)

__all__ = ["warp_matrix", "warped", "vtlp_copies", "with_copies"]

WARPABLE = ("MFCC", "LogMel")


def warp_matrix(stream: str, extraction: dict, alpha: float) -> np.ndarray:
    """(D, D) float32 map of one frame of `stream` (MFCC or LogMel) extracted with settings
    `extraction` (an ExtractionConfig dict); DataError for any other stream."""
    if stream not in WARPABLE:
        raise DataError(f"--vtlp warps {' and '.join(WARPABLE)} frames; --feature_type stream "
                        f"{stream} cannot be warped")
    mel = dict(sample_rate=int(extraction["sample_rate"]), n_mels=int(extraction["n_mels"]),
               fmin=float(extraction.get("fmin") or 0.0), fmax=extraction.get("fmax"))
    if stream == "LogMel":
        return log_mel_warp(alpha, **mel).astype(np.float32)
    return mfcc_warp(alpha, n_mfcc=int(extraction["n_mfcc"]), **mel).astype(np.float32)


def warped(data: SERData, alpha: float) -> SERData:
    """`data` with every stream's frames warped by `alpha` and every file and speaker id
    suffixed "@vtlp<alpha>"; padding stays zero (the map is linear)."""
    streams = {name: array @ warp_matrix(name, data.extraction[name], alpha).T
               for name, array in data.streams.items()}
    tag = f"@vtlp{alpha:g}"
    metadata = data.metadata.copy()
    metadata["file_id"] = metadata["file_id"].astype(str) + tag
    metadata["speaker"] = speaker_groups(data).astype(str) + tag
    return dataclasses.replace(data, streams=streams, metadata=metadata)


def vtlp_copies(raw: SERData, factors, speaker_norm: bool) -> list[SERData]:
    """One warped copy of the whole corpus `raw` (unstandardised) per factor, each standardised
    per pseudo-speaker when `speaker_norm`; rows in `raw`'s order."""
    copies = []
    for alpha in factors:
        copy = warped(raw, alpha)
        copies.append(standardise_groups(copy, speaker_groups(copy)) if speaker_norm else copy)
    return copies


def with_copies(train: SERData, data: SERData, copies: list[SERData]) -> SERData:
    """`train` (a subset of `data`) followed by the same files of each copy of `data`."""
    if not copies:
        return train
    position = pd.Index(data.file_ids)
    rows = position.get_indexer(train.file_ids)
    if (rows < 0).any():
        raise DataError("with_copies: the training files are not all in the corpus")
    return concatenate([train] + [copy.subset(rows) for copy in copies])
