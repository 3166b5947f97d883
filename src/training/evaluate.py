"""Re-evaluate trained fold models (`--mode test`) and predict emotions of new audio
(`--mode predict`)."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from src.data_processing.audio import AudioError
from src.data_processing.config import ExtractionConfig, is_utterance_level
from src.data_processing.features import extract_file
from src.training.config import RunConfig
from src.training.data import SERData, load_ser_data, pad_sequences, standardise_groups
from src.training.errors import NothingPredicted
from src.training.estimators import MODEL_FILES, load_estimator
from src.training.experiment import ExperimentError
from src.training.report import write_run_report
from src.utils import io
from src.utils.metrics import compute_metrics

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg"}


def load_saved_run(test_path: str | Path) -> tuple[dict, list[Path]]:
    """(saved config, sorted fold folders holding a model file) of a trained run."""
    root = Path(test_path)
    config_path = root / "config.json"
    if not config_path.is_file():
        raise ExperimentError(f"--test_path {root}: no config.json there; point it at a folder "
                              f"made by --mode train (saved_models/<DATA>/<FEATURE>/<run-id>/) "
                              f"or at test_models/<DATA>/<FEATURE>/")
    folds = fold_dirs(root)
    if not folds:
        raise ExperimentError(f"--test_path {root}: no fold_XX/model.keras (or model.skops) "
                              f"inside; train first "
                              f"(python -m src.training.main --mode train ...)")
    return json.loads(config_path.read_text()), folds


def fold_dirs(root: Path) -> list[Path]:
    """Sorted fold_XX folders of `root` that hold a model file (model.keras / model.skops)."""
    return sorted({p.parent for name in MODEL_FILES for p in Path(root).glob(f"fold_*/{name}")})


def _check_request(cfg: RunConfig, saved: dict) -> None:
    run = saved["run"]
    if cfg.feature_type and cfg.feature_type != run["feature_type"]:
        raise ExperimentError(f"--feature_type {cfg.feature_type} but the models in "
                              f"{cfg.test_path} were trained on {run['feature_type']}")


def load_data_for_models(dataset: str, saved: dict, features_root: str,
                         class_names: list[str] | None = None) -> SERData:
    """Features of `dataset` made with exactly the extraction settings the models saw."""
    run = saved["run"]
    try:
        return load_ser_data(dataset, run["feature_type"], features_root, run["fusion_streams"],
                             class_names=class_names or saved["class_names"],
                             feature_hashes=saved["feature_hashes"],
                             max_frames=run.get("max_frames", 0),
                             speaker_norm=run.get("speaker_norm", False))
    except FileNotFoundError as err:
        settings = "; ".join(f"{k}: {v}" for k, v in saved["extraction"].items())
        raise ExperimentError(
            f"{err}\nThe models need {dataset} features extracted with the settings they were "
            f"trained on ({settings}); pass the same flags to run_data_processing.") from None


def run_test(cfg: RunConfig) -> dict:
    """Evaluate every fold model on its own saved test split and write the usual report."""
    saved, folds = load_saved_run(cfg.test_path)
    _check_request(cfg, saved)
    dataset = saved["dataset"]
    if cfg.data and cfg.data.upper() != dataset:
        raise ExperimentError(f"--data {cfg.data} but the models in {cfg.test_path} were "
                              f"trained on {dataset}; use --mode test-cross-corpus for another "
                              f"corpus")
    results, class_names = evaluate_folds(saved, folds, cfg.features_root)
    run_id = f"{saved['run_id']}-test"
    return write_run_report(Path(cfg.results_root) / run_id, run_id, saved, results,
                            class_names)


def evaluate_folds(saved: dict, folds: list[Path], features_root: str
                   ) -> tuple[list[dict], list[str]]:
    """Per fold: metrics, labels, predictions and probabilities on its saved test split."""
    dataset = saved["dataset"]
    data = load_data_for_models(dataset, saved, features_root)
    position = {file_id: i for i, file_id in enumerate(data.file_ids)}
    results = []
    for fold_dir in folds:
        split = json.loads((fold_dir / "split.json").read_text())
        missing = [f for f in split["test"] if f not in position]
        if missing:
            raise ExperimentError(f"{fold_dir}: {len(missing)} test files are missing from the "
                                  f"{dataset} features (e.g. {missing[0]})")
        test = data.subset(np.array([position[f] for f in split["test"]]))
        probs = load_estimator(fold_dir, data.class_names).predict_proba(test)
        y_pred = probs.argmax(axis=1)
        metrics = compute_metrics(test.labels, y_pred, data.class_names)
        fold = int(fold_dir.name.split("_")[1])
        _compare_with_training(fold_dir, metrics)
        results.append({"fold": fold, "metrics": {**metrics,
                                                  "confusion": metrics["confusion"].tolist()},
                        "y_true": test.labels.tolist(), "y_pred": y_pred.tolist(),
                        "probs": probs.tolist(), "file_ids": list(test.file_ids),
                        "n_test": test.n})
        print(f"fold {fold:2d}: WAR {100 * metrics['war']:.2f}% UAR {100 * metrics['uar']:.2f}%")
    return results, data.class_names


def _compare_with_training(fold_dir: Path, metrics: dict) -> None:
    stored = fold_dir / "result.json"
    if not stored.exists():
        return
    before = json.loads(stored.read_text())["metrics"]["war"]
    if abs(before - metrics["war"]) > 1e-9:
        log.warning("%s: WAR %.4f differs from the stored %.4f", fold_dir.name, metrics["war"],
                    before)


# ---------------------------------------------------------------------------- predict
def collect_audio(paths: list[str]) -> list[Path]:
    """Audio files named directly or found (recursively) in named folders."""
    found = []
    for item in paths:
        path = Path(item)
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES))
        elif path.is_file():
            found.append(path)
        else:
            raise ExperimentError(f"--audio {item}: no such file or folder")
    if not found:
        raise ExperimentError(f"--audio {' '.join(paths)}: no .wav/.flac/.ogg files found")
    return found


def extract_for_models(paths: list[Path], saved: dict) -> tuple[SERData, list[tuple[str, str]]]:
    """Extract each stream with the models' saved settings; returns (inputs, failures)."""
    streams = list(saved["input_dims"])
    configs = {s: ExtractionConfig.from_dict(saved["extraction"][s]) for s in streams}
    framed = [s for s in streams if not is_utterance_level(s, configs[s])]
    per_stream: dict[str, list[np.ndarray]] = {s: [] for s in streams}
    kept, failures = [], []
    for path in paths:
        try:
            arrays = {}
            for stream in streams:
                arrays.update(extract_file(path, configs[stream], [stream]))
        except (AudioError, OSError, ValueError) as err:
            failures.append((str(path), str(err)))
            continue
        n = min([arrays[s].shape[0] for s in framed] or [1])
        for stream in streams:
            per_stream[stream].append(arrays[stream][:n] if stream in framed
                                      else arrays[stream])
        kept.append(path)
    if not kept:
        error = NothingPredicted("no input file could be used: " +
                                 "; ".join(f"{p}: {r}" for p, r in failures))
        error.failures = failures
        raise error
    lengths = np.array([a.shape[0] for a in per_stream[framed[0]]] if framed
                       else [1] * len(kept), dtype=np.int32)
    max_frames = saved["run"].get("max_frames", 0)
    if max_frames:
        lengths = np.minimum(lengths, max_frames)
    metadata = pd.DataFrame({"file_id": [str(p) for p in kept], "label": "", "speaker": ""})
    data = SERData(dataset="PREDICT",
                   streams={s: pad_sequences(per_stream[s], lengths if s in framed
                                             else np.ones(len(kept), dtype=np.int32))
                            for s in streams},
                   lengths=lengths, labels=np.zeros(len(kept), dtype=np.int32),
                   class_names=saved["class_names"], metadata=metadata,
                   extraction=saved["extraction"], feature_hashes=saved["feature_hashes"])
    if saved["run"].get("speaker_norm"):
        # The speakers of new files are unknown: each file is standardised on its own.
        print("models trained with --speaker_norm: each file is standardised with its own "
              "statistics (speakers unknown)")
        data = standardise_groups(data, np.asarray(data.file_ids))
    return data, failures


