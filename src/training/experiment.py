"""Same-corpus experiments: fold splits, one fold's training, a whole resumable run.

Layout of one run (run id = `RunConfig.default_run_id()` unless `--run_id` is given):
    saved_models/<DATA>/<FEATURE>/<run-id>/config.json
    saved_models/<DATA>/<FEATURE>/<run-id>/fold_XX/{model.keras, split.json, result.json}
    results/<run-id>/{report.xlsx, predictions.csv, metrics.json, config.json, *.png}
A fold counts as finished when its result.json exists, so re-running the same command resumes
at the first unfinished fold.
"""
from __future__ import annotations

import json
import logging
import resource
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import yaml
from sklearn.model_selection import (GroupKFold, GroupShuffleSplit, KFold,
                                     LeaveOneGroupOut, StratifiedShuffleSplit)

from src.data_processing.store import read_metadata
from src.training.config import RunConfig
from src.training.data import (SERData, load_ser_data, speaker_groups, standardise_groups,
                                stream_names)
from src.training.fitting import (NonFiniteLoss, chief_decides, compile_model,  # noqa: F401
                                  distribution_scope, distribution_strategy, fit_model,
                                  is_chief, model_config_from, predict_probs, save_model,
                                  seed_everything)
from src.training.estimators import KerasEstimator, check_model_input, make_estimator
from src.training.flags import nested
from src.training.vtlp_copies import vtlp_copies, with_copies
from src.utils import io
from src.utils.metrics import compute_metrics

log = logging.getLogger(__name__)



class ExperimentError(ValueError):
    """A run cannot start as configured (one clear line for the user)."""


# ---------------------------------------------------------------------------- splits
def make_folds(data: SERData, protocol: str, n_folds: int, loso_groups: int = 0,
               fold_seed: int = 42):
    """List of (train_idx, test_idx).

    kfold: shuffled KFold(random_state=fold_seed) over the corpus's file order. loso: one
    speaker per test fold, or with `loso_groups` > 0 speakers grouped into that many folds
    (GroupKFold).
    """
    index = np.arange(data.n)
    if protocol == "kfold":
        if not 2 <= n_folds <= data.n:
            raise ExperimentError(f"--split_fold {n_folds}: needs 2..{data.n} for {data.n} files")
        splitter = KFold(n_splits=n_folds, shuffle=True, random_state=fold_seed)
        return list(splitter.split(index))
    if protocol == "loso":
        speakers = data.speakers
        n_speakers = len(set(speakers))
        if n_speakers < 2:
            raise ExperimentError(f"--protocol loso needs at least 2 speakers; {data.dataset} "
                                  f"has {n_speakers}")
        if loso_groups:
            if not 2 <= loso_groups <= n_speakers:
                raise ExperimentError(f"--loso_groups {loso_groups}: needs 2..{n_speakers}")
            return list(GroupKFold(n_splits=loso_groups).split(index, groups=speakers))
        return list(LeaveOneGroupOut().split(index, groups=speakers))
    raise ExperimentError(f"--protocol {protocol!r}: use kfold or loso")


