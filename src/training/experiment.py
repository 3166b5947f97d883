"""Same-corpus experiments: fold splits, one fold's training, a whole resumable run.

Layout of one run (run id = `RunConfig.default_run_id()` unless `--run_id` is given):
    saved_models/<DATA>/<FEATURE>/<run-id>/config.json
    saved_models/<DATA>/<FEATURE>/<run-id>/fold_XX/{model.keras, split.json, result.json}
    results/<run-id>/{report.xlsx, predictions.csv, metrics.json, config.json, *.png}
A fold counts as finished when its result.json exists, so re-running the same command resumes
at the first unfinished fold.
"""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import resource
import shutil
import time
from pathlib import Path

import numpy as np
from sklearn.model_selection import (GroupKFold, GroupShuffleSplit, KFold,
                                     LeaveOneGroupOut, StratifiedShuffleSplit)

from src.training.config import RunConfig
from src.training.data import (SERData, load_ser_data, make_dataset, normalisation_stats,
                                stream_names)
from src.utils import io

log = logging.getLogger(__name__)

KFOLD_RANDOM_STATE = 42  # the published TIM-Net protocol


class ExperimentError(ValueError):
    """A run cannot start as configured (one clear line for the user)."""


# ---------------------------------------------------------------------------- splits
def make_folds(data: SERData, protocol: str, n_folds: int, loso_groups: int = 0):
    """List of (train_idx, test_idx).

    kfold: shuffled KFold(random_state=42). loso: one speaker per test fold, or with
    `loso_groups` > 0 speakers grouped into that many folds (GroupKFold).
    """
    index = np.arange(data.n)
    if protocol == "kfold":
        if not 2 <= n_folds <= data.n:
            raise ExperimentError(f"--split_fold {n_folds}: needs 2..{data.n} for {data.n} files")
        splitter = KFold(n_splits=n_folds, shuffle=True, random_state=KFOLD_RANDOM_STATE)
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


# ---------------------------------------------------------------------------- model bits
def model_config_from(cfg: RunConfig):
    """The preset's ModelConfig with the run's architecture flags applied."""
    import dataclasses

    from src.models.model import PRESETS

    return dataclasses.replace(
        PRESETS[cfg.preset], filter_size=cfg.filter_size, kernel_size=cfg.kernel_size,
        stack_size=cfg.stack_size, dilation_size=cfg.dilation_size, dropout=cfg.dropout,
        activation=cfg.activation, block=cfg.block, use_dtpm=cfg.use_dtpm,
        use_attention=cfg.use_attention, time_masks=cfg.time_masks, freq_masks=cfg.freq_masks,
        time_mask_width=cfg.time_mask_width, freq_mask_width=cfg.freq_mask_width,
        head_units=cfg.head_sizes())


def compile_model(model, cfg: RunConfig, steps_per_epoch: int):
    """Adam(beta1, beta2, clipnorm) with cosine decay to `min_lr`, smoothed cross-entropy."""
    import keras

    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=cfg.lr, decay_steps=max(1, cfg.epoch * steps_per_epoch),
        alpha=min(1.0, cfg.min_lr / cfg.lr))
    optimizer = keras.optimizers.Adam(learning_rate=schedule, beta_1=cfg.beta1,
                                      beta_2=cfg.beta2, clipnorm=cfg.clipnorm)
    model.compile(optimizer=optimizer,
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing),
                  metrics=["accuracy"], jit_compile=bool(cfg.jit))
    return model


@functools.lru_cache(maxsize=None)
def distribution_strategy(kind: str):
    """The process's tf.distribute strategy for `--distribute kind` (None for "none").

    Created once per process: MultiWorkerMirroredStrategy (which reads TF_CONFIG) sets up the
    cluster's collective ops and cannot do so twice. `--batch_size` stays the global batch: every
    step splits one batch over all replicas (see `distributed_dataset`), so the optimisation is
    the single-device one and `--lr` is used as given.
    """
    if kind == "none":
        return None
    import tensorflow as tf

    if kind == "mirrored":
        return tf.distribute.MirroredStrategy()
    return tf.distribute.MultiWorkerMirroredStrategy()


def distribution_scope(cfg: RunConfig):
    """Scope in which models are built and compiled: the run's strategy, or nothing."""
    strategy = distribution_strategy(cfg.distribute)
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


