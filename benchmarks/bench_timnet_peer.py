"""Side by side: TIM-Net's own code (Jiaxin-Ye/TIM-Net_SER) against ours with --preset timnet.

    python -m benchmarks.bench_timnet_peer --corpus EMODB --folds 1-3 --epochs 500 --threads 1
        [--skip_ours] [--skip_peer] [--ours_run_id ID] [--feature_set HASH]
        [--ours_feature_set HASH --ours_flags '--max_frames 188'] [--peer_tf_keras DIR]

Both systems train on the same folds of the same features and keep their last epoch:
  features  our TIM-Net-style MFCCs (`python -m src.data_processing.run_data_processing --dataset
            EMODB --features MFCC --preset timnet`: 39 MFCCs at 22.05 kHz of signals padded or
            cropped to a fixed length), loaded with `load_ser_data` and exported raw (not
            standardised, as TIM-Net's own pipeline feeds them) with the labels, rows in our
            file order, to $TIMNET_PEER_DATA/<CORPUS>/{x.npy, y.npy, meta.json}
            (default /work/scratch/timnet-peer-data);
  folds     our `make_folds(data, "kfold", 10, fold_seed=46)`; the peer's own KFold(10, shuffle,
            random_state=46) is checked to give the same test rows before anything trains, and
            our run's test file ids are checked against them afterwards;
  ours      `python -m src.training.main --mode train --preset timnet ... --run_id
            bench-peer-<corpus>-e<E> --overwrite` (or, with --ours_run_id, the finished folds
            of an existing run are only read), figures from saved_models/.../fold_XX/result.json;
            --ours_feature_set / --ours_flags run a variant of ours against the same peer
            (e.g. variable-length features, cropped to TIM-Net's window and the padding masked:
            the same test files, fewer frames computed), run id bench-peer-<corpus>-e<E>-variant;
  peer      benchmarks/timnet_peer_driver.py run by the peer's python: TIM-Net's TIMNET_Model
            with its main.py defaults, fit without validation data, last epoch evaluated;
  peer, our TensorFlow (--peer_tf_keras DIR, optional third system "timnet-our-tf"): the same
            driver run by OUR python with TF_USE_LEGACY_KERAS=1 and DIR (an unpacked
            `tf_keras` wheel of our TensorFlow's version) on PYTHONPATH, so TIM-Net's unchanged
            Keras 2 code runs on our TensorFlow runtime: separates the runtime's share of a
            speed difference from our code's.

Per fold: WAR (accuracy), UAR, macro-F1, seconds per epoch, peak resident memory. "s/epoch
median" is the median over all epochs for both (ours stores only that); "s/epoch 2..N" is the
peer's mean over epochs 2..N. Peak RSS: per peer row the driver's getrusage at the end of that
fold; per our row and in the means, each whole process's peak (os.wait4; for a collected run
its metrics.json peak_memory_mb when the run has finished). Prints a Markdown table and writes
benchmarks/results_timnet_peer.json and benchmarks/timnet_peer.md.

Obtaining the peer (outside this repository; its code is never copied here):
    git clone https://github.com/Jiaxin-Ye/TIM-Net_SER /work/scratch/TIM-Net_SER
    python3 -m venv /work/scratch/timnet-venv
    /work/scratch/timnet-venv/bin/pip install tensorflow-cpu==2.15.1 scikit-learn pandas
TF 2.15 is the last release whose tf.keras is Keras 2, which TIM-Net's code is written for; it
then runs unchanged. For --peer_tf_keras (nothing is installed into our .venv):
    pip download tf_keras==<our tensorflow version> --no-deps -d /work/scratch/tfk-dl
    python -m zipfile -e /work/scratch/tfk-dl/tf_keras-*.whl /work/scratch/tfk
Override the places with TIMNET_HOME and TIMNET_PYTHON; when either is missing the peer column
is skipped with one line saying so.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

from benchmarks import write_report

REPO_ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
DRIVER = HERE / "timnet_peer_driver.py"
CORPORA = ("EMODB", "RAVDESS")
N_FOLDS, FOLD_SEED = 10, 46
OBTAIN = ("clone Jiaxin-Ye/TIM-Net_SER to $TIMNET_HOME and make $TIMNET_PYTHON with `python3 -m "
          "venv /work/scratch/timnet-venv && /work/scratch/timnet-venv/bin/pip install "
          "tensorflow-cpu==2.15.1 scikit-learn pandas` (see benchmarks/bench_timnet_peer.py)")
METRICS = ("accuracy", "uar", "macro_f1", "seconds_per_epoch_median", "seconds_per_epoch",
           "peak_rss_mb")


def timnet_feature_set(corpus: str) -> str:
    """Hash of the MFCC set that `run_data_processing --dataset CORPUS --preset timnet` writes."""
    from src.data_processing.config import timnet_config

    return timnet_config(corpus).feature_hash("MFCC")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_timnet_peer",
                                description=__doc__.split("\n")[0])
    p.add_argument("--corpus", default="EMODB", choices=CORPORA)
    p.add_argument("--feature_set", default="", help="MFCC feature-set hash (default: the "
                   "--preset timnet one of the corpus)")
    p.add_argument("--folds", default="1-3", help="1-based folds: 1-3 or 1,4")
    p.add_argument("--epochs", type=int, default=500)
    p.add_argument("--threads", type=int, default=1, help="TensorFlow threads of each system")
    p.add_argument("--ours_feature_set", default="", help="our MFCC set, when it differs from "
                   "the peer's (e.g. the variable-length set of --fixed_samples 0, for masking)")
    p.add_argument("--ours_flags", default="", help="more flags of our training command, one "
                   "string, e.g. '--max_frames 188' (crop as TIM-Net's window does, mask the rest)")
    p.add_argument("--peer_tf_keras", default="", help="folder holding an unpacked tf_keras "
                   "of our TensorFlow's version: also run TIM-Net's code on our TensorFlow")
    p.add_argument("--skip_ours", action="store_true")
    p.add_argument("--skip_peer", action="store_true")
    p.add_argument("--ours_run_id", default="", help="collect this finished run of ours "
                   "instead of training one")
    p.add_argument("--output", default=str(HERE / "results_timnet_peer.json"))
    p.add_argument("--markdown", default=str(HERE / "timnet_peer.md"))
    return p.parse_args(argv)


def data_root() -> Path:
    """Scratch folder of the exported features and the logs ($TIMNET_PEER_DATA)."""
    return Path(os.environ.get("TIMNET_PEER_DATA", "/work/scratch/timnet-peer-data"))


def peer_paths() -> tuple[Path, Path]:
    return (Path(os.environ.get("TIMNET_HOME", "/work/scratch/TIM-Net_SER")),
            Path(os.environ.get("TIMNET_PYTHON", "/work/scratch/timnet-venv/bin/python")))


def peer_missing(home: Path, python: Path) -> str:
    """One skip line when the peer is not set up, else ""."""
    if not (home / "Code" / "Model.py").is_file():
        return (f"TIM-Net peer skipped: no {home}/Code/Model.py (TIMNET_HOME); "
                f"to obtain it: {OBTAIN}")
    if not python.is_file():
        return f"TIM-Net peer skipped: no {python} (TIMNET_PYTHON); to obtain it: {OBTAIN}"
    return ""


def export_features(corpus: str, feature_set: str, out_dir: Path) -> dict:
    """Load our feature set, write raw x.npy (N,T,D), y.npy (N,) and meta.json (class names,
    file ids, our folds' test rows) to out_dir; returns the meta dict."""
    import numpy as np

    from src.training.config import RunConfig
    from src.training.data import load_ser_data
    from src.training.experiment import make_folds

    data = load_ser_data(corpus, "MFCC", RunConfig().features_root,
                         feature_hashes={"MFCC": feature_set})
    out_dir.mkdir(parents=True, exist_ok=True)
    np.save(out_dir / "x.npy", data.streams["MFCC"])
    np.save(out_dir / "y.npy", data.labels.astype(np.int64))
    folds = make_folds(data, "kfold", N_FOLDS, fold_seed=FOLD_SEED)
    meta = {"corpus": corpus, "feature_set": data.feature_hashes["MFCC"],
            "class_names": data.class_names, "shape": list(data.streams["MFCC"].shape),
            "equal_lengths": bool((data.lengths == data.lengths.max()).all()),
            "file_ids": [str(f) for f in data.file_ids],
            "test_index": [test.tolist() for _, test in folds]}
    (out_dir / "meta.json").write_text(json.dumps(meta))
    return meta


def run_measured(cmd: list[str], log_path: Path, env: dict | None = None) -> dict:
    """Run cmd (stdout+stderr to log_path); its exit code, wall seconds and peak RSS (MB)."""
    import subprocess

    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})})
        _, status, usage = os.wait4(proc.pid, 0)
    return {"rc": os.waitstatus_to_exitcode(status), "wall_s": time.perf_counter() - start,
            "peak_rss_mb": usage.ru_maxrss / 1024, "log": str(log_path),
            "command": shlex.join(cmd)}


