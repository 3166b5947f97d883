"""Training speed: our tf.data + model.fit path against a plain eager Python loop.

    python -m benchmarks.bench_training [--presets light default] [--features MFCC FUSION]
        [--epochs 3] [--threads 0] [--output FILE]

For EMODB (all 535 files, 7 classes, batch 32) and each preset x feature set (FUSION = MFCC +
LogMel), the model is built with the corpus' normalisation statistics and compiled with
`compile_model` (Adam, cosine decay, clipnorm, label smoothing), then trained for `--epochs`
epochs in two ways:

  ours      `fit_model`: model.fit on `make_dataset` (tf.data, compiled train_function,
            length-sorted batches padded to their own longest utterance, rounded to 16 frames);
  baseline  the same architecture and optimiser in a straightforward Python loop: each epoch a
            random permutation of the files, batches cut from the arrays padded to the longest
            utterance of the WHOLE corpus (NumPy slicing), one eager `tf.GradientTape` step per
            batch (no tf.function), i.e. what a naive implementation does.

Epoch 1 includes tracing / warm-up and is reported separately; "s/epoch" is the median of
epochs 2..N. Every (preset, feature, path) runs in its own subprocess, so each peak resident
memory (ru_maxrss) is its own; one-time imports and data loading are not timed. Frames/s counts
true (unpadded) frames of the corpus per second of epoch; `padded_frames` is what each path
actually computes per epoch. Both paths run the same number of optimiser steps per epoch,
ceil(535 / 32) = 17. The full 10-fold estimate is

    kfold_hours(E) = 10 folds * E epochs * median s/epoch / 3600,   E in (30, 100, 300)

(a fold trains on ~90% of the files and early stopping usually ends before E, so this is an
upper-end estimate of training time; evaluation is not counted). Prints a Markdown table and
writes benchmarks/results_training.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is first imported

import numpy as np  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results_training.json"
DATASET = "EMODB"
BATCH_SIZE = 32
SEED = 46
KFOLD_FOLDS = 10
KFOLD_EPOCHS = (30, 100, 300)
PATHS = ("ours", "baseline")
KFOLD_FORMULA = "kfold_seconds(E) = 10 folds * E epochs * median seconds/epoch (epochs 2..N)"


# ---------------------------------------------------------------------------- pure helpers
def steps_per_epoch(n: int, batch_size: int) -> int:
    return int(np.ceil(n / batch_size))


def baseline_batches(n: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """The naive loop's batches: one random permutation cut into consecutive chunks."""
    order = rng.permutation(n)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def padded_frames(lengths: np.ndarray, batches: list[np.ndarray], pad_to: int | None = None,
                  multiple: int = 1, max_frames: int | None = None) -> int:
    """Frames the model computes over `batches`: each batch is padded to `pad_to` (a fixed
    length, the baseline) or else to its longest member rounded up to `multiple` but at most
    `max_frames`, the width of the stored arrays (ours: make_dataset slices [:, :t])."""
    total = 0
    for index in batches:
        if pad_to is not None:
            t = int(pad_to)
        else:
            t = int(np.ceil(lengths[index].max() / multiple) * multiple)
            if max_frames is not None:
                t = min(t, int(max_frames))
        total += len(index) * t
    return total


def kfold_estimate(seconds_per_epoch: float, epochs=KFOLD_EPOCHS,
                   folds: int = KFOLD_FOLDS) -> dict[str, float]:
    """{f"E{E}": hours} for a full `folds`-fold run of E epochs per fold."""
    return {f"E{e}": round(folds * e * seconds_per_epoch / 3600.0, 3) for e in epochs}


def summarise_epochs(epoch_seconds: list[float]) -> dict:
    """Epoch 1 (tracing, warm-up) apart; median/min/max of epochs 2..N (or of epoch 1 alone)."""
    later = epoch_seconds[1:] or epoch_seconds[:1]
    return {"first_epoch_seconds": round(float(epoch_seconds[0]), 4),
            "seconds_per_epoch": round(float(np.median(later)), 4),
            "min_seconds": round(float(np.min(later)), 4),
            "max_seconds": round(float(np.max(later)), 4),
            "epoch_seconds": [round(float(s), 4) for s in epoch_seconds]}


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB (Linux reports ru_maxrss in KiB)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