def is_chief(cfg: RunConfig) -> bool:
    """False on the other workers of a multi_worker run: they train in lockstep with the chief
    but write nothing. The chief is TF_CONFIG's "chief" task, else worker 0."""
    if cfg.distribute != "multi_worker":
        return True
    resolver = distribution_strategy(cfg.distribute).cluster_resolver
    if resolver is None or resolver.task_type is None:  # no TF_CONFIG: a one-worker cluster
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def chief_decides(cfg: RunConfig, flag: bool) -> bool:
    """The chief's `flag` on every worker of a multi_worker run (one all-reduce), so that all
    workers skip or train the same folds even when only the chief can see the run folder."""
    if cfg.distribute != "multi_worker":
        return flag
    import tensorflow as tf

    strategy = distribution_strategy(cfg.distribute)
    mine = tf.constant(1.0 if flag and is_chief(cfg) else 0.0)

    @tf.function
    def all_reduce():
        return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(lambda: mine),
                               axis=None)

    return bool(all_reduce().numpy() > 0)


def distributed_dataset(strategy, data: SERData, batch_size: int, seed: int | None,
                        n_classes: int, training: bool, balanced: bool = False,
                        mixup: float = 0.0):
    """Input for `fit` under `strategy`: each step is one global batch of `batch_size` files,
    drawn identically by every worker (same seed) and split into one slice per replica (each
    padded like the whole batch), so a step sees what a single-device step sees. Endless:
    train with `steps_per_epoch`."""
    def dataset_fn(context):
        local = context.num_replicas_in_sync // context.num_input_pipelines
        first = context.input_pipeline_id * local
        return make_dataset(data, batch_size, seed, n_classes, training,
                            n_slices=context.num_replicas_in_sync,
                            slices=range(first, first + local), repeat=True,
                            balanced=balanced, mixup=mixup)

    return strategy.distribute_datasets_from_function(dataset_fn)