def tf_keras_missing(folder: str) -> str:
    """One skip line when `folder` holds no unpacked tf_keras package, else ""."""
    if not (Path(folder) / "tf_keras" / "__init__.py").is_file():
        return (f"TIM-Net on our TensorFlow skipped: no tf_keras package in {folder} "
                f"(--peer_tf_keras); see benchmarks/bench_timnet_peer.py for how to unpack one")
    return ""


def peer_under_our_tf(folder: str) -> tuple[Path, dict]:
    """(python, extra environment) that run TIM-Net's Keras 2 code on our TensorFlow."""
    path = os.pathsep.join(p for p in (str(Path(folder).resolve()),
                                       os.environ.get("PYTHONPATH", "")) if p)
    return Path(sys.executable), {"TF_USE_LEGACY_KERAS": "1", "PYTHONPATH": path}


def check_peer_folds(python: Path, home: Path, data_dir: Path, meta: dict) -> str:
    """Ask the peer for its KFold test rows; raise when they differ from ours."""
    out = data_dir / "peer_folds.json"
    run = run_measured([str(python), str(DRIVER), "--timnet_home", str(home), "--data",
                        str(data_dir), "--check_folds", "--output", str(out)],
                       data_dir / "peer_folds.log")
    if run["rc"] != 0:
        raise RuntimeError(f"peer fold check failed, see {run['log']}")
    if json.loads(out.read_text())["test_index"] != meta["test_index"]:
        raise RuntimeError("TIM-Net's KFold test rows differ from ours")
    return f"the peer's {N_FOLDS} KFold test folds equal ours (make_folds, fold_seed {FOLD_SEED})"


