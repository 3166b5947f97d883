"""Reports of a cross-corpus run (`--mode train-lmmd` and `--mode test-cross-corpus`): the
one-line summary of an adapted fold, the fold ensemble's figures on the target corpus,
report.xlsx on the target and source_report.xlsx on the held-out source folds, and the t-SNE
plots of the inputs and embeddings of both corpora (`--visualize`).
"""
from __future__ import annotations

import resource
from pathlib import Path

import numpy as np

from src.training.data import SERData, utterance_matrix
from src.training.estimators import load_estimator


def describe_adapted_fold(result: dict) -> str:
    """One-line summary of an adapted fold result: target and held-out source figures."""
    t, s = result["target"]["metrics"], result["source"]["metrics"]
    return (f"target UAR {100 * t['uar']:.2f}% WAR {100 * t['war']:.2f}% | source UAR "
            f"{100 * s['uar']:.2f}% | {result['seconds_per_epoch']:.2f} s/epoch")


def fold_ensemble_metrics(evaluations: list[dict], names: list[str]) -> dict | None:
    """WAR/UAR/macro-F1 of the mean class probabilities of the fold models on the target (what
    `--mode predict` gives with these models); None for one fold, or when the folds were
    evaluated on different target files (`evaluations`: each fold result's "target" entry)."""
    from src.utils.metrics import compute_metrics  # heavy: sklearn

    if len(evaluations) < 2 or any(e["file_ids"] != evaluations[0]["file_ids"]
                                   for e in evaluations):
        return None
    probs = np.mean([np.asarray(e["probs"]) for e in evaluations], axis=0)
    metrics = compute_metrics(np.asarray(evaluations[0]["y_true"]), probs.argmax(axis=1), names)
    return {k: float(metrics[k]) for k in ("war", "uar", "macro_f1")}


def write_cross_corpus_reports(result_dir: Path, run_id: str, saved: dict, results: list[dict],
                               names: list[str], n_folds_total: int | None = None) -> dict:
    """report.xlsx on the target corpus (main figures) and source_report.xlsx on held-out
    source folds; n_folds_total as in `write_run_report`."""
    from src.training.report import write_run_report  # heavy: matplotlib, sklearn

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def flatten(result, side):
        return {"fold": result["fold"], **result[side], "history": result.get("history"),
                "epochs": result.get("epochs"), "seconds": result.get("seconds"),
                "seconds_per_epoch": result.get("seconds_per_epoch")}

    extra = {"target_data": saved.get("target_data"), "da_method": saved["run"].get("da_method")}
    ensemble = fold_ensemble_metrics([r["target"] for r in results], names)
    if ensemble:
        extra["ensemble"] = ensemble
        print(f"fold ensemble ({len(results)} models, mean probabilities) on the target: "
              f"UAR {100 * ensemble['uar']:.2f}% WAR {100 * ensemble['war']:.2f}% "
              f"F1 {100 * ensemble['macro_f1']:.2f}%")
    if all("source" in r for r in results):
        source_summary = write_run_report(result_dir / "source", f"{run_id} (source folds)",
                                          saved, [flatten(r, "source") for r in results], names,
                                          n_folds_total=n_folds_total)
        extra["source"] = {k: v for k, v in source_summary.items()
                           if k.endswith("_mean") or k.endswith("_std")}
    return write_run_report(result_dir, f"{run_id} (target {saved.get('target_data')})",
                            saved, [flatten(r, "target") for r in results], names,
                            peak_memory_mb=peak_mb, extra=extra, n_folds_total=n_folds_total)


def _plot_embeddings(source: SERData, target: SERData, model_dir: Path, result_dir: Path,
                     run_id: str) -> None:
    """t-SNE of utterance-level input vectors (`utterance_matrix`, before) and fold 1's
    embeddings (after)."""
    from src.utils.plots import plot_tsne  # heavy: matplotlib

    rng = np.random.default_rng(0)
    pick_s = rng.permutation(source.n)[:600]
    pick_t = rng.permutation(target.n)[:600]
    s, t = source.subset(pick_s), target.subset(pick_t)
    labels = np.array([source.class_names[i] for i in np.concatenate([s.labels, t.labels])])
    domains = np.array([source.dataset] * s.n + [target.dataset] * t.n)
    before = np.concatenate([utterance_matrix(s), utterance_matrix(t)])
    plot_tsne(before, labels, domains, result_dir / "tsne_before.png",
              title=f"{run_id}: input features (before adaptation)")
    estimator = load_estimator(model_dir / "fold_01", source.class_names)
    after = np.concatenate([estimator.embed(s), estimator.embed(t)])
    plot_tsne(after, labels, domains, result_dir / "tsne_after.png",
              title=f"{run_id}: embeddings after training (fold 1)")