@contextlib.contextmanager
def _keras_distribution_fixes(model, n_classes: int):
    """Work around two Keras 3 bugs with tf.distribute, for the duration of `fit`.

    1. keras-team/keras#20329: before training or evaluating, `fit` and `evaluate` pull a batch
       from the distributed input and average it over replicas to build the loss, metric and
       optimizer state; that fails for dict inputs, and the pulled iterator would cost the
       training input one draw of its batch order. That state is built here from the model's
       input specs instead, and the pull is skipped.
    2. tensorflow/tensorflow#72388: with several workers, each step's scalar logs are averaged
       with `strategy.reduce("MEAN", value, axis=0)`, which needs a batch axis; the steps return
       them with one. (Epoch logs, and so the history, are read from the metrics themselves.)
    """
    import keras
    import tensorflow as tf

    strategy = model.distribute_strategy
    y = keras.KerasTensor((None, n_classes), "float32")
    with strategy.scope():
        model._symbolic_build(data_batch=(model.input, y))
    patched = {"_maybe_symbolic_build": lambda iterator=None, data_batch=None: None}
    if (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            and strategy.extended._in_multi_worker_mode()):
        for name in ("train_step", "test_step"):
            step = getattr(model, name)
            patched[name] = lambda data, step=step: keras.tree.map_structure(
                lambda v: keras.ops.reshape(v, (1,)), step(data))
    for name, fn in patched.items():
        setattr(model, name, fn)
    try:
        yield
    finally:
        for name in patched:
            delattr(model, name)


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed Python, NumPy and TF; with `deterministic`, TF uses deterministic kernels so CPU runs
    repeat exactly. Keras refuses XLA under op determinism, so `--jit` runs without it."""
    import keras
    import tensorflow as tf
    from tensorflow.python.framework import config as tf_config

    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    else:
        tf_config.disable_op_determinism()


class NonFiniteLoss(RuntimeError):
    pass


def _stop_on_non_finite():
    import keras

    class StopOnNonFinite(keras.callbacks.Callback):
        """Stop with a clear message when the loss turns NaN/Inf (weights restored by caller)."""

        def on_epoch_end(self, epoch, logs=None):
            loss = (logs or {}).get("loss")
            # Keras clips probabilities inside the loss, so NaN activations can leave a finite
            # loss while the weights are already NaN: check both.
            bad_loss = loss is not None and not np.isfinite(loss)
            if bad_loss or not all(np.isfinite(w).all() for w in self.model.get_weights()):
                self.model.stop_training = True
                self.bad_epoch = epoch + 1

    return StopOnNonFinite()


def _epoch_timer():
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.times = []

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter() - self._start)

    return EpochTimer()


def epoch_log(fold_dir: Path | None) -> list:
    """[CSVLogger] writing each epoch's losses and metrics to fold_dir/history.csv as training
    goes (a long `--verbose 0` run can be watched with `tail -f`); [] without a fold_dir."""
    import keras

    if fold_dir is None:
        return []
    fold_dir.mkdir(parents=True, exist_ok=True)
    return [keras.callbacks.CSVLogger(str(fold_dir / "history.csv"))]


def fit_model(model, train: SERData, val: SERData | None, cfg: RunConfig, seed: int,
              fold_dir: Path | None = None):
    """Train `model` in place with early stopping (per-epoch log in fold_dir/history.csv);
    returns (history dict, epoch seconds list)."""
    import keras

    n_classes = len(train.class_names)
    strategy = distribution_strategy(cfg.distribute)
    steps, built = {}, contextlib.nullcontext()
    if strategy is None:
        train_ds = make_dataset(train, cfg.batch_size, seed, n_classes, training=True,
                                balanced=cfg.balanced_batches, mixup=cfg.mixup)
        val_ds = (make_dataset(val, cfg.batch_size, None, n_classes, training=False)
                  if val else None)
    else:
        train_ds = distributed_dataset(strategy, train, cfg.batch_size, seed, n_classes, True,
                                       balanced=cfg.balanced_batches, mixup=cfg.mixup)
        val_ds = (distributed_dataset(strategy, val, cfg.batch_size, None, n_classes, False)
                  if val else None)
        steps = {"steps_per_epoch": int(np.ceil(train.n / cfg.batch_size)),
                 "validation_steps": int(np.ceil(val.n / cfg.batch_size)) if val else None}
        built = _keras_distribution_fixes(model, n_classes)
    timer, guard = _epoch_timer(), _stop_on_non_finite()
    callbacks = [timer, guard, *epoch_log(fold_dir)]
    monitor = cfg.monitor if val is not None else cfg.monitor.replace("val_", "")
    if cfg.patience > 0:
        mode = "min" if "loss" in monitor else "max"
        callbacks.append(keras.callbacks.EarlyStopping(monitor=monitor, mode=mode,
                                                       patience=cfg.patience,
                                                       restore_best_weights=True))
    with built:
        history = model.fit(train_ds, validation_data=val_ds, epochs=cfg.epoch,
                            callbacks=callbacks, verbose=1 if cfg.verbose else 0,
                            shuffle=False, **steps)
    if getattr(guard, "bad_epoch", None):
        raise NonFiniteLoss(
            f"training loss or weights became NaN/Inf at epoch {guard.bad_epoch}; likely "
            f"causes: a learning rate too high (--lr {cfg.lr}) or non-finite input features. "
            f"The last good weights were not saved for this fold.")
    return {k: [float(x) for x in v] for k, v in history.history.items()}, timer.times


def save_model(model, path: Path) -> None:
    """Save architecture and weights atomically, without optimizer state (a third of the size:
    the saved models are for evaluation and prediction)."""
    inference = model.__class__.from_config(model.get_config())  # uncompiled copy
    inference.set_weights(model.get_weights())
    with io.atomic_path(path, suffix=".keras") as tmp:
        inference.save(tmp)


def predict_probs(model, data: SERData, batch_size: int = 64) -> np.ndarray:
    """Class probabilities (N, C) for `data` in its own row order, deterministic batching."""
    from src.training.data import LENGTH_KEY, PAD_MULTIPLE, length_sorted_batches

    out = np.zeros((data.n, model.output_shape[-1]), dtype=np.float32)
    for index in length_sorted_batches(data.lengths, batch_size, rng=None):
        t = int(np.ceil(data.lengths[index].max() / PAD_MULTIPLE) * PAD_MULTIPLE)
        inputs = {k: v[index, :t] for k, v in data.streams.items()}
        inputs[LENGTH_KEY] = data.lengths[index]
        out[index] = np.asarray(model(inputs, training=False))
    return out


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


def save_fold_model(fold_dir: Path, model, train: SERData, val: SERData | None,
                    test: SERData) -> None:
    """Write the fold's model.keras and split.json (the file ids of its three parts)."""
    fold_dir.mkdir(parents=True, exist_ok=True)
    save_model(model, fold_dir / "model.keras")
    io.write_json(fold_dir / "split.json", {"train": list(train.file_ids),
                                            "val": list(val.file_ids) if val else [],
                                            "test": list(test.file_ids)})