def run_peer(args, folds: list[int], data_dir: Path, python: Path, env: dict | None = None,
             tag: str = "") -> dict:
    """Train TIM-Net on `folds` with `python` and `env`; the report's system entry (rows,
    their mean, process info)."""
    home = peer_paths()[0]
    out = data_dir / f"peer{tag}_e{args.epochs}.json"
    run = run_measured([str(python), str(DRIVER), "--timnet_home", str(home), "--data",
                        str(data_dir), "--folds", ",".join(map(str, folds)), "--epochs",
                        str(args.epochs), "--threads", str(args.threads), "--output", str(out)],
                       data_dir / f"peer{tag}_e{args.epochs}.log", env=env)
    if run["rc"] != 0:
        raise RuntimeError(f"TIM-Net driver failed (rc {run['rc']}), see {run['log']}")
    result = json.loads(out.read_text())
    commit = home / "COMMIT"
    run.update(environment=result["environment"], timnet_home=str(home),
               timnet_commit=commit.read_text().strip() if commit.exists() else "")
    rows = [{k: v for k, v in row.items() if k != "test_index"} for row in result["folds"]]
    return {"rows": rows, "mean": mean_row(rows, run["peak_rss_mb"]), **run}


def run_ours(args, folds: list[int], feature_set: str, run_id: str) -> dict:
    """Train our --preset timnet on `folds`; the process info."""
    cmd = [sys.executable, "-m", "src.training.main", "--mode", "train", "--data", args.corpus,
           "--feature_type", "MFCC", "--feature_set", args.ours_feature_set or feature_set,
           "--preset", "timnet", "--epoch", str(args.epochs), "--folds",
           ",".join(map(str, folds)), "--run_id", run_id, "--overwrite", "--verbose", "0",
           "--threads", str(args.threads), *shlex.split(args.ours_flags)]
    run = run_measured(cmd, data_root() / args.corpus / f"ours_{run_id}.log",
                       env={"SER_DATA_ROOT": "/work/shared/data"})
    if run["rc"] != 0:
        raise RuntimeError(f"our training failed (rc {run['rc']}), see {run['log']}")
    return run


def collect_ours(corpus: str, run_id: str, folds: list[int], meta: dict,
                 peak_mb: float | None) -> list[dict]:
    """Rows of our run's finished folds (result.json), each checked to have the peer's test
    files; a fold not finished yet is left out."""
    from src.training.config import RunConfig

    cfg = RunConfig()
    model_dir = Path(cfg.models_root) / corpus / "MFCC" / run_id
    metrics_path = Path(cfg.results_root) / run_id / "metrics.json"
    if peak_mb is None and metrics_path.exists():
        peak_mb = json.loads(metrics_path.read_text()).get("peak_memory_mb") or None
    rows = []
    for fold in folds:
        path = model_dir / f"fold_{fold:02d}" / "result.json"
        if not path.exists():
            print(f"ours: {path} not finished, fold {fold} left out")
            continue
        r = json.loads(path.read_text())
        expected = [meta["file_ids"][i] for i in meta["test_index"][fold - 1]]
        if list(map(str, r["file_ids"])) != expected:
            raise RuntimeError(f"{path}: its test files are not fold {fold} of the export")
        m = r["metrics"]
        rows.append({"fold": fold, "accuracy": m["war"], "uar": m["uar"],
                     "macro_f1": m["macro_f1"], "epochs": r["epochs"],
                     "seconds_per_epoch_median": r["seconds_per_epoch"],
                     "seconds_per_epoch": None, "peak_rss_mb": peak_mb,
                     "fit_seconds": r["seconds"], "n_train": r["n_train"],
                     "n_test": r["n_test"]})
    return rows


