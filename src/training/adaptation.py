"""Cross-corpus training with domain adaptation (`--mode train-lmmd`) and cross-corpus testing
(`--mode test-cross-corpus`).

Each training step takes a labelled source batch and an unlabelled target batch:
    loss = CE(source) + lambda(p) * lmmd_weight * D(source embeddings, target embeddings)
with lambda(p) = 2 / (1 + exp(-10 p)) - 1 over training progress p (after `--da_warmup` epochs of
source-only training, during which lambda is 0), and D one of
LMMD (class-conditional, target weights from the model's own predictions), global MMD,
a domain-adversarial loss through a gradient-reversal layer (DANN), or nothing (`none`).
Target labels are never read in training; they are used only to report target accuracy and to
keep the target files of the shared classes (the usual cross-corpus protocol). The reports of
both modes are written by cross_corpus_report.py.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from src.data_processing.corpora import shared_labels
from src.data_processing.store import load_feature_set
from src.training.callbacks import (collapse_guard, epoch_log, epoch_selector,  # noqa: F401
                                    epoch_timer, label_free_score)
from src.training.config import OTHER_CORPUS, RunConfig
from src.training.cross_corpus_report import (_plot_embeddings, describe_adapted_fold,
                                              write_cross_corpus_reports)
from src.training.data import (SERData, load_ser_data, make_dataset, speaker_groups,
                                standardise_groups, stream_names)
from src.training.estimators import (CLASSIC_MODELS, KerasEstimator, check_model_input,
                                     load_estimator, make_estimator)
from src.training.evaluate import load_data_for_models, load_saved_run
from src.training.experiment import (ExperimentError, fold_subsets, make_folds, numbered_folds,
                                     prepare_run_dir, run_folds, save_fold_model)
from src.training.fitting import NonFiniteLoss, compile_model, predict_probs, seed_everything
from src.training.self_training import balanced_pseudo_labels, round_share, with_pseudo_labelled
from src.utils import io
from src.utils.metrics import compute_metrics
from src.utils.plots import plot_tsne

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- data
def target_name(cfg: RunConfig) -> str:
    """The target corpus: --target_data, else the other corpus of --data; ExperimentError when
    there is none or it is the source corpus itself."""
    target = cfg.target_data or OTHER_CORPUS.get(cfg.data, "")
    if not target:
        raise ExperimentError(f"--target_data is required when --data is {cfg.data}")
    if target == cfg.data:
        raise ExperimentError(f"--target_data {target} is the source corpus itself")
    return target


def _label_names(dataset: str, cfg: RunConfig) -> list[str]:
    stream = cfg.fusion_streams.split(",")[0] if cfg.feature_type == "FUSION" else cfg.feature_type
    labels = load_feature_set(dataset, stream, features_root=cfg.features_root,
                              config_hash=cfg.feature_hashes([stream]).get(stream)
                              ).metadata["label"]
    return sorted(set(apply_label_map(labels.astype(str).tolist(), cfg.label_map)))


def apply_label_map(labels: list[str], label_map: str) -> list[str]:
    """Rename labels with a JSON file {"from": "to", ...} (used for both corpora)."""
    if not label_map:
        return labels
    try:
        mapping = json.loads(Path(label_map).read_text())
    except OSError as err:
        raise ExperimentError(f"--label_map {label_map}: {err.strerror or err}") from None
    except ValueError as err:
        raise ExperimentError(f"--label_map {label_map}: not a JSON object ({err})") from None
    if not isinstance(mapping, dict):
        raise ExperimentError(f"--label_map {label_map}: not a JSON object "
                              f'{{"from": "to", ...}}')
    return [mapping.get(label, label) for label in labels]


def chosen_labels(wanted: list[str], shared: list[str], between: str) -> list[str]:
    """--label_set `wanted` (which must lie inside `shared`, else ExperimentError naming the
    labels and `between`), or `shared` when none was given."""
    missing = [w for w in wanted if w not in shared]
    if missing:
        raise ExperimentError(f"--label_set: {', '.join(missing)} not shared by {between} "
                              f"(shared: {', '.join(shared)})")
    return list(wanted) or shared


def shared_class_names(cfg: RunConfig, target: str) -> list[str]:
    """Labels of both corpora (or --label_set, which must lie inside them)."""
    shared = shared_labels(_label_names(cfg.data, cfg), _label_names(target, cfg))
    shared = chosen_labels(cfg.label_list(), shared, f"{cfg.data} and {target}")
    if len(shared) < 2:
        raise ExperimentError(f"{cfg.data} and {target} share {len(shared)} labels "
                              f"({', '.join(shared) or 'none'}); cross-corpus training needs 2 "
                              f"or more (see --label_map)")
    return shared


def load_domain(dataset: str, cfg: RunConfig, class_names: list[str],
                feature_hashes: dict | None = None) -> SERData:
    """`dataset`'s features (label map applied) restricted to `class_names`, labels indexed in
    that order, speaker-standardised with --speaker_norm."""
    hashes = feature_hashes or cfg.feature_hashes(stream_names(cfg.feature_type,
                                                               cfg.fusion_streams))
    data = load_ser_data(dataset, cfg.feature_type, cfg.features_root, cfg.fusion_streams,
                         class_names=None, feature_hashes=hashes, max_frames=cfg.max_frames)
    if cfg.label_map:
        data.metadata["label"] = apply_label_map(data.metadata["label"].astype(str).tolist(),
                                                 cfg.label_map)
    keep = np.flatnonzero(data.metadata["label"].isin(class_names).to_numpy())
    dropped = data.metadata["label"][~data.metadata["label"].isin(class_names)].value_counts()
    if len(dropped):
        print(f"{dataset}: dropped {int(dropped.sum())} files of non-shared classes "
              f"({', '.join(f'{k} {v}' for k, v in dropped.items())})")
    data = data.subset(keep)
    if cfg.speaker_norm:  # after the class filter, as `load_data_for_models` does at test time
        groups = speaker_groups(data)
        if len(set(groups) - {"", "unknown"}) == 0:
            print(f"{dataset}: no speaker ids (metadata speaker column empty): --speaker_norm "
                  f"standardises it as one group, i.e. with the corpus's own statistics "
                  f"(--domain_norm)")
        data = standardise_groups(data, groups)
    index = {c: i for i, c in enumerate(class_names)}
    data.labels = np.array([index[c] for c in data.metadata["label"]], dtype=np.int32)
    data.class_names = list(class_names)
    return data


def standardise_corpus(data: SERData) -> SERData:
    """`--domain_norm`: every stream standardised with the whole corpus's own statistics."""
    return standardise_groups(data, np.zeros(data.n))