def validation_split(data: SERData, train_idx: np.ndarray, protocol: str, fraction: float,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Carve a validation set out of the training folds (stratified; by speaker for loso).

    fraction 0: no validation set (fixed-length schedules, every training file is trained on)."""
    if fraction == 0:
        return train_idx, train_idx[:0]
    labels = data.labels[train_idx]
    if protocol == "loso":
        groups = data.speakers[train_idx]
        n_groups = len(set(groups))
        if n_groups >= 2:
            n_val = max(1, int(round(fraction * n_groups)))
            splitter = GroupShuffleSplit(n_splits=1, test_size=n_val, random_state=seed)
            fit, val = next(splitter.split(train_idx, groups=groups))
            return train_idx[fit], train_idx[val]
    n_val = max(len(set(labels)), int(round(fraction * len(train_idx))))
    try:
        splitter = StratifiedShuffleSplit(n_splits=1, test_size=n_val, random_state=seed)
        fit, val = next(splitter.split(train_idx, labels))
    except ValueError:  # a class with a single member cannot be stratified
        rng = np.random.default_rng(seed)
        perm = rng.permutation(len(train_idx))
        fit, val = perm[n_val:], perm[:n_val]
    return train_idx[fit], train_idx[val]


# ---------------------------------------------------------------------------- one run
def run_paths(cfg: RunConfig) -> tuple[str, Path, Path]:
    run_id = cfg.run_id or cfg.default_run_id()
    model_dir = Path(cfg.models_root) / cfg.data / cfg.feature_type / run_id
    result_dir = Path(cfg.results_root) / run_id
    return run_id, model_dir, result_dir


def fold_subsets(data: SERData, train_idx, test_idx, protocol: str, val_fraction: float,
                 seed: int, val_on_test: bool = False
                 ) -> tuple[SERData, SERData | None, SERData]:
    """(train, val or None, test) of one fold: the validation files come out of the training
    folds (`validation_split`), or are the test fold itself with `val_on_test` (the published,
    optimistic protocol)."""
    if val_on_test:
        fit_idx, val_idx = np.asarray(train_idx), np.asarray(test_idx)
    else:
        fit_idx, val_idx = validation_split(data, np.asarray(train_idx), protocol, val_fraction,
                                            seed)
    val = data.subset(val_idx) if len(val_idx) else None
    return data.subset(fit_idx), val, data.subset(test_idx)


def save_fold_model(fold_dir: Path, estimator, train: SERData, val: SERData | None,
                    test: SERData) -> None:
    """Write the fold's model file (model.keras / model.skops) and split.json (the file ids of
    its three parts)."""
    fold_dir.mkdir(parents=True, exist_ok=True)
    estimator.save(fold_dir)
    io.write_json(fold_dir / "split.json", {"train": list(train.file_ids),
                                            "val": list(val.file_ids) if val else [],
                                            "test": list(test.file_ids)})


def load_fold_weights(estimator, run_dir: Path, fold: int, train: SERData,
                      test: SERData) -> None:
    """`--init_from RUN_DIR`: set the built model's weights to those of RUN_DIR/fold_NN, after
    checking that that model was trained on this fold's training files and never saw its test
    files (its split.json). ExperimentError naming the folder otherwise."""
    fold_dir = run_dir / f"fold_{fold:02d}"
    if not (fold_dir / "model.keras").is_file() or not (fold_dir / "split.json").is_file():
        raise ExperimentError(f"--init_from {run_dir}: no model.keras and split.json in "
                              f"{fold_dir.name} (a finished run's folder, e.g. "
                              f"saved_models/<DATA>/<FEATURE>/<run-id>)")
    split = json.loads((fold_dir / "split.json").read_text())
    if set(split["test"]) != set(test.file_ids):
        raise ExperimentError(f"--init_from {run_dir}: {fold_dir.name} was tested on other "
                              f"files; use a run of the same corpus, protocol and folds")
    if not set(split["train"]) <= set(train.file_ids):
        raise ExperimentError(f"--init_from {run_dir}: {fold_dir.name} was trained on files "
                              f"this fold holds out for validation; use the same --val_policy "
                              f"and --val_fraction")
    try:
        with warnings.catch_warnings():  # the optimizer starts afresh: its state is not loaded
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            estimator.model.load_weights(fold_dir / "model.keras")
    except ValueError as err:
        raise ExperimentError(f"--init_from {fold_dir / 'model.keras'}: its model differs from "
                              f"this run's ({str(err).splitlines()[0]})") from err
    log.info("fold %d: weights from %s", fold, fold_dir / "model.keras")


def train_fold(data: SERData, fold: int, train_idx, test_idx, cfg: RunConfig,
               fold_dir: Path | None, copies: list[SERData] = ()) -> dict:
    """Train and evaluate one fold; writes the model, split.json and result.json to
    `fold_dir` (nothing when it is None: the non-chief workers of a multi_worker run).
    copies: warped copies of `data` (`--vtlp`) whose rows join the training part."""
    seed = cfg.random_seed + fold
    seed_everything(seed, deterministic=not cfg.jit)
    estimator = make_estimator(cfg, data.class_names)
    train, val, test = fold_subsets(data, train_idx, test_idx, cfg.protocol,
                                    cfg.val_fraction if estimator.uses_validation else 0.0,
                                    seed, val_on_test=cfg.val_policy == "test_fold"
                                    and estimator.uses_validation)
    train = with_copies(train, data, list(copies))
    if isinstance(estimator, KerasEstimator):
        with distribution_scope(cfg):
            estimator.build(train)
            compile_model(estimator.model, cfg, int(np.ceil(train.n / cfg.batch_size)))
    if cfg.init_from:
        load_fold_weights(estimator, Path(cfg.init_from), fold, train, test)
    start = time.perf_counter()
    history, epoch_times = estimator.fit(train, val, seed, fold_dir)
    seconds = time.perf_counter() - start
    probs = estimator.predict_proba(test)
    y_pred = probs.argmax(axis=1)
    metrics = compute_metrics(test.labels, y_pred, data.class_names)
    if fold_dir is not None:
        save_fold_model(fold_dir, estimator, train, val, test)
    best = kept_epoch(history, cfg, len(epoch_times))
    result = {"fold": fold, "metrics": _jsonable_metrics(metrics),
              "y_true": test.labels.tolist(), "y_pred": y_pred.tolist(),
              "probs": probs.round(6).tolist(), "file_ids": list(test.file_ids),
              "history": history, "epochs": len(epoch_times), "best_epoch": best,
              "seconds": seconds,
              "seconds_per_epoch": float(np.median(epoch_times)) if epoch_times else 0.0,
              "n_train": train.n, "n_val": val.n if val else 0, "n_test": test.n}
    if fold_dir is not None:  # written last: marks the fold finished
        io.write_json(fold_dir / "result.json", result)
    return result


def _jsonable_metrics(metrics: dict) -> dict:
    out = dict(metrics)
    out["confusion"] = np.asarray(metrics["confusion"]).tolist()
    return out


def prepare_run_dir(cfg: RunConfig, data: SERData,
                    write: bool = True) -> tuple[str, Path, Path, dict]:
    """Create (or reopen for resumption) the run folders; returns (run_id, model_dir,
    result_dir, saved config dict). With `write` False, only checks and touches nothing."""
    run_id, model_dir, result_dir = run_paths(cfg)
    if cfg.overwrite and write:
        shutil.rmtree(model_dir, ignore_errors=True)
        shutil.rmtree(result_dir, ignore_errors=True)
    saved = {"run_id": run_id, "run": cfg.to_dict(), "class_names": data.class_names,
             "input_dims": data.input_dims, "extraction": data.extraction,
             "feature_hashes": data.feature_hashes, "dataset": data.dataset,
             "model": model_config_from(cfg).to_dict()}
    config_path = model_dir / "config.json"
    if config_path.exists() and not cfg.overwrite:  # (another worker may be deleting it)
        previous = json.loads(config_path.read_text())
        if previous.get("feature_hashes") != data.feature_hashes:
            raise ExperimentError(
                f"{model_dir} was trained on feature sets {previous.get('feature_hashes')} but "
                f"the current ones are {data.feature_hashes}; pass --overwrite or --run_id NEW")
    if write:
        io.write_json(config_path, saved)
        write_run_yaml(model_dir / "run.yaml", cfg)
    return run_id, model_dir, result_dir, saved


def write_run_yaml(path: Path, cfg: RunConfig) -> None:
    """The run's resolved flags as YAML grouped by the field groups (src.training.flags),
    reusable as `--config FILE` (paths and bookkeeping flags that do not change the models are
    left out)."""
    values = {k: v for k, v in cfg.to_dict().items()
              if k not in ("config", "run_id", "overwrite", "folds", "test_path", "audio",
                           "output")}
    io.write_text(path, "# python -m src.training.main --config run.yaml\n"
                  + yaml.safe_dump(nested(values), sort_keys=False))


def numbered_folds(folds: list, cfg: RunConfig) -> list[tuple[int, tuple, bool]]:
    """(fold number from 1, (train_idx, test_idx), whether this process may train it) of the
    run's folds: the first --max_folds of them; --folds marks which may be trained (the others
    are only read back when finished). Raises ExperimentError on a fold the run lacks."""
    if cfg.max_folds:
        folds = folds[:cfg.max_folds]
    wanted = cfg.fold_numbers()
    if wanted and wanted[-1] > len(folds):
        raise ExperimentError(f"--folds {cfg.folds}: this run has folds 1-{len(folds)}")
    return [(k, split, not wanted or k in wanted) for k, split in enumerate(folds, start=1)]


def finished_fold_results(results: dict[int, dict], fold_numbers, model_dir: Path) -> list[dict]:
    """Results of the run's folds in fold order: those in `results` (trained or read by this
    process) plus any fold another process (--folds) has finished meanwhile, from its
    result.json; folds not finished yet are left out."""
    collected = []
    for fold in fold_numbers:
        path = model_dir / f"fold_{fold:02d}" / "result.json"
        if fold in results:
            collected.append(results[fold])
        elif path.exists():
            collected.append(json.loads(path.read_text()))
    return collected


def run_folds(folds: list, model_dir: Path, train, describe, agree=lambda flag: flag,
              chief: bool = True) -> list[dict]:
    """Train each of `folds` (from `numbered_folds`) that is this process's and not finished,
    read back the finished ones, print one line per fold, and return every finished fold's
    result in fold order (another process's included; [] on a non-chief worker).

    train(fold, train_idx, test_idx, fold_dir) -> result dict; describe(result) -> str.
    agree(flag) -> flag: in a multi_worker run a collective that every worker calls so that
    all agree whether a fold is finished."""
    results = {}
    for fold, (train_idx, test_idx), mine in folds:
        fold_dir = model_dir / f"fold_{fold:02d}"
        done = fold_dir / "result.json"
        finished = agree(done.exists())
        if not mine and not finished:  # another process's fold: collected at the end if done
            continue
        if finished:
            if not chief:
                continue
            result = json.loads(done.read_text())
            print(f"fold {fold:2d}/{len(folds)}: already finished ({describe(result)}), skipped")
        else:
            result = train(fold, train_idx, test_idx, fold_dir)
            print(f"fold {fold:2d}/{len(folds)}: {describe(result)}")
        results[fold] = result
    if not chief:
        return []
    return finished_fold_results(results, [fold for fold, _, _ in folds], model_dir)


def kept_epoch(history: dict, cfg: RunConfig, n_epochs: int) -> int:
    """The epoch (1-based) whose weights the fold keeps: the last one on a fixed schedule
    (--patience 0), else the best --monitor value (early stopping restores it); 0 without
    epochs (scikit-learn models)."""
    monitor_values = history.get(cfg.monitor) or history.get("loss")
    if not n_epochs or not monitor_values:
        return 0
    if cfg.patience == 0:
        return n_epochs
    pick = np.argmin if "loss" in cfg.monitor else np.argmax
    return int(pick(monitor_values)) + 1


def describe_fold(result: dict) -> str:
    """One-line summary of a same-corpus fold result."""
    m = result["metrics"]
    return (f"WAR {100 * m['war']:.2f}% UAR {100 * m['uar']:.2f}% F1 {100 * m['macro_f1']:.2f}% "
            f"| {result['epochs']} epochs (best {result['best_epoch']}), "
            f"{result['seconds_per_epoch']:.2f} s/epoch")


def run_training(cfg: RunConfig) -> dict:
    """Train every fold (resuming finished ones) and write the report; returns the summary.

    In a multi_worker run every worker runs this; only the chief writes (others return {})."""
    from src.training.report import write_run_report  # heavy: matplotlib

    chief = is_chief(cfg)  # multi_worker: joins the cluster before any other TF work
    raw = load_ser_data(cfg.data, cfg.feature_type, cfg.features_root, cfg.fusion_streams,
                        class_names=_label_set(cfg), max_frames=cfg.max_frames,
                        feature_hashes=cfg.feature_hashes(
                            stream_names(cfg.feature_type, cfg.fusion_streams)))
    data = standardise_groups(raw, speaker_groups(raw)) if cfg.speaker_norm else raw
    _check_label_set(cfg, data)
    check_model_input(cfg, data)
    copies = _vtlp_copies(cfg, raw)
    if cfg.batch_size > data.n:
        raise ExperimentError(f"--batch_size {cfg.batch_size} is larger than the "
                              f"{data.n} files of {data.dataset}")
    folds = numbered_folds(make_folds(data, cfg.protocol, cfg.split_fold, cfg.loso_groups,
                                        cfg.fold_seed), cfg)
    run_id, model_dir, result_dir, saved = prepare_run_dir(cfg, data, write=chief)
    log.info("run %s: %d files, %d classes, %d folds -> %s", run_id, data.n,
             len(data.class_names), len(folds), model_dir)
    results = run_folds(
        folds, model_dir,
        train=lambda fold, train_idx, test_idx, fold_dir: train_fold(
            data, fold, train_idx, test_idx, cfg, fold_dir if chief else None, copies),
        describe=describe_fold,
        agree=lambda flag: chief_decides(cfg, flag), chief=chief)
    if not chief:
        return {}
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return write_run_report(result_dir, run_id, saved, results, data.class_names,
                            peak_memory_mb=peak_mb, visualize=cfg.visualize,
                            n_folds_total=len(folds))


def _vtlp_copies(cfg: RunConfig, raw: SERData) -> list[SERData]:
    """`--vtlp`: one warped copy of the corpus per factor, made from its unstandardised frames
    `raw`; [] without the flag."""
    factors = cfg.vtlp_factors()
    if not factors:
        return []
    log.info("--vtlp: the training files of every fold again warped by %s",
             ", ".join(f"{f:g}" for f in factors))
    return vtlp_copies(raw, factors, cfg.speaker_norm)


def _label_set(cfg: RunConfig) -> list[str] | None:
    return cfg.label_list() or None


def _check_label_set(cfg: RunConfig, data: SERData) -> None:
    """Every --label_set class must have files in the corpus (ExperimentError naming it)."""
    if not cfg.label_set:
        return
    present = set(data.metadata["label"].astype(str))
    missing = [c for c in data.class_names if c not in present]
    if missing:
        raise ExperimentError(f"--label_set: {', '.join(missing)} not in {data.dataset} "
                              f"(its classes: {', '.join(_corpus_labels(cfg, data)) or '?'})")


def _corpus_labels(cfg: RunConfig, data: SERData) -> list[str]:
    """Every label of the corpus's feature set (from its metadata.csv; [] when unreadable)."""
    stream, config_hash = next(iter(data.feature_hashes.items()))
    try:
        metadata = read_metadata(Path(cfg.features_root) / data.dataset / stream / config_hash)
    except (OSError, KeyError, ValueError):
        return []
    return sorted(set(metadata["label"].astype(str)))