# ---------------------------------------------------------------------------- training
def set_threads(threads: int) -> None:
    """Limit TensorFlow's thread pools (0 = its default, all cores); call before any TF op."""
    if threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)


def train_config(preset: str, epochs: int, batch_size: int = BATCH_SIZE):
    """RunConfig as the CLI builds it for `--preset preset` (model and schedule flags from the
    preset), with `epochs`, `batch_size`, early stopping off and quiet fitting."""
    from src.training import presets
    from src.training.config import RunConfig

    values = {**presets.preset_values(preset), "epoch": epochs, "batch_size": batch_size,
              "patience": 0}
    return RunConfig(preset=preset, verbose=0, **values)


def load_data(feature: str, features_root: str | Path):
    from src.training.data import load_ser_data

    return load_ser_data(DATASET, feature, features_root)


def build_compiled(data, cfg, seed: int = SEED, model_config=None):
    """Seeded model with `data`'s normalisation statistics, compiled with `compile_model`."""
    from src.models.model import build_model
    from src.training.data import normalisation_stats
    from src.training.experiment import compile_model, model_config_from, seed_everything

    seed_everything(seed)
    model = build_model(data.input_dims, len(data.class_names),
                        model_config or model_config_from(cfg),
                        norm_stats=normalisation_stats(data))
    compile_model(model, cfg, steps_per_epoch(data.n, cfg.batch_size))
    return model


def run_ours(model, data, cfg, seed: int = SEED) -> dict:
    """`fit_model` (tf.data + model.fit) for cfg.epoch epochs; epoch times from its timer."""
    from src.training.data import PAD_MULTIPLE, length_sorted_batches
    from src.training.experiment import fit_model

    before = int(model.optimizer.iterations.numpy())
    history, epoch_seconds = fit_model(model, data, None, cfg, seed)
    steps = int(model.optimizer.iterations.numpy()) - before
    rng = np.random.default_rng(seed)  # make_dataset's draw for the first epoch
    batches = length_sorted_batches(data.lengths, cfg.batch_size, rng)
    t_max = int(max(v.shape[1] for v in data.streams.values()))
    return {"epoch_seconds": list(epoch_seconds), "steps": steps,
            "steps_per_epoch": steps / max(1, len(epoch_seconds)),
            "padded_frames_per_epoch": padded_frames(data.lengths, batches,
                                                     multiple=PAD_MULTIPLE, max_frames=t_max),
            "final_loss": history["loss"][-1]}


def run_baseline(model, data, cfg, seed: int = SEED) -> dict:
    """Plain Python loop: shuffled files, whole-corpus padding, eager GradientTape steps."""
    import keras
    import tensorflow as tf

    from src.training.data import LENGTH_INPUT

    optimizer = model.optimizer
    loss_fn = keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing)
    n_classes = len(data.class_names)
    onehot = np.eye(n_classes, dtype=np.float32)[data.labels]
    rng = np.random.default_rng(seed)
    before = int(optimizer.iterations.numpy())
    epoch_seconds, losses = [], []
    for _ in range(cfg.epoch):
        start = time.perf_counter()
        total, correct = 0.0, 0
        batches = baseline_batches(data.n, cfg.batch_size, rng)
        for index in batches:
            inputs = {k: v[index] for k, v in data.streams.items()}  # padded to the corpus max
            inputs[LENGTH_INPUT] = data.lengths[index]
            targets = onehot[index]
            with tf.GradientTape() as tape:
                probs = model(inputs, training=True)
                loss = loss_fn(targets, probs)
            grads = tape.gradient(loss, model.trainable_weights)
            optimizer.apply_gradients(zip(grads, model.trainable_weights))
            total += float(loss) * len(index)
            correct += int((np.argmax(probs, axis=1) == data.labels[index]).sum())
        epoch_seconds.append(time.perf_counter() - start)
        losses.append(total / data.n)
    steps = int(optimizer.iterations.numpy()) - before
    t_max = int(max(v.shape[1] for v in data.streams.values()))
    return {"epoch_seconds": epoch_seconds, "steps": steps,
            "steps_per_epoch": steps / max(1, len(epoch_seconds)),
            "padded_frames_per_epoch": padded_frames(data.lengths, batches, pad_to=t_max),
            "final_loss": losses[-1]}