# ---------------------------------------------------------------------------- training
def build_adaptation_trainer(classifier, cfg: RunConfig, total_steps: int,
                             warmup_steps: int = 0):
    """The `DomainAdaptationTrainer` for `classifier` with the run's adaptation settings;
    lambda is 0 for the first `warmup_steps` steps, then ramps up over the remaining ones."""
    from src.models.adaptation import DomainAdaptationTrainer  # heavy: tensorflow

    return DomainAdaptationTrainer(
        classifier, method=cfg.da_method, weight=cfg.lmmd_weight, total_steps=total_steps,
        warmup_steps=warmup_steps, label_smoothing=cfg.label_smoothing,
        kernel_mul=cfg.kernel_mul, kernel_num=cfg.kernel_num, fix_sigma=cfg.fix_sigma or None,
        pseudo_label=cfg.pseudo_label, confidence=cfg.confidence,
        target_entropy=cfg.target_entropy)


def fit_adapted(classifier, train: SERData, val: SERData | None, target: SERData,
                cfg: RunConfig, seed: int, fold_dir: Path | None,
                target_probs: np.ndarray | None = None):
    """Train Keras `classifier` on `train` with the domain term towards `target` (whose labels
    are dropped before batching); returns (history, epoch seconds, the collapse guard or the
    label-free epoch selector, or None). target_probs (N_target, C): a teacher's predictions,
    batched with the target files as LMMD's target class weights (`--lmmd_targets teacher`)."""
    import keras  # heavy: keras
    import tensorflow as tf  # heavy: tensorflow

    steps = int(np.ceil(train.n / cfg.batch_size))
    trainer = build_adaptation_trainer(classifier, cfg, total_steps=steps * cfg.epoch,
                                       warmup_steps=steps * cfg.da_warmup)
    compile_model(trainer, cfg, steps)
    n_classes = len(train.class_names)
    source_ds = make_dataset(train, cfg.batch_size, seed, n_classes, training=True,
                             balanced=cfg.balanced_batches, mixup=cfg.mixup)
    target_ds = make_dataset(target, cfg.batch_size, seed + 10_000, n_classes, training=True,
                             soft_labels=target_probs)
    if target_probs is None:
        target_inputs = target_ds.map(lambda x, y: x).repeat()  # labels dropped, never read
    else:
        target_inputs = target_ds.repeat()  # (x, the teacher's probabilities)
    train_ds = tf.data.Dataset.zip((source_ds, target_inputs))
    val_ds = make_dataset(val, cfg.batch_size, None, n_classes, training=False) if val else None
    timer = epoch_timer()
    callbacks = [timer, *epoch_log(fold_dir, cfg.tensorboard)]
    guard = None
    if cfg.patience > 0:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor=cfg.monitor, mode="min" if "loss" in cfg.monitor else "max",
            patience=cfg.patience, restore_best_weights=True))
    elif cfg.select_epoch == "label_free":
        guard = epoch_selector(classifier, target, predict_probs)  # restores the best epoch
        callbacks.insert(1, guard)  # before the CSV log, which then records its score
    elif cfg.collapse_guard and cfg.da_method != "none":
        guard = collapse_guard(n_classes)  # early stopping, where on, already restores
        callbacks.append(guard)
    history = trainer.fit(train_ds, validation_data=val_ds, epochs=cfg.epoch,
                          callbacks=callbacks, verbose=1 if cfg.verbose else 0,
                          shuffle=False)
    history = {k: [float(v) for v in vs] for k, vs in history.history.items()}
    return history, timer.times, guard


