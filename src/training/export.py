"""Package a trained run for distribution under test_models/<DATA>/<FEATURE>/.

    python -m src.training.export --run saved_models/EMODB/MFCC/<run-id> --to test_models/EMODB/MFCC

Each fold's model is rewritten as a compact native .keras file (weights stored as float16 in a
deflated zip, ~2.5x smaller; Keras casts them back to the float32 variables on load), its split
and training result are copied, and the shipped models are evaluated again so that every
fold's result.json holds the figures that `--mode test` (or `--mode test-cross-corpus`)
reproduces from the shipped files. config.json gains an "export" entry with the exact training
command, the source run and the weight dtype; a README.md beside the models shows both.
"""
from __future__ import annotations

import argparse
import datetime
import io
import json
import logging
import shlex
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np

from src.training import presets
from src.training.config import BOOKKEEPING, HARDWARE, RunConfig
from src.training.main import build_parser  # light: no TensorFlow import
from src.utils import io as sio

log = logging.getLogger(__name__)

WEIGHTS_ENTRY = "model.weights.h5"
# RunConfig fields that are bookkeeping of the training machine, not part of the recipe.
# Paths and display flags: not part of the recipe (hardware flags and the run id are kept).
_NOT_IN_COMMAND = BOOKKEEPING - HARDWARE - {"run_id"}


def compact_model_file(src: Path, dst: Path, weights_dtype: str = "float16") -> None:
    """Copy the .keras file `src` to `dst` with float32 weights stored as `weights_dtype`."""
    import h5py  # heavy: h5py

    with zipfile.ZipFile(src) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    if WEIGHTS_ENTRY not in entries:
        raise ValueError(f"{src}: not a Keras 3 .keras file (no {WEIGHTS_ENTRY} inside)")
    weights = io.BytesIO()
    with h5py.File(io.BytesIO(entries[WEIGHTS_ENTRY]), "r") as old, \
            h5py.File(weights, "w") as new:
        def copy(name, item):
            if isinstance(item, h5py.Dataset):
                values = item[()]
                if values.dtype == np.float32:
                    values = values.astype(weights_dtype)
                new.create_dataset(name, data=values)
            else:
                new.require_group(name)
            new[name].attrs.update(item.attrs)

        old.visititems(copy)
        new.attrs.update(old.attrs)
    entries[WEIGHTS_ENTRY] = weights.getvalue()
    with sio.atomic_path(dst) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name, payload in entries.items():
                archive.writestr(name, payload)


def training_command(run: dict) -> str:
    """The `python -m src.training.main ...` line that reproduces a saved run's training.

    Every flag whose value differs from what the command line would give without it is written:
    RunConfig's default, or for the flags a preset sets the --preset's value. On/off flags
    (store_true) appear when on; flags with a value (--collapse_guard false) whenever they
    differ. A RunConfig field that has no flag cannot be written: a warning names it."""
    defaults = RunConfig().to_dict()
    preset = run.get("preset", defaults["preset"])
    defaults.update(presets.preset_values(preset if preset in presets.NAMES else "default"))
    switches = {a.dest for a in build_parser()._actions
                if isinstance(a, (argparse._StoreTrueAction, argparse._StoreFalseAction))}
    flags = {a.dest for a in build_parser()._actions if a.option_strings}
    parts = ["python", "-m", "src.training.main"]
    always = ("mode", "data", "feature_type")
    for key in [*always, *sorted(set(run) - set(always))]:
        value = run[key]
        if key in _NOT_IN_COMMAND or key not in defaults:
            continue
        if key not in always and value == defaults[key]:
            continue
        if key not in flags:
            log.warning("training command: %s=%r has no command-line flag; the command "
                        "trains with %r instead", key, value, defaults[key])
            continue
        if key in switches:
            parts += [f"--{key}"] if value else []
        elif isinstance(value, bool):
            parts += [f"--{key}", str(value).lower()]
        else:
            parts += [f"--{key}", str(value)]
    return shlex.join(parts)


def _copy_fold(fold_dir: Path, dest: Path, weights_dtype: str) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    if (fold_dir / "model.skops").is_file():  # scikit-learn: small already, copied as is
        shutil.copyfile(fold_dir / "model.skops", dest / "model.skops")
    else:
        compact_model_file(fold_dir / "model.keras", dest / "model.keras", weights_dtype)
    shutil.copyfile(fold_dir / "split.json", dest / "split.json")
    result = json.loads((fold_dir / "result.json").read_text())
    sio.write_json(dest / "result.json", {**result, "trained": _headline(result)})


def _headline(result: dict) -> dict:
    """The metrics of a fold result (same-corpus: "metrics"; adapted: "target"/"source")."""
    if "metrics" in result:
        return {"metrics": result["metrics"]}
    return {side: {"metrics": result[side]["metrics"]} for side in ("source", "target")
            if side in result}


