"""Speed of the feature extraction, in x real time (seconds of audio per second of wall time).

    python -m benchmarks.bench_extraction [--dataset EMODB] [--workers 1 2] [--raw_dir DIR]

Runs `extract_dataset` on the whole corpus for MFCC only, LogMel only, MFCC+LogMel and the
openSMILE sets eGeMAPS and ComParE (functionals) with each worker count, every run into a fresh
temporary features_root (nothing reused), and two baselines: a single-process librosa loop
(librosa.load(sr=16000) + librosa.feature.mfcc + librosa.feature.melspectrogram computed
separately) and audEERING's own single-process loop for each openSMILE set
(`opensmile.Smile(...).process_file` per file). One-time library imports are not timed in
either case (extract_dataset leaves them out of its `seconds`); pool start-up, reading, checks
and the atomic (fsync'ed) .npy writes are timed. Prints a
table and writes benchmarks/results_extraction.json.
"""
from __future__ import annotations

import argparse
import logging
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from src.data_processing.config import ExtractionConfig
from src.data_processing.corpora import load_corpus
from src.data_processing.run_data_processing import extract_dataset
from src.utils.io import write_json

RESULTS = Path(__file__).resolve().parent / "results_extraction.json"
SETS = (("MFCC",), ("LogMel",), ("MFCC", "LogMel"), ("eGeMAPS",), ("ComParE",))


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and its finished children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def baseline(paths: list[str], config: ExtractionConfig) -> tuple[float, float]:
    """Plain librosa loop; returns (wall seconds, CPU seconds)."""
    import librosa

    kwargs = dict(n_fft=config.n_fft, hop_length=config.hop_length, win_length=config.win_length,
                  n_mels=config.n_mels, fmin=config.fmin, fmax=config.fmax)
    y, _ = librosa.load(paths[0], sr=config.sample_rate)  # warm-up: imports
    librosa.feature.mfcc(y=y, sr=config.sample_rate, n_mfcc=config.n_mfcc, **kwargs)
    start, cpu = time.perf_counter(), cpu_seconds()
    for path in paths:
        y, sr = librosa.load(path, sr=config.sample_rate)
        mfcc = librosa.feature.mfcc(y=y, sr=sr, n_mfcc=config.n_mfcc, **kwargs)
        mel = librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=sr, **kwargs))
        assert np.isfinite(mfcc).all() and np.isfinite(mel).all()
    return time.perf_counter() - start, cpu_seconds() - cpu