def measure(preset: str, feature: str, path: str, epochs: int, threads: int = 0,
            features_root: str | Path = REPO_ROOT / "data" / "features") -> dict:
    """One configuration in this process: load, build, train `epochs` epochs on `path`."""
    set_threads(threads)
    import tensorflow as tf

    data = load_data(feature, features_root)
    cfg = train_config(preset, epochs)
    model = build_compiled(data, cfg)
    runner = run_ours if path == "ours" else run_baseline
    result = runner(model, data, cfg)
    summary = summarise_epochs(result.pop("epoch_seconds"))
    frames = int(data.lengths.sum())
    return {"preset": preset, "feature": feature, "path": path, "epochs": epochs,
            "threads": threads, "n_files": data.n, "n_classes": len(data.class_names),
            "batch_size": cfg.batch_size, "n_params": int(model.count_params()),
            "frames_per_epoch": frames,
            "frames_per_second": round(frames / summary["seconds_per_epoch"], 1),
            **summary, **result,
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "gpus": [d.name for d in tf.config.list_physical_devices("GPU")]}


def measure_in_subprocess(preset: str, feature: str, path: str, epochs: int, threads: int,
                          features_root: str | Path) -> dict:
    """`measure` in a fresh interpreter, so its peak memory is its own."""
    with tempfile.TemporaryDirectory(prefix="bench_training_") as tmp:
        out = Path(tmp) / "result.json"
        command = [sys.executable, "-m", "benchmarks.bench_training", "--one", preset, feature,
                   path, "--epochs", str(epochs), "--threads", str(threads),
                   "--features_root", str(features_root), "--output", str(out)]
        subprocess.run(command, cwd=REPO_ROOT, check=True)
        return json.loads(out.read_text())


# ---------------------------------------------------------------------------- report
def comparison_rows(results: list[dict]) -> list[dict]:
    """One row per (preset, feature): ours vs baseline seconds/epoch, ratio, memory, frames/s,
    10-fold estimates from our median epoch."""
    rows = []
    keys = []
    for r in results:
        if (r["preset"], r["feature"]) not in keys:
            keys.append((r["preset"], r["feature"]))
    for preset, feature in keys:
        by_path = {r["path"]: r for r in results
                   if r["preset"] == preset and r["feature"] == feature}
        ours, base = by_path.get("ours"), by_path.get("baseline")
        row = {"preset": preset, "feature": feature}
        for name, r in (("ours", ours), ("baseline", base)):
            if r:
                row.update({f"{name}_s_per_epoch": r["seconds_per_epoch"],
                            f"{name}_first_epoch_s": r["first_epoch_seconds"],
                            f"{name}_peak_rss_mb": r["peak_rss_mb"],
                            f"{name}_frames_per_s": r["frames_per_second"]})
        if ours and base:
            row["speedup"] = round(base["seconds_per_epoch"] / ours["seconds_per_epoch"], 2)
        if ours:
            row["kfold_hours_ours"] = kfold_estimate(ours["seconds_per_epoch"])
        if base:
            row["kfold_hours_baseline"] = kfold_estimate(base["seconds_per_epoch"])
        rows.append(row)
    return rows


