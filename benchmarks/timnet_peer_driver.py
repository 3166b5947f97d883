"""Train TIM-Net's own model (Jiaxin-Ye/TIM-Net_SER) on exported features; run INSIDE the peer venv.

    $TIMNET_PYTHON benchmarks/timnet_peer_driver.py --timnet_home DIR --data DIR
        --folds 1,2,3 --epochs 500 --threads 1 --output peer.json
    $TIMNET_PYTHON benchmarks/timnet_peer_driver.py --timnet_home DIR --data DIR --check_folds
        --output folds.json

Started by `benchmarks.bench_timnet_peer` (which says how to set up the peer); it imports nothing
from this repository. --data holds x.npy (N, T, 39) raw MFCCs, y.npy (N,) class indices or (N, C)
one-hot and meta.json ({"class_names": [...]}).

The model is TIM-Net's: `Model.TIMNET_Model(args, input_shape, class_label).create_model()` is
imported from <timnet_home>/Code and builds and compiles it (TIMNET + WeightLayer + softmax,
Adam(lr, beta1, beta2, epsilon 1e-8), categorical cross-entropy). Its hyper-parameters are the
argparse defaults of TIM-Net's Code/main.py, read from that file's source (ast, nothing run):
39 filters, kernel 2, 1 stack, dilation 8, dropout 0.1, relu, lr 1e-3, beta1 0.93, beta2 0.98,
batch 64; only --epochs replaces its 500. Training labels are smoothed with TIM-Net's own
`smooth_labels(y, 0.1)`, as its `train()` does.

Folds: `KFold(n_splits=split_fold, shuffle=True, random_state=random_seed)` over the rows in
file order (TIM-Net's split; 10 and 46 from main.py). TIM-Net's `train()` validates on the test
fold every epoch and reloads a checkpoint; here `model.fit` is called directly with no
validation data, the LAST epoch's weights are evaluated once on the test fold.

Per fold it records accuracy (WAR), UAR (sklearn balanced_accuracy), macro-F1 (all classes,
zero_division=0), every epoch's seconds, the mean over epochs 2..N, the median over all epochs,
the process's peak RSS so far (getrusage, MB), and the test indices (checked by the caller).
--check_folds writes only the test indices of every fold (imports no TensorFlow).
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--timnet_home", required=True, help="TIM-Net_SER work tree (holds Code/)")
    p.add_argument("--data", required=True, help="folder with x.npy, y.npy, meta.json")
    p.add_argument("--folds", default="1", help="fold numbers from 1, comma separated")
    p.add_argument("--epochs", type=int, default=0, help="0 = TIM-Net's default (500)")
    p.add_argument("--threads", type=int, default=0, help="TensorFlow threads (0 = all)")
    p.add_argument("--check_folds", action="store_true",
                   help="only write the test indices of every fold")
    p.add_argument("--output", required=True, help="JSON file to write")
    return p.parse_args(argv)


def main_py_defaults(main_py: Path) -> dict:
    """{flag: default} of every `parser.add_argument('--flag', ..., default=CONST)` in
    TIM-Net's main.py, read with ast (the script itself is not run)."""
    defaults = {}
    for node in ast.walk(ast.parse(main_py.read_text())):
        if (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument"
                and node.args and isinstance(node.args[0], ast.Constant)):
            for keyword in node.keywords:
                if keyword.arg == "default" and isinstance(keyword.value, ast.Constant):
                    defaults[node.args[0].value.lstrip("-")] = keyword.value.value
    return defaults


def timnet_args(timnet_home: Path, epochs: int, corpus: str) -> SimpleNamespace:
    """The `args` TIM-Net's main.py would pass to TIMNET_Model, with --epochs applied."""
    values = main_py_defaults(timnet_home / "Code" / "main.py")
    if epochs:
        values["epoch"] = epochs
    values["data"] = corpus
    return SimpleNamespace(**values)


