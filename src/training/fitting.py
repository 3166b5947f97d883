"""Fitting a Keras model: compile (Adam, cosine decay or constant), tf.distribute set-up and its Keras
work-arounds, callbacks (epoch timer, NaN stop, per-epoch CSV log, early stopping), `fit`,
saving, and batched prediction. Used by every Keras model family (tcn, fused, mlp) through
`src.training.estimators`, and by the adaptation trainer.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
from pathlib import Path

import numpy as np

from src.training.config import RunConfig
from src.training.data import (LENGTH_INPUT, PAD_MULTIPLE, SERData, length_sorted_batches,
                               make_dataset)
from src.training.callbacks import epoch_log, epoch_timer, stop_on_non_finite
from src.utils import io


def model_config_from(cfg: RunConfig):
    """The preset's ModelConfig with the run's architecture flags applied."""
    from src.models.model import PRESETS  # heavy: tensorflow

    return dataclasses.replace(
        PRESETS[cfg.preset], filter_size=cfg.filter_size, kernel_size=cfg.kernel_size,
        stack_size=cfg.stack_size, dilation_size=cfg.dilation_size, dropout=cfg.dropout,
        activation=cfg.activation, block=cfg.block, level_weights=cfg.level_weights,
        use_dtpm=cfg.use_dtpm,
        use_attention=cfg.use_attention, time_masks=cfg.time_masks, freq_masks=cfg.freq_masks,
        time_mask_width=cfg.time_mask_width, freq_mask_width=cfg.freq_mask_width,
        head_units=cfg.head_sizes())


def learning_rate(cfg: RunConfig, steps_per_epoch: int):
    """--lr_schedule: cosine decay from --lr to min_lr over the run's steps, or --lr constant."""
    import keras  # heavy: keras

    if cfg.lr_schedule == "constant":
        return cfg.lr
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=cfg.lr, decay_steps=max(1, cfg.epoch * steps_per_epoch),
        alpha=min(1.0, cfg.min_lr / cfg.lr))


def make_optimizer(cfg: RunConfig, steps_per_epoch: int):
    """Adam(lr schedule, beta1, beta2), gradients clipped to --clipnorm (0 = not clipped),
    decoupled --weight_decay (0 = none: plain Adam); with --weight_ema DECAY it keeps
    avg = DECAY * avg + (1 - DECAY) * w after every step (avg = w after the first), and Keras's
    `fit` ends by writing avg into the trainable weights (BatchNorm statistics stay those of the
    last steps)."""
    import keras  # heavy: keras

    return keras.optimizers.Adam(learning_rate=learning_rate(cfg, steps_per_epoch),
                                 beta_1=cfg.beta1, beta_2=cfg.beta2,
                                 clipnorm=cfg.clipnorm or None,
                                 weight_decay=cfg.weight_decay or None,
                                 use_ema=cfg.weight_ema > 0,
                                 ema_momentum=cfg.weight_ema or 0.99)


def compile_model(model, cfg: RunConfig, steps_per_epoch: int):
    """`make_optimizer`'s Adam, smoothed cross-entropy, accuracy."""
    import keras  # heavy: keras

    optimizer = make_optimizer(cfg, steps_per_epoch)
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
    import tensorflow as tf  # heavy: tensorflow

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
    import tensorflow as tf  # heavy: tensorflow

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
    import keras  # heavy: keras
    import tensorflow as tf  # heavy: tensorflow

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
    import keras  # heavy: keras
    import tensorflow as tf  # heavy: tensorflow
    from tensorflow.python.framework import config as tf_config  # heavy: tensorflow

    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    else:
        tf_config.disable_op_determinism()


class NonFiniteLoss(RuntimeError):
    pass


def fit_model(model, train: SERData, val: SERData | None, cfg: RunConfig, seed: int,
              fold_dir: Path | None = None):
    """Train `model` in place with early stopping (per-epoch log in fold_dir/history.csv);
    returns (history dict, epoch seconds list)."""
    import keras  # heavy: keras

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
    timer, guard = epoch_timer(), stop_on_non_finite()
    callbacks = [timer, guard, *epoch_log(fold_dir, cfg.tensorboard)]
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
    """Class probabilities (N, C) for `data` in its own row order, deterministic batching
    (any output of `model`: (N, E) embeddings too)."""
    out = np.zeros((data.n, model.output_shape[-1]), dtype=np.float32)
    for index in length_sorted_batches(data.lengths, batch_size, rng=None):
        t = int(np.ceil(data.lengths[index].max() / PAD_MULTIPLE) * PAD_MULTIPLE)
        inputs = {k: v[index, :t] for k, v in data.streams.items()}
        inputs[LENGTH_INPUT] = data.lengths[index]
        out[index] = np.asarray(model(inputs, training=False))
    return out