def markdown_table(rows: list[dict]) -> str:
    def f(value, fmt="{:.2f}"):
        return "-" if value is None else fmt.format(value)

    header = ("| preset | feature | ours s/epoch | baseline s/epoch | speedup | ours epoch 1 s "
              "| baseline epoch 1 s | ours peak MiB | baseline peak MiB | ours frames/s "
              "| baseline frames/s | 10-fold h (ours) E=30/100/300 |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in rows:
        kfold = r.get("kfold_hours_ours")
        kfold_text = "/".join(f"{v:.2f}" for v in kfold.values()) if kfold else "-"
        lines.append(
            f"| {r['preset']} | {r['feature']} | {f(r.get('ours_s_per_epoch'))} "
            f"| {f(r.get('baseline_s_per_epoch'))} | {f(r.get('speedup'), '{:.2f}x')} "
            f"| {f(r.get('ours_first_epoch_s'))} | {f(r.get('baseline_first_epoch_s'))} "
            f"| {f(r.get('ours_peak_rss_mb'), '{:.0f}')} "
            f"| {f(r.get('baseline_peak_rss_mb'), '{:.0f}')} "
            f"| {f(r.get('ours_frames_per_s'), '{:.0f}')} "
            f"| {f(r.get('baseline_frames_per_s'), '{:.0f}')} | {kfold_text} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["light", "default"],
                        choices=["light", "default"])
    parser.add_argument("--features", nargs="+", default=["MFCC", "FUSION"],
                        choices=["MFCC", "LogMel", "FUSION"])
    parser.add_argument("--paths", nargs="+", default=list(PATHS), choices=list(PATHS))
    parser.add_argument("--epochs", type=int, default=3,
                        help="epochs per run; epoch 1 is reported apart (>= 2)")
    parser.add_argument("--threads", type=int, default=0, help="TF threads (0 = all cores)")
    parser.add_argument("--features_root", default=str(REPO_ROOT / "data" / "features"))
    parser.add_argument("--inline", action="store_true",
                        help="run every configuration in this process (peak memory then "
                             "accumulates over configurations)")
    parser.add_argument("--output", default=str(RESULTS))
    parser.add_argument("--one", nargs=3, metavar=("PRESET", "FEATURE", "PATH"),
                        help=argparse.SUPPRESS)  # internal: one configuration, JSON to --output
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (epoch 1 is warm-up)")
    from src.utils.io import write_json

    if args.one:
        preset, feature, path = args.one
        write_json(args.output, measure(preset, feature, path, args.epochs, args.threads,
                                        args.features_root))
        return 0

    load_before = os.getloadavg()
    results = []
    for preset in args.presets:
        for feature in args.features:
            for path in args.paths:
                start = time.perf_counter()
                if args.inline:
                    r = measure(preset, feature, path, args.epochs, args.threads,
                                args.features_root)
                else:
                    r = measure_in_subprocess(preset, feature, path, args.epochs, args.threads,
                                              args.features_root)
                results.append(r)
                print(f"{preset:<8} {feature:<7} {path:<9} epoch 1 {r['first_epoch_seconds']:8.2f}"
                      f" s, then {r['seconds_per_epoch']:8.2f} s/epoch, {r['steps']} steps, "
                      f"peak {r['peak_rss_mb']:.0f} MiB ({time.perf_counter() - start:.0f} s "
                      f"wall)", flush=True)
    load_after = os.getloadavg()
    rows = comparison_rows(results)
    table = markdown_table(rows)
    print(f"\n{DATASET}: {results[0]['n_files']} files, batch {BATCH_SIZE}, {args.epochs} epochs"
          f" (median of epochs 2..{args.epochs}), {os.cpu_count()} CPU cores, threads "
          f"{args.threads or 'all'}; load average before/after {load_before[0]:.2f} / "
          f"{load_after[0]:.2f}\n")
    print(table)
    print(f"\n10-fold estimate: {KFOLD_FORMULA} (hours shown; early stopping usually ends "
          f"sooner)")
    write_json(args.output, {
        "dataset": DATASET, "batch_size": BATCH_SIZE, "epochs": args.epochs,
        "threads": args.threads, "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0], "machine": platform.machine(),
        "gpus": results[0].get("gpus", []),
        "subprocess_per_configuration": not args.inline,
        "load_average_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        "kfold_formula": KFOLD_FORMULA, "kfold_epochs": list(KFOLD_EPOCHS),
        "comparison": rows, "runs": results, "markdown": table,
        "note": ("ours = fit_model (tf.data, length-sorted batches padded per batch, compiled "
                 "train_function); baseline = eager GradientTape loop over randomly shuffled "
                 "batches padded to the corpus' longest utterance; seconds_per_epoch = median of "
                 "epochs 2..N; frames_per_second counts true frames; peak_rss_mb = ru_maxrss of "
                 "the configuration's own process"),
    })
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