def train_adapted_fold(source: SERData, target: SERData, fold: int, train_idx, test_idx,
                       cfg: RunConfig, fold_dir: Path) -> dict:
    """Train one source fold with adaptation to `target`; evaluate on the held-out source fold
    and on the whole target corpus. scikit-learn models (da_method none) are fitted on the
    source fold alone. With --self_training R, R more fits follow, each on the source fold
    plus a growing class-balanced share of pseudo-labelled target files."""
    seed = cfg.random_seed + fold
    seed_everything(seed, deterministic=not cfg.jit)
    estimator = make_estimator(cfg, source.class_names)
    train, val, test = fold_subsets(source, train_idx, test_idx, "kfold",
                                    cfg.val_fraction if estimator.uses_validation else 0.0, seed)
    first_cfg = teacher_config(cfg)
    estimator, history, times, guard, selection = _fit_fold(first_cfg, train, val, target, seed,
                                                            fold_dir, fold)
    rounds, seconds = [], float(sum(times))
    own_selection = selection if first_cfg is cfg else None  # not a teacher's C
    round_cfg = (cfg if own_selection is None else  # later rounds keep the label-free C
                 RunConfig.from_dict({**cfg.to_dict(), "C": own_selection["selected_C"],
                                      "select_C": "fixed"}))
    for r in range(1, cfg.self_training + 1):
        share = round_share(r, cfg.self_training)
        index, labels = balanced_pseudo_labels(estimator.predict_proba(target), share)
        seed_everything(seed, deterministic=not cfg.jit)
        estimator, history, times, guard, _ = _fit_fold(
            round_cfg, with_pseudo_labelled(train, target, index, labels), val, target, seed,
            fold_dir, fold)
        seconds += float(sum(times))
        rounds.append({"round": r, "share": share, "pseudo_labelled": int(len(index))})
        log.info("fold %d: self-training round %d, %d pseudo-labelled target files", fold, r,
                 len(index))
    source_probs = estimator.predict_proba(test)
    target_probs = estimator.predict_proba(target)
    warning = collapse_warning(source_probs.argmax(axis=1), len(source.class_names), cfg)
    if warning:
        log.warning("fold %d: %s", fold, warning)
    save_fold_model(fold_dir, estimator, train, val, test)
    names = source.class_names
    result = {
        "fold": fold, "history": history, "epochs": len(times),
        "seconds": seconds, "self_training": rounds,
        "seconds_per_epoch": float(np.median(times)) if times else 0.0,
        "collapsed_epoch": getattr(guard, "collapsed_epoch", None),
        "restored_epoch": getattr(guard, "restored_epoch", None),
        "selected_epoch": getattr(guard, "selected_epoch", None),
        "C_selection": selection,
        "source": _evaluation(test, source_probs, names, compute_metrics),
        "target": _evaluation(target, target_probs, names, compute_metrics),
    }
    io.write_json(fold_dir / "result.json", result)
    return result