def mean_row(rows: list[dict], process_peak: float | None) -> dict:
    """Mean of every metric over rows (None where no row has it); peak RSS = the process's."""
    out = {}
    for key in METRICS:
        values = [r[key] for r in rows if r.get(key) is not None]
        out[key] = sum(values) / len(values) if values else None
    out["peak_rss_mb"] = process_peak if process_peak is not None else out["peak_rss_mb"]
    return out


def markdown(report: dict) -> str:
    """The side-by-side table (one line per fold and system, then the means) and notes."""
    def cell(value, fmt, scale=1.0):
        return "–" if value is None else format(value * scale, fmt)

    lines = [f"# TIM-Net peer benchmark: {report['corpus']} ({report['feature_set']}), "
             f"{report['epochs']} epochs, {report['threads']} thread(s)", "",
             "| fold | system | epochs | WAR % | UAR % | macro-F1 % | s/epoch median "
             "| s/epoch 2..N | peak RSS MB |", "|---|---|---|---|---|---|---|---|---|"]
    systems = {k: v for k, v in report["systems"].items() if v.get("rows")}
    keyed = [(row["fold"], name, row) for name, s in systems.items() for row in s["rows"]]
    keyed += [("mean", name, s["mean"]) for name, s in systems.items()]
    for fold, name, r in sorted(keyed, key=lambda k: (k[0] == "mean", str(k[0]).zfill(3), k[1])):
        lines.append(f"| {fold} | {name} | {r.get('epochs', '')} | "
                     f"{cell(r['accuracy'], '.2f', 100)} | "
                     f"{cell(r['uar'], '.2f', 100)} | {cell(r['macro_f1'], '.2f', 100)} | "
                     f"{cell(r['seconds_per_epoch_median'], '.2f')} | "
                     f"{cell(r['seconds_per_epoch'], '.2f')} | {cell(r['peak_rss_mb'], '.0f')} |")
    lines += ["", f"Machine: {report['machine']['platform']}, {report['machine']['cpus']} CPUs. "
              f"{report['fold_check']}.", ""]
    for name, s in report["systems"].items():
        lines.append(f"- {name}: " + (s.get("skipped") or f"`{s['command']}`"))
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    from src.training.config import RunConfig

    folds = list(RunConfig(folds=args.folds).fold_numbers())
    feature_set = args.feature_set or timnet_feature_set(args.corpus)
    data_dir = data_root() / args.corpus
    meta = export_features(args.corpus, feature_set, data_dir)
    print(f"exported {args.corpus} {meta['feature_set']} {meta['shape']} -> {data_dir}")
    report = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                          "python": platform.python_version()},
              "corpus": args.corpus, "feature_set": meta["feature_set"], "epochs": args.epochs,
              "threads": args.threads, "folds": folds, "fold_check": "fold check not run",
              "command": shlex.join([sys.executable, "-m", "benchmarks.bench_timnet_peer"]
                                    + (argv if argv is not None else sys.argv[1:])),
              "systems": {"ours": {}, "timnet": {}}}
    home, venv_python = peer_paths()
    # system -> (skip line or "", python, extra environment, file tag)
    peers = {"timnet": ("skipped (--skip_peer)" if args.skip_peer
                        else peer_missing(home, venv_python), venv_python, None, "")}
    if args.peer_tf_keras:
        python, env = peer_under_our_tf(args.peer_tf_keras)
        peers["timnet-our-tf"] = (tf_keras_missing(args.peer_tf_keras)
                                  or peer_missing(home, python), python, env, "-our-tf")
    folds_checked = False
    for name, (skip, python, env, tag) in peers.items():
        if skip:
            print(skip)
            report["systems"][name] = {"skipped": skip}
            continue
        if not folds_checked:  # by the first peer that runs, before it trains
            report["fold_check"] = check_peer_folds(python, home, data_dir, meta)
            folds_checked = True
        report["systems"][name] = run_peer(args, folds, data_dir, python, env, tag)
    if args.skip_ours:
        report["systems"]["ours"] = {"skipped": "skipped (--skip_ours)"}
    else:
        variant = "-variant" if args.ours_feature_set or args.ours_flags else ""
        run_id = args.ours_run_id or f"bench-peer-{args.corpus.lower()}-e{args.epochs}{variant}"
        run = {"command": f"collected run {run_id}"} if args.ours_run_id else \
            run_ours(args, folds, feature_set, run_id)
        rows = collect_ours(args.corpus, run_id, folds, meta, run.get("peak_rss_mb"))
        report["systems"]["ours"] = {"rows": rows, "run_id": run_id,
                                     "mean": mean_row(rows, run.get("peak_rss_mb")), **run}
    write_report(report, markdown(report), args.output, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