def load_data(folder: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(x (N,T,D) float32, y (N,C) one-hot float32, class names) from the exported folder."""
    x = np.load(folder / "x.npy").astype(np.float32)
    y = np.load(folder / "y.npy")
    class_names = json.loads((folder / "meta.json").read_text())["class_names"]
    if y.ndim == 1:
        y = np.eye(len(class_names), dtype=np.float32)[y.astype(int)]
    return x, y.astype(np.float32), class_names


def timnet_folds(n: int, args: SimpleNamespace) -> list[tuple[np.ndarray, np.ndarray]]:
    """TIM-Net's split: KFold(split_fold, shuffle, random_state=random_seed) over range(n)."""
    from sklearn.model_selection import KFold

    splitter = KFold(n_splits=args.split_fold, shuffle=True, random_state=args.random_seed)
    return list(splitter.split(np.arange(n)))


def import_timnet(timnet_home: Path):
    """TIM-Net's Model module (TIMNET_Model, smooth_labels), imported from Code/."""
    sys.path.insert(0, str(timnet_home / "Code"))
    import Model  # noqa: E402  (TIM-Net's file)

    return Model


def scores(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict:
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

    return {"accuracy": float(accuracy_score(y_true, y_pred)),
            "uar": float(balanced_accuracy_score(y_true, y_pred)),
            "macro_f1": float(f1_score(y_true, y_pred, labels=list(range(n_classes)),
                                       average="macro", zero_division=0))}


def epoch_timer(keras):
    class EpochTimer(keras.callbacks.Callback):
        """Wall seconds of every epoch."""

        def on_train_begin(self, logs=None):
            self.times = []

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter() - self._start)

    return EpochTimer()


def train_fold(Model, args, x, y, class_names, fold: int, split) -> dict:
    """Build TIM-Net's model, fit on the training rows (smoothed labels, no validation data),
    evaluate the last epoch's weights on the test rows."""
    import tensorflow as tf

    train, test = split
    tf.keras.backend.clear_session()
    tf.keras.utils.set_random_seed(args.random_seed + fold)
    timnet = Model.TIMNET_Model(args=args, input_shape=x.shape[1:], class_label=class_names)
    timnet.create_model()
    timer = epoch_timer(tf.keras)
    y_train = Model.smooth_labels(y[train].copy(), 0.1)
    timnet.model.fit(x[train], y_train, batch_size=args.batch_size, epochs=args.epoch,
                     verbose=0, callbacks=[timer])
    y_pred = timnet.model.predict(x[test], batch_size=args.batch_size, verbose=0).argmax(axis=1)
    times = timer.times
    return {"fold": fold, **scores(y[test].argmax(axis=1), y_pred, len(class_names)),
            "epochs": len(times), "epoch_seconds": times,
            "seconds_per_epoch": float(np.mean(times[1:] or times)),
            "seconds_per_epoch_median": float(np.median(times)),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "params": int(timnet.model.count_params()),
            "n_train": int(len(train)), "n_test": int(len(test)),
            "test_index": test.tolist()}


def keras_version() -> str:
    """Version of the Keras behind tf.keras: tf_keras's when TF_USE_LEGACY_KERAS=1 maps
    tf.keras to it (TIM-Net's code on a TensorFlow >= 2.16), else the keras package's."""
    name = "tf_keras" if os.environ.get("TF_USE_LEGACY_KERAS") == "1" else "keras"
    try:
        module = __import__(name)
    except ImportError:
        return ""
    version = getattr(module, "__version__", "")
    return f"tf_keras {version}" if name == "tf_keras" else version


def environment(args: SimpleNamespace) -> dict:
    import sklearn
    import tensorflow as tf

    return {"python": platform.python_version(), "tensorflow": tf.__version__,
            "keras": getattr(tf.keras, "__version__", "") or keras_version(),
            "numpy": np.__version__, "sklearn": sklearn.__version__,
            "hyperparameters": vars(args)}


def main(argv=None) -> int:
    opts = parse_args(argv)
    home, data = Path(opts.timnet_home), Path(opts.data)
    x, y, class_names = load_data(data)
    args = timnet_args(home, opts.epochs, data.name)
    folds = timnet_folds(len(x), args)
    if opts.check_folds:
        Path(opts.output).write_text(json.dumps({"test_index": [t.tolist() for _, t in folds]}))
        return 0
    import tensorflow as tf

    if opts.threads:
        tf.config.threading.set_intra_op_parallelism_threads(opts.threads)
        tf.config.threading.set_inter_op_parallelism_threads(opts.threads)
    Model = import_timnet(home)
    rows = []
    for fold in (int(f) for f in opts.folds.split(",")):
        row = train_fold(Model, args, x, y, class_names, fold, folds[fold - 1])
        rows.append(row)
        print(f"peer fold {fold}: acc {row['accuracy']:.4f} uar {row['uar']:.4f} "
              f"f1 {row['macro_f1']:.4f} {row['seconds_per_epoch']:.2f} s/epoch", flush=True)
        Path(opts.output).write_text(json.dumps({"environment": environment(args),
                                                 "folds": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
