"""Ablation tables: the feature ablation (full model: TCN + DTPM + attention) and the component
ablation (one feature, parts of the model switched off, with and without adaptation) on one
corpus; a row without a matching run says "not run".
"""
from __future__ import annotations

import math
from typing import Any

import pandas as pd

from src.training.config import OTHER_CORPUS, RunConfig

from .collect import CROSS_KINDS, short_setting
from .tables import NOT_RUN, best_run, metric_cells



def _truthy(value: Any) -> bool:
    """A switch value from metrics.json (bool, "true"/"1"/..., missing) as a bool."""
    if isinstance(value, str):
        return value.lower() in ("1", "true", "yes", "on")
    return bool(value) if value is not None and not (isinstance(value, float)
                                                      and math.isnan(value)) else False


def _head(value: Any) -> tuple[int, ...]:
    """The head Dense sizes of a run (() = softmax on the pooled features); runs from before
    --head_units existed had the default head."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return RunConfig().head_sizes()
    return RunConfig(head_units=str(value)).head_sizes()


def _streams(value: Any) -> str:
    """A --fusion_streams value normalised to "A,B" (no spaces, no empty parts)."""
    return ",".join(s.strip() for s in str(value or "").split(",") if s.strip())


def ablation_tables(frame: pd.DataFrame, corpus: str | None = None,
                    feature: str | None = None) -> tuple[str, pd.DataFrame, pd.DataFrame]:
    """Feature ablation (full model) and component ablation (one feature) on `corpus`; rows
    without a matching run say "not run"."""
    train = frame[frame["kind"] == "train"] if not frame.empty else frame
    if not corpus:
        corpora = list(train["data"].value_counts().index) if not train.empty else []
        corpus = "EMODB" if "EMODB" in corpora or not corpora else corpora[0]
    corpus = corpus.upper()
    feature = feature or "MFCC"
    train = train[train["data"] == corpus] if not train.empty else train
    if not train.empty:  # (map, not ==: pandas compares a tuple element by element)
        heads = train["head_units"].map(_head)
        default_head = RunConfig().head_sizes()
        pooled_head = train[heads.map(lambda h: h == ())]
        train = train[heads.map(lambda h: h == default_head)]
    else:
        pooled_head = train
    full = train[train["use_dtpm"].map(_truthy) & train["use_attention"].map(_truthy)] \
        if not train.empty else train

    def row(name: str, subset: pd.DataFrame, evaluated: str) -> dict:
        best = best_run(subset) if not subset.empty else None
        if best is None:
            return {"row": name, "run": NOT_RUN}
        return {"row": name, "run": best["run_id"], "evaluated on": evaluated,
                **metric_cells(best)}

    def select(subset, feature_type, streams=None):
        if subset.empty:
            return subset
        keep = subset["feature_type"] == feature_type
        if streams is not None:
            keep &= subset["fusion_streams"].map(_streams) == streams
        return subset[keep]

    feature_rows = [
        row("MFCC", select(full, "MFCC"), corpus),
        row("LogMel", select(full, "LogMel"), corpus),
        row("HuBERT", select(full, "HuBERT"), corpus),
        row("FUSION (MFCC + LogMel)", select(full, "FUSION", "MFCC,LogMel"), corpus),
        row("FUSION (MFCC + LogMel + HuBERT)", select(full, "FUSION", "MFCC,LogMel,HuBERT"),
            corpus),
    ]
    by_feature = select(train, feature)

    def parts(subset, dtpm, attention):
        if subset.empty:
            return subset
        return subset[(subset["use_dtpm"].map(_truthy) == dtpm)
                      & (subset["use_attention"].map(_truthy) == attention)]

    cross = frame[frame["kind"].isin(CROSS_KINDS) & (frame["data"] == corpus)
                  & (frame["feature_type"] == feature)] if not frame.empty else frame
    cross_full = parts(cross, True, True)
    target = ""
    if not cross_full.empty:
        target = sorted(set(cross_full["target_data"]))[0]
        cross_full = cross_full[cross_full["target_data"] == target]
    target = target or OTHER_CORPUS.get(corpus, "")
    direction = f"{corpus}->{target or 'target'}"
    lmmd = cross_full[(cross_full["kind"] == "train-lmmd") & (cross_full["da_method"] == "lmmd")] \
        if not cross_full.empty else cross_full
    no_da = cross_full[cross_full["da_method"] == "none"] if not cross_full.empty else cross_full
    component_rows = [
        row("TCN only", parts(by_feature, False, False), corpus),
        row("TCN + DTPM", parts(by_feature, True, False), corpus),
        row("TCN + DTPM + attention", parts(by_feature, True, True), corpus),
        row("TCN only, softmax on the pooled features (TIM-Net)",
            parts(select(pooled_head, feature), False, False), corpus),
        row("TCN + DTPM + attention, softmax on the pooled features",
            parts(select(pooled_head, feature), True, True), corpus),
        row(f"full model, no adaptation ({short_setting(direction)})", no_da,
            f"{target or 'target'} (target)"),
        row(f"+ LMMD ({short_setting(direction)})", lmmd, f"{target or 'target'} (target)"),
    ]
    columns = ["row", "run", "evaluated on", "folds", "accuracy (WAR) %", "UAR %", "macro-F1 %"]
    return (corpus, pd.DataFrame(feature_rows).reindex(columns=columns).fillna(""),
            pd.DataFrame(component_rows).reindex(columns=columns).fillna(""))

