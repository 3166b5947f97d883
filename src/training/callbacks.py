"""Keras callbacks of the fitting loops: epoch timer, NaN/Inf stop, per-epoch CSV and
TensorBoard logs, the collapse guard of fixed-schedule adaptation, and the label-free epoch
selector (with its score)."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from src.training.data import SERData

log = logging.getLogger(__name__)


def stop_on_non_finite():
    import keras  # heavy: keras

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


def epoch_timer():
    import keras  # heavy: keras

    class EpochTimer(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.times = []

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter() - self._start)

    return EpochTimer()


def epoch_log(fold_dir: Path | None, tensorboard: bool = False) -> list:
    """[CSVLogger] writing each epoch's losses and metrics to fold_dir/history.csv as training
    goes (a long `--verbose 0` run can be watched with `tail -f`), plus with `tensorboard` a
    Keras TensorBoard callback logging to fold_dir/tensorboard (losses, domain loss, lambda,
    learning rate); [] without a fold_dir."""
    import keras  # heavy: keras

    if fold_dir is None:
        return []
    fold_dir.mkdir(parents=True, exist_ok=True)
    callbacks = [keras.callbacks.CSVLogger(str(fold_dir / "history.csv"))]
    if tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(fold_dir / "tensorboard"),
                                                     write_graph=False))
    return callbacks


def collapse_guard(n_classes: int, drop: float = 0.6, healthy: float = 0.9):
    """Callback for fixed-schedule adaptation (`--patience 0`): when the source task collapses,
    restore the last healthy epoch's weights and stop.

    A strong domain term can pull every embedding to one point: the term then reaches 0 and the
    classifier predicts one class (seen with --lmmd_weight 1.0, E->R, around epoch 17-22 of 60).
    An epoch is healthy while its source training accuracy is at least `healthy` x the best so
    far; a collapse is an epoch below `drop` x the best once the best is clearly above chance
    (1.5 / n_classes). Sets `collapsed_epoch` and `restored_epoch` (1-based) when it fires."""
    import keras  # heavy: keras

    class CollapseGuard(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.best, self.weights, self.healthy_epoch = 0.0, None, None
            self.collapsed_epoch = self.restored_epoch = None

        def on_epoch_end(self, epoch, logs=None):
            accuracy = float((logs or {}).get("accuracy", 0.0))
            self.best = max(self.best, accuracy)
            if accuracy >= healthy * self.best:
                self.weights, self.healthy_epoch = self.model.get_weights(), epoch + 1
            elif self.best > 1.5 / n_classes and accuracy < drop * self.best:
                self.collapsed_epoch, self.restored_epoch = epoch + 1, self.healthy_epoch
                self.model.set_weights(self.weights)
                self.model.stop_training = True
                log.warning("source training accuracy fell from %.2f to %.2f at epoch %d: the "
                            "domain term collapsed the embedding; stopped and restored epoch %d",
                            self.best, accuracy, epoch + 1, self.restored_epoch)

    return CollapseGuard()


def normalised_entropy(distribution: np.ndarray) -> float:
    """H(p) / log C of a distribution p (C,) that sums to 1 (zero entries contribute 0): 1 when
    uniform, 0 when all mass is on one class."""
    p = np.asarray(distribution, dtype=np.float64)
    nonzero = p[p > 0]
    return float(-(nonzero * np.log(nonzero)).sum() / np.log(len(p)))


def label_free_score(source_accuracy: float, target_probs: np.ndarray) -> float:
    """Model-selection score that reads no target label: source (validation) accuracy times
    the normalised entropy of the mean target prediction, H(mean_i p_i) / log C (1 when the
    target's predicted class mix is uniform, 0 when every target file gets one class). An
    embedding collapsed by the domain term, or a classifier that maps the whole target corpus
    to one or two classes, scores low even while its source accuracy is high."""
    mean = np.clip(np.asarray(target_probs, dtype=np.float64).mean(axis=0), 1e-12, 1.0)
    return float(source_accuracy) * normalised_entropy(mean)


def predicted_mix_balance(target_probs: np.ndarray) -> float:
    """Normalised entropy of the target's predicted-class mix (arg-max counts), in [0, 1]: 1
    when every class is predicted equally often, 0 when one class takes every file. Reads no
    label; assumes a roughly balanced target corpus (true of EMODB and RAVDESS: 0.98 / 0.99
    over the five shared classes)."""
    probs = np.asarray(target_probs)
    counts = np.bincount(probs.argmax(axis=1), minlength=probs.shape[1])
    return normalised_entropy(counts / len(probs))


def epoch_selector(classifier, target: SERData, predict_probs):
    """Callback for `--select_epoch label_free`: after every epoch, score the classifier with
    `label_free_score` (source validation accuracy, or training accuracy without a validation
    split, and the target predictions `predict_probs(classifier, target)` -> (N, C)); at the
    end of training restore the best-scoring epoch. Records `scores` and `selected_epoch`
    (1-based)."""
    import keras  # heavy: keras

    class LabelFreeSelection(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.scores, self.best, self.weights, self.selected_epoch = [], -1.0, None, None

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            accuracy = logs.get("val_accuracy", logs.get("accuracy", 0.0))
            score = label_free_score(accuracy, predict_probs(classifier, target))
            self.scores.append(score)
            logs["label_free_score"] = score
            if score > self.best:
                self.best, self.selected_epoch = score, epoch + 1
                self.weights = self.model.get_weights()

        def on_train_end(self, logs=None):
            if self.weights is not None:
                self.model.set_weights(self.weights)

    return LabelFreeSelection()