def run_predict(cfg: RunConfig) -> pd.DataFrame:
    """Fold-ensemble emotion probabilities for every audio file; prints a table.

    Returns (and writes to --output) one row per input file in input order: files that could
    not be used have an empty emotion, empty probabilities and the cause in `reason`. Raises
    NothingPredicted (after writing --output) when no file could be used."""
    saved, folds = load_saved_run(cfg.test_path)
    paths = collect_audio(list(cfg.audio))
    names = saved["class_names"]
    try:
        data, failures = extract_for_models(paths, saved)
    except NothingPredicted as error:
        if cfg.output:
            io.write_csv(cfg.output, _prediction_table(paths, names, {}, error.failures))
            print(f"failures written to {cfg.output}")
        raise
    probs = np.mean([load_estimator(f, names).predict_proba(data) for f in folds], axis=0)
    table = _prediction_table(paths, names, dict(zip(data.file_ids, probs)), failures)
    with pd.option_context("display.max_rows", None, "display.width", 200):
        print(table.drop(columns="reason").dropna().to_string(index=False))
    for path, reason in failures:
        print(f"skipped {path}: {reason}")
    if cfg.output:
        io.write_csv(cfg.output, table)
        print(f"predictions written to {cfg.output}")
    return table


def _prediction_table(paths: list[Path], names: list[str], probs: dict[str, np.ndarray],
                      failures: list[tuple[str, str]]) -> pd.DataFrame:
    """file, emotion, one probability column per class, reason: a row per input path."""
    reasons = dict(failures)
    rows = []
    for path in map(str, paths):
        if path in probs:
            p = probs[path]
            rows.append({"file": path, "emotion": names[int(np.argmax(p))],
                         **{n: round(float(v), 4) for n, v in zip(names, p)}, "reason": ""})
        else:
            rows.append({"file": path, "emotion": "", **{n: np.nan for n in names},
                         "reason": reasons.get(path, "not predicted")})
    return pd.DataFrame(rows, columns=["file", "emotion", *names, "reason"])