def export_run(run_dir: str | Path, dest: str | Path, weights_dtype: str = "float16",
               features_root: str = "", overwrite: bool = False) -> dict:
    """Export every fold of `run_dir` to `dest`, evaluate the shipped models, return the summary."""
    from src.training.evaluate import load_saved_run  # heavy: sklearn, matplotlib
    from src.training.experiment import ExperimentError  # heavy: sklearn

    run_dir, dest = Path(run_dir), Path(dest)
    saved, folds = load_saved_run(run_dir)
    if dest.exists() and not overwrite:
        raise ExperimentError(f"--to {dest} exists; pass --overwrite to replace it")
    staging = dest.with_name(dest.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    for fold_dir in folds:
        _copy_fold(fold_dir, staging / fold_dir.name, weights_dtype)
    command = training_command(saved["run"])
    export = {"source_run": str(run_dir), "weights_dtype": weights_dtype, "command": command,
              "exported": datetime.datetime.now().isoformat(timespec="seconds")}
    summary = _evaluate_shipped(staging, saved, features_root)
    export["figures"] = summary
    sio.write_json(staging / "config.json", {**saved, "export": export})
    _write_readme(staging, saved, export, summary)
    if dest.exists():
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(dest)
    return summary


def _evaluate_shipped(path: Path, saved: dict, features_root: str) -> dict:
    """Evaluate the compact models, store each fold's outputs in its result.json and return
    the mean/std summary (same-corpus: own test splits; adapted: the whole target corpus)."""
    from src.training.adaptation import cross_corpus_results  # heavy: sklearn, matplotlib
    from src.training.evaluate import evaluate_folds, fold_dirs  # heavy: sklearn, matplotlib
    from src.utils.metrics import summarise_folds  # heavy: sklearn

    folds = fold_dirs(path)
    features_root = features_root or RunConfig().features_root
    adapted = saved["run"]["mode"] == "train-lmmd"
    if adapted:
        cfg = RunConfig(test_path=str(path), features_root=features_root, data="")
        results, _, target_data, _ = cross_corpus_results(cfg, saved, folds)
        fresh = [{"fold": r["fold"], "target": r["target"]} for r in results]
        metrics = [r["target"]["metrics"] for r in results]
    else:
        results, _ = evaluate_folds(saved, folds, features_root)
        fresh = [{k: r[k] for k in ("fold", "metrics", "y_true", "y_pred", "probs", "file_ids")}
                 for r in results]
        metrics = [r["metrics"] for r in results]
        target_data = None
    for entry in fresh:
        result_path = path / f"fold_{entry['fold']:02d}" / "result.json"
        sio.write_json(result_path, {**json.loads(result_path.read_text()), **entry})
    summary = summarise_folds([{**m, "confusion": np.asarray(m["confusion"])} for m in metrics])
    return {"target_data": target_data, "n_folds": len(folds),
            **{f"{k}_{stat}": float(summary[k][stat]) for k in ("war", "uar", "macro_f1")
               for stat in ("mean", "std")}}


def _write_readme(path: Path, saved: dict, export: dict, summary: dict) -> None:
    def pct(key):
        return f"{100 * summary[f'{key}_mean']:.2f} +/- {100 * summary[f'{key}_std']:.2f}"

    adapted = saved["run"]["mode"] == "train-lmmd"
    what = (f"{saved['dataset']} -> {summary['target_data']} (whole target corpus)"
            if adapted else f"{saved['dataset']} (each fold on its own test split)")
    lines = [f"# {saved['run_id']}", "",
             f"{len(list(path.glob('fold_*')))} fold models, {saved['run']['feature_type']} "
             f"features, classes: {', '.join(saved['class_names'])}.", "",
             "Trained with:", "```bash", export["command"], "```", "",
             f"Weights stored as {export['weights_dtype']} (`python -m src.training.export`); "
             f"figures of these files on {what}:", "",
             "| WAR | UAR | macro-F1 |", "|---|---|---|",
             f"| {pct('war')} | {pct('uar')} | {pct('macro_f1')} |", ""]
    sio.write_text(path / "README.md", "\n".join(lines))


def write_index(root: str | Path) -> Path:
    """root/README.md: one row per exported run under root/<DATA>/<FEATURE>/."""
    root = Path(root)
    rows = ["# Shipped models", "",
            "Made with `python -m src.training.export`; each folder's README.md has the exact "
            "training command. Figures are those of the shipped files (mean +/- std over folds, "
            "%); `--mode test` / `--mode test-cross-corpus` reproduce them.", "",
            "| folder | run | folds | evaluated on | WAR | UAR | macro-F1 | size |",
            "|---|---|---|---|---|---|---|---|"]
    for config_path in sorted(root.glob("*/*/config.json")):
        run = config_path.parent
        saved = json.loads(config_path.read_text())
        figures = saved["export"]["figures"]
        where = (f"{figures['target_data']} (whole corpus, "
                 f"{len(saved['class_names'])} shared classes)" if figures["target_data"]
                 else "own test folds")
        size = sum(f.stat().st_size for f in run.rglob("*") if f.is_file()) / 2 ** 20
        rows.append(f"| `{run.relative_to(root)}` | {saved['run_id']} | {figures['n_folds']} | "
                    f"{where} | " + " | ".join(
                        f"{100 * figures[f'{k}_mean']:.2f} +/- {100 * figures[f'{k}_std']:.2f}"
                        for k in ("war", "uar", "macro_f1")) + f" | {size:.1f} MiB |")
    index = root / "README.md"
    sio.write_text(index, "\n".join(rows) + "\n")
    return index


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m src.training.export",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True,
                        help="trained run folder (saved_models/<DATA>/<FEATURE>/<run-id>)")
    parser.add_argument("--to", required=True, help="destination, e.g. test_models/EMODB/MFCC")
    parser.add_argument("--weights_dtype", choices=("float16", "float32"), default="float16")
    parser.add_argument("--features_root", default="")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    from src.training.errors import USER_ERRORS  # heavy: sklearn (via experiment)

    try:
        export_run(args.run, args.to, args.weights_dtype, args.features_root, args.overwrite)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    index = write_index(Path(args.to).parent.parent)
    print(f"exported {args.run} -> {args.to}; index: {index}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