def linear_teacher_config(cfg: RunConfig, model: str) -> RunConfig:
    """The run's configuration for a scikit-learn teacher `model` (logreg | svm) with the
    label-free C and no domain term."""
    return RunConfig.from_dict({**cfg.to_dict(), "model": model, "da_method": "none",
                                "select_C": "label_free"})


def teacher_config(cfg: RunConfig) -> RunConfig:
    """The configuration of the fold's first fit: the run's own, or with --st_teacher
    logreg|svm that classifier with the label-free C and no domain term (its predictions give
    the first round of pseudo-labels)."""
    return cfg if cfg.st_teacher == "self" else linear_teacher_config(cfg, cfg.st_teacher)


def _fit_fold(cfg: RunConfig, train: SERData, val: SERData | None, target: SERData, seed: int,
              fold_dir: Path, fold: int):
    """One fit of a fresh estimator on `train`, adapted to `target` where the model has an
    embedding; returns (estimator, history, epoch seconds, guard or None, the --select_C
    label_free record or None)."""
    estimator = make_estimator(cfg, train.class_names)
    selection = None  # --select_C label_free: the C grid, its scores and the chosen C
    if isinstance(estimator, KerasEstimator):
        classifier = estimator.build(train, normalise=not cfg.domain_norm)
        teacher_probs = (lmmd_teacher_probs(cfg, train, target, seed, fold)
                         if cfg.lmmd_targets == "teacher" else None)
        history, times, guard = fit_adapted(classifier, train, val, target, cfg, seed, fold_dir,
                                            teacher_probs)
    elif cfg.select_C == "label_free":
        selection = estimator.fit_label_free(train, target, seed)
        (history, times), guard = ({}, []), None
        log.info("fold %d: label-free C %g (target class-mix balance %s)", fold,
                 selection["selected_C"], ", ".join(f"{b:.3f}" for b in selection["balance"]))
    else:
        (history, times), guard = estimator.fit(train, val, seed), None
    if history and not np.isfinite(history["loss"]).all():
        raise NonFiniteLoss(f"fold {fold}: loss became NaN/Inf; lower --lr or --lmmd_weight")
    return estimator, history, times, guard, selection


def lmmd_teacher_probs(cfg: RunConfig, train: SERData, target: SERData, seed: int,
                       fold: int) -> np.ndarray:
    """`--lmmd_targets teacher`: (N_target, C) probabilities of a logreg with the label-free C
    fitted on `train` (the target's labels are never read)."""
    teacher = make_estimator(linear_teacher_config(cfg, "logreg"), train.class_names)
    chosen = teacher.fit_label_free(train, target, seed)["selected_C"]
    log.info("fold %d: LMMD target weights from a logreg teacher (label-free C %g)", fold,
             chosen)
    return teacher.predict_proba(target)


def collapse_warning(source_pred: np.ndarray, n_classes: int, cfg: RunConfig) -> str | None:
    """A message when the adapted classifier predicts one class for every held-out source file
    (the adaptation term collapsed the embedding: it then reaches 0 and the source task is
    lost); None otherwise. source_pred: (n,) predicted class indices."""
    if n_classes < 2 or cfg.da_method == "none" or len(np.unique(source_pred)) > 1:
        return None
    return (f"every held-out source file is predicted as one class: the {cfg.da_method} term "
            f"has likely collapsed the embedding (see da_loss near 0 in history.csv). Lower "
            f"the adaptation weight (--lmmd_weight {cfg.lmmd_weight}) or keep early stopping "
            f"(--patience) so that an earlier epoch is restored.")


def _evaluation(data: SERData, probs: np.ndarray, names: list[str], compute_metrics) -> dict:
    y_pred = probs.argmax(axis=1)
    metrics = compute_metrics(data.labels, y_pred, names)
    metrics["confusion"] = np.asarray(metrics["confusion"]).tolist()
    return {"metrics": metrics, "y_true": data.labels.tolist(), "y_pred": y_pred.tolist(),
            "probs": probs.round(6).tolist(), "file_ids": list(data.file_ids)}