def smile_baseline(paths: list[str], feature: str) -> tuple[float, float]:
    """audEERING's plain loop: Smile(feature set, functionals).process_file per file, one
    process; returns (wall seconds, CPU seconds)."""
    import opensmile

    from src.data_processing.smile import SMILE_SETS

    smile = opensmile.Smile(feature_set=getattr(opensmile.FeatureSet, SMILE_SETS[feature]),
                            feature_level=opensmile.FeatureLevel.Functionals)
    smile.process_file(paths[0])  # warm-up
    start, cpu = time.perf_counter(), cpu_seconds()
    for path in paths:
        assert np.isfinite(smile.process_file(path).to_numpy()).all()
    return time.perf_counter() - start, cpu_seconds() - cpu


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="EMODB")
    parser.add_argument("--raw_dir", default=None)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=2, help="runs per setting; best is kept")
    parser.add_argument("--no_baseline", action="store_true")
    parser.add_argument("--sets", nargs="+", default=["+".join(s) for s in SETS],
                        help="feature sets to time, e.g. MFCC+LogMel eGeMAPS ComParE")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    raw_dir = args.raw_dir
    if raw_dir is None and not os.environ.get("SER_DATA_ROOT"):
        shared = Path(__file__).resolve().parents[1].parent / "shared" / "data" / args.dataset.upper()
        raw_dir = str(shared) if shared.is_dir() else None
    corpus = load_corpus(args.dataset, raw_dir=raw_dir)
    config = ExtractionConfig()

    rows = []
    audio_seconds = None
    load_before = os.getloadavg()
    for features in [tuple(text.split("+")) for text in args.sets]:
        for workers in args.workers:
            best = None
            for _ in range(args.repeats):
                with tempfile.TemporaryDirectory(prefix="bench_features_") as root:
                    cpu = cpu_seconds()
                    summary = extract_dataset(corpus, config, features, root, args.dataset,
                                              workers=workers, progress=False)
                    cpu = cpu_seconds() - cpu
                info = dict(summary[features[0]], cpu_seconds=cpu)
                assert info["n_failed"] == 0 and info["n_computed"] == len(corpus), info
                if best is None or info["seconds"] < best["seconds"]:
                    best = info
            audio_seconds = best["audio_seconds"]
            rows.append({"features": "+".join(features), "workers": workers,
                         "seconds": round(best["seconds"], 4),
                         "x_real_time": round(best["audio_seconds"] / best["seconds"], 1),
                         "cpu_seconds": round(best["cpu_seconds"], 3),
                         "x_real_time_per_cpu": round(best["audio_seconds"] / best["cpu_seconds"], 1)})
            print(f"{rows[-1]['features']:<12} workers={workers}  {best['seconds']:7.3f} s  "
                  f"{rows[-1]['x_real_time']:8.1f}x real time  "
                  f"({rows[-1]['x_real_time_per_cpu']:.0f}x per CPU second)", flush=True)
    if not args.no_baseline:
        seconds, cpu = baseline(list(corpus["path"]), config)
        rows.append({"features": "librosa baseline (MFCC, LogMel separately)", "workers": 1,
                     "seconds": round(seconds, 4), "x_real_time": round(audio_seconds / seconds, 1),
                     "cpu_seconds": round(cpu, 3),
                     "x_real_time_per_cpu": round(audio_seconds / cpu, 1)})
        print(f"{'baseline':<12} workers=1  {seconds:7.3f} s  {rows[-1]['x_real_time']:8.1f}x "
              f"real time", flush=True)
        for feature in ("eGeMAPS", "ComParE"):
            if not any(feature in text.split("+") for text in args.sets):
                continue
            seconds, cpu = smile_baseline(list(corpus["path"]), feature)
            rows.append({"features": f"opensmile.Smile.process_file loop ({feature})",
                         "workers": 1, "seconds": round(seconds, 4),
                         "x_real_time": round(audio_seconds / seconds, 1),
                         "cpu_seconds": round(cpu, 3),
                         "x_real_time_per_cpu": round(audio_seconds / cpu, 1)})
            print(f"{feature + ' base':<12} workers=1  {seconds:7.3f} s  "
                  f"{rows[-1]['x_real_time']:8.1f}x real time", flush=True)

    print(f"\n{args.dataset.upper()}: {len(corpus)} files, {audio_seconds:.1f} s of audio, "
          f"{os.cpu_count()} CPU cores")
    load_after = os.getloadavg()
    print(f"load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f} "
          f"(other processes on the machine slow the wall-clock figures)")
    print(f"{'features':<44} {'workers':>7} {'seconds':>9} {'x real time':>12} {'x per CPU s':>12}")
    for row in rows:
        print(f"{row['features']:<44} {row['workers']:>7} {row['seconds']:>9.3f} "
              f"{row['x_real_time']:>12.1f} {row['x_real_time_per_cpu']:>12.1f}")
    write_json(RESULTS, {
        "dataset": args.dataset.upper(), "n_files": int(len(corpus)),
        "audio_seconds": round(float(audio_seconds), 3), "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0], "machine": platform.machine(),
        "config": config.to_dict(), "repeats": args.repeats, "results": rows,
        "load_average_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        "note": ("best of `repeats` runs (by wall time); one-time imports not timed; fresh "
                 "features_root per run; x_real_time_per_cpu = audio seconds / CPU seconds of "
                 "this process and its workers, which other load on the machine barely changes"),
    })
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