def train_fold(data: SERData, fold: int, train_idx, test_idx, cfg: RunConfig,
               fold_dir: Path | None) -> dict:
    """Train and evaluate one fold; writes model.keras, split.json and result.json to
    `fold_dir` (nothing when it is None: the non-chief workers of a multi_worker run)."""
    from src.models.model import build_model
    from src.utils.metrics import compute_metrics

    seed = cfg.random_seed + fold
    seed_everything(seed, deterministic=not cfg.jit)
    train, val, test = fold_subsets(data, train_idx, test_idx, cfg.protocol, cfg.val_fraction,
                                    seed, val_on_test=cfg.val_policy == "test_fold")
    steps = int(np.ceil(train.n / cfg.batch_size))
    with distribution_scope(cfg):
        model = build_model(data.input_dims, len(data.class_names), model_config_from(cfg),
                            norm_stats=normalisation_stats(train))
        compile_model(model, cfg, steps)
    start = time.perf_counter()
    history, epoch_times = fit_model(model, train, val, cfg, seed, fold_dir)
    seconds = time.perf_counter() - start
    probs = predict_probs(model, test)
    y_pred = probs.argmax(axis=1)
    metrics = compute_metrics(test.labels, y_pred, data.class_names)
    if fold_dir is not None:
        save_fold_model(fold_dir, model, train, val, test)
    monitor_values = history.get(cfg.monitor) or history.get("loss")
    best = (int(np.argmin(monitor_values) if "loss" in cfg.monitor
                else np.argmax(monitor_values)) + 1) if monitor_values else 0
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
    return run_id, model_dir, result_dir, saved


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


def describe_fold(result: dict) -> str:
    """One-line summary of a same-corpus fold result."""
    m = result["metrics"]
    return (f"WAR {100 * m['war']:.2f}% UAR {100 * m['uar']:.2f}% F1 {100 * m['macro_f1']:.2f}% "
            f"| {result['epochs']} epochs (best {result['best_epoch']}), "
            f"{result['seconds_per_epoch']:.2f} s/epoch")


def run_training(cfg: RunConfig) -> dict:
    """Train every fold (resuming finished ones) and write the report; returns the summary.

    In a multi_worker run every worker runs this; only the chief writes (others return {})."""
    from src.training.report import write_run_report

    chief = is_chief(cfg)  # multi_worker: joins the cluster before any other TF work
    data = load_ser_data(cfg.data, cfg.feature_type, cfg.features_root, cfg.fusion_streams,
                         class_names=_label_set(cfg), max_frames=cfg.max_frames,
                         feature_hashes=cfg.feature_hashes(
                             stream_names(cfg.feature_type, cfg.fusion_streams)),
                         speaker_norm=cfg.speaker_norm)
    _check_label_set(cfg, data)
    if cfg.batch_size > data.n:
        raise ExperimentError(f"--batch_size {cfg.batch_size} is larger than the "
                              f"{data.n} files of {data.dataset}")
    folds = numbered_folds(make_folds(data, cfg.protocol, cfg.split_fold, cfg.loso_groups), cfg)
    run_id, model_dir, result_dir, saved = prepare_run_dir(cfg, data, write=chief)
    log.info("run %s: %d files, %d classes, %d folds -> %s", run_id, data.n,
             len(data.class_names), len(folds), model_dir)
    results = run_folds(
        folds, model_dir,
        train=lambda fold, train_idx, test_idx, fold_dir: train_fold(
            data, fold, train_idx, test_idx, cfg, fold_dir if chief else None),
        describe=describe_fold,
        agree=lambda flag: chief_decides(cfg, flag), chief=chief)
    if not chief:
        return {}
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return write_run_report(result_dir, run_id, saved, results, data.class_names,
                            peak_memory_mb=peak_mb, visualize=cfg.visualize)


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
    from src.data_processing.store import read_metadata

    stream, config_hash = next(iter(data.feature_hashes.items()))
    try:
        metadata = read_metadata(Path(cfg.features_root) / data.dataset / stream / config_hash)
    except (OSError, KeyError, ValueError):
        return []
    return sorted(set(metadata["label"].astype(str)))