def run_adaptation(cfg: RunConfig) -> dict:
    """`--mode train-lmmd`: folds over the source corpus, every fold adapted to the target."""
    target_data = target_name(cfg)
    cfg.target_data = target_data
    names = shared_class_names(cfg, target_data)
    source = load_domain(cfg.data, cfg, names)
    target = load_domain(target_data, cfg, names)
    if cfg.model in CLASSIC_MODELS and cfg.da_method != "none":
        raise ExperimentError(f"--model {cfg.model} has no embedding to adapt: use --da_method "
                              f"none with it (a no-adaptation baseline), or --model mlp / tcn")
    check_model_input(cfg, source)
    if cfg.domain_norm:
        source, target = standardise_corpus(source), standardise_corpus(target)
    for name, data in (("source", source), ("target", target)):
        if cfg.batch_size > data.n:
            raise ExperimentError(f"--batch_size {cfg.batch_size} is larger than the {data.n} "
                                  f"{name} files of {data.dataset}")
    print(f"{cfg.data} -> {target_data} over {len(names)} shared classes: {', '.join(names)} "
          f"({source.n} source, {target.n} target files; method {cfg.da_method})")
    folds = numbered_folds(make_folds(source, "kfold", cfg.split_fold,
                                      fold_seed=cfg.fold_seed), cfg)
    run_id, model_dir, result_dir, saved = prepare_run_dir(cfg, source)
    saved.update({"target_data": target_data, "domain_norm": cfg.domain_norm})
    io.write_json(model_dir / "config.json", saved)
    results = run_folds(
        folds, model_dir,
        train=lambda fold, train_idx, test_idx, fold_dir: train_adapted_fold(
            source, target, fold, train_idx, test_idx, cfg, fold_dir),
        describe=describe_adapted_fold)
    if cfg.visualize:
        _plot_embeddings(source, target, model_dir, result_dir, run_id)
    return write_cross_corpus_reports(result_dir, run_id, saved, results, names,
                                      n_folds_total=len(folds))


# ---------------------------------------------------------------------------- testing
def cross_corpus_results(cfg: RunConfig, saved: dict, folds: list[Path]
                         ) -> tuple[list[dict], list[str], str, SERData]:
    """Per fold: the models' figures on the whole target corpus over the shared labels;
    returns (results, shared class names, target corpus name, target data)."""
    source_name = saved["dataset"]
    target_data = cfg.target_data or saved.get("target_data") or OTHER_CORPUS.get(source_name)
    if not target_data or target_data == source_name:
        raise ExperimentError("--target_data must name a corpus other than the models' "
                              f"training corpus {source_name}")
    model_names = saved["class_names"]
    probe = RunConfig.from_dict({**saved["run"], "features_root": cfg.features_root,
                                 "label_map": cfg.label_map or saved["run"].get("label_map", "")})
    target_labels = _label_names(target_data, probe)
    names = [c for c in model_names if c in target_labels]
    names = chosen_labels(cfg.label_list(), names, f"the models' classes and {target_data}")
    if len(names) < 2:
        raise ExperimentError(f"the models' classes ({', '.join(model_names)}) and {target_data} "
                              f"share {len(names)} labels; nothing to evaluate")
    target = load_data_for_models(target_data, {**saved, "class_names": names},
                                  cfg.features_root)
    if saved.get("domain_norm"):
        target = standardise_corpus(target)
    columns = [model_names.index(c) for c in names]
    results = []
    for fold_dir in folds:
        probs = load_estimator(fold_dir, model_names).predict_proba(target)[:, columns]
        probs = probs / probs.sum(axis=1, keepdims=True)
        fold = int(fold_dir.name.split("_")[1])
        results.append({"fold": fold, "target": _evaluation(target, probs, names,
                                                            compute_metrics)})
        m = results[-1]["target"]["metrics"]
        print(f"fold {fold:2d}: {target_data} UAR {100 * m['uar']:.2f}% WAR {100 * m['war']:.2f}%")
    return results, names, target_data, target


def run_cross_corpus_test(cfg: RunConfig) -> dict:
    """Evaluate saved fold models (plain or adapted) on another corpus over the shared labels."""
    saved, folds = load_saved_run(cfg.test_path)
    results, names, target_data, target = cross_corpus_results(cfg, saved, folds)
    run_id = f"{saved['run_id']}-on-{target_data}"
    saved = {**saved, "target_data": target_data}
    summary = write_cross_corpus_reports(Path(cfg.results_root) / run_id, run_id, saved,
                                         results, names)
    if cfg.visualize:
        emb = load_estimator(folds[0], saved["class_names"]).embed(target)
        plot_tsne(emb, np.array([names[i] for i in target.labels]),
                  np.array([target_data] * target.n), Path(cfg.results_root) / run_id /
                  "tsne_target.png", title=f"{run_id}: target embeddings (fold 1)")
    return summary
