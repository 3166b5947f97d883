"""What cutting utterances short costs: the RAVDESS copy here is cut at 2.39 s (issue 22).

    python -m benchmarks.bench_truncation [--corpus EMODB] [--speech 1.4,2.0]
        [--feature_type ComParE] [--model logreg] [--work_dir DIR] [--audit_only]

Every file of the RAVDESS copy in $SER_DATA_ROOT is 38230 samples long (2.39 s at 16 kHz; the
48 kHz originals run about 3-5 s), speech starts about 0.9 s in, and most files are still
speaking at the last sample: the copy holds about 1.4 s of each sentence. TIM-Net read the
originals whole. This benchmark

1. audits both corpora's durations (`audit`): distinct file lengths, speech onset and span
   (10 ms frames within 30 dB of the file's loudest frame), and the share of files whose last
   50 ms is within 20 dB of that peak (cut while speaking);
2. measures what such a cut costs on a corpus held whole (`--corpus`, default EMODB): copies
   that keep each file up to S seconds after its speech onset (`--speech`, seconds), written to
   --work_dir (default /work/scratch/truncation; never into the repository or the corpora), each
   listed in a CSV manifest in the same order as the whole corpus, so every variant gets the
   same KFold(10, shuffle, random_state 46) folds; then the normal pipeline on each:
   `run_data_processing --dataset CSV` and `src.training.main --mode train --model MODEL
   --speaker_norm --fold_seed 46`.

Prints a Markdown table and writes benchmarks/results_truncation.json.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
FRAME_S = 0.01
ACTIVE_DB = 30.0   # a frame is speech when within this many dB of the file's loudest frame
CUT_DB = 20.0      # a file is cut while speaking when its last 50 ms is within this of the peak


def frame_db(signal: np.ndarray, sample_rate: int) -> np.ndarray:
    """(F,) RMS level in dB of consecutive 10 ms frames of a mono `signal` (N,)."""
    hop = int(round(sample_rate * FRAME_S))
    frames = signal[:len(signal) // hop * hop].reshape(-1, hop)
    return 20.0 * np.log10(np.sqrt(np.mean(np.square(frames), axis=1)) + 1e-9)


def speech_span(signal: np.ndarray, sample_rate: int) -> tuple[float, float, bool]:
    """(onset s, end s, cut while speaking) of a mono `signal`: the first and last 10 ms frame
    within ACTIVE_DB of the loudest one, and whether the last 50 ms is within CUT_DB of it."""
    db = frame_db(signal, sample_rate)
    active = np.flatnonzero(db > db.max() - ACTIVE_DB)
    return (active[0] * FRAME_S, (active[-1] + 1) * FRAME_S,
            bool(db[-5:].max() > db.max() - CUT_DB))


def audit(paths: list[str]) -> dict:
    """Duration figures of the audio files `paths` (see the module docstring)."""
    import soundfile as sf

    lengths, onsets, spans, cut = [], [], [], []
    for path in paths:
        signal, rate = sf.read(path, dtype="float32", always_2d=True)
        onset, end, speaking = speech_span(signal.mean(axis=1), rate)
        lengths.append(len(signal) / rate)
        onsets.append(onset)
        spans.append(end - onset)
        cut.append(speaking)
    lengths = np.array(lengths)
    return {"files": len(paths), "distinct_lengths": int(len(np.unique(lengths))),
            "duration_s_mean": float(lengths.mean()), "duration_s_max": float(lengths.max()),
            "onset_s_mean": float(np.mean(onsets)), "speech_s_mean": float(np.mean(spans)),
            "speech_s_p10_50_90": [float(v) for v in np.percentile(spans, [10, 50, 90])],
            "cut_while_speaking": float(np.mean(cut))}


def write_cut_copy(table, speech_s: float, out_dir: Path) -> Path:
    """Copies of `table`'s files (columns path, label, speaker) kept up to `speech_s` seconds
    after each file's speech onset, as PCM16 in `out_dir`; returns their manifest's path."""
    import soundfile as sf

    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (path, label, speaker) in enumerate(table[["path", "label", "speaker"]].itertuples(
            index=False)):
        signal, rate = sf.read(path, dtype="float32")
        onset, _, _ = speech_span(signal if signal.ndim == 1 else signal.mean(axis=1), rate)
        target = out_dir / f"{i:05d}_{Path(path).name}"
        if not target.exists():
            sf.write(target, signal[:int(round((onset + speech_s) * rate))], rate,
                     subtype="PCM_16")
        rows.append((str(target), label, speaker))
    return _manifest(rows, out_dir / "manifest.csv")


def _manifest(rows: list[tuple], path: Path) -> Path:
    import pandas as pd

    pd.DataFrame(rows, columns=["path", "label", "speaker"]).to_csv(path, index=False)
    return path


def _run(args: list[str]) -> None:
    print("+", " ".join(args), flush=True)
    subprocess.run([sys.executable, *args], cwd=REPO_ROOT, check=True,
                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})


def measure(name: str, manifest: Path, feature_type: str, model: str) -> dict:
    """Extract `feature_type` of the manifest's files as corpus `name`, train `model` on
    KFold 46 with --speaker_norm, return its metrics."""
    _run(["-m", "src.data_processing.run_data_processing", "--dataset", "CSV", "--manifest",
          str(manifest), "--name", name, "--features", feature_type])
    run_id = f"trunc-{name.lower()}-{model}-{feature_type}"
    _run(["-m", "src.training.main", "--mode", "train", "--data", name, "--feature_type",
          feature_type, "--model", model, "--speaker_norm", "--fold_seed", "46", "--run_id",
          run_id, "--verbose", "0"])
    metrics = json.loads((REPO_ROOT / "results" / run_id / "metrics.json").read_text())
    return {"run_id": run_id, **{k: metrics[k] for k in (
        "war_mean", "war_std", "uar_mean", "uar_std", "macro_f1_mean")}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="EMODB")
    parser.add_argument("--speech", default="1.4,2.0",
                        help="seconds of speech kept after the onset, comma separated")
    parser.add_argument("--feature_type", default="ComParE")
    parser.add_argument("--model", default="logreg")
    parser.add_argument("--work_dir", default="/work/scratch/truncation")
    parser.add_argument("--audit_only", action="store_true")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO_ROOT))
    from src.data_processing.corpora import load_corpus

    tables = {name: load_corpus(name) for name in ("EMODB", "RAVDESS")}
    audits = {name: audit(list(table["path"])) for name, table in tables.items()}
    print("| corpus | files | distinct lengths | duration s (mean / max) | speech onset s | "
          "speech s (mean; p10 / p50 / p90) | cut while speaking |")
    print("|---|---|---|---|---|---|---|")
    for name, a in audits.items():
        p10, p50, p90 = a["speech_s_p10_50_90"]
        print(f"| {name} | {a['files']} | {a['distinct_lengths']} | {a['duration_s_mean']:.2f} /"
              f" {a['duration_s_max']:.2f} | {a['onset_s_mean']:.2f} | {a['speech_s_mean']:.2f};"
              f" {p10:.2f} / {p50:.2f} / {p90:.2f} | {100 * a['cut_while_speaking']:.1f} % |")
    result = {"date": datetime.date.today().isoformat(), "audit": audits, "rows": []}
    if not args.audit_only:
        table = tables[args.corpus.upper()]
        work = Path(args.work_dir)
        work.mkdir(parents=True, exist_ok=True)
        variants = [("whole", None)] + [(s, float(s)) for s in args.speech.split(",")]
        for label, seconds in variants:
            name = f"{args.corpus.upper()}CUT{label.replace('.', '')}"
            if seconds is None:
                manifest = _manifest(list(table[["path", "label", "speaker"]].itertuples(
                    index=False)), work / "whole.csv")
                kept = audits[args.corpus.upper()]
            else:
                manifest = write_cut_copy(table, seconds, work / name)
                kept = audit(list(pd_paths(manifest)))
            row = {"variant": label, "corpus": name, "speech_s_mean": kept["speech_s_mean"],
                   "cut_while_speaking": kept["cut_while_speaking"],
                   **measure(name, manifest, args.feature_type, args.model)}
            result["rows"].append(row)
        print(f"\n{args.corpus.upper()}, {args.model} on {args.feature_type}, --speaker_norm, "
              "KFold(10, shuffle, 46)")
        print("| speech kept after onset | speech s (mean) | cut while speaking | WAR | UAR | "
              "macro-F1 | run |")
        print("|---|---|---|---|---|---|---|")
        for r in result["rows"]:
            print(f"| {r['variant']} | {r['speech_s_mean']:.2f} | "
                  f"{100 * r['cut_while_speaking']:.1f} % | {100 * r['war_mean']:.2f} +/- "
                  f"{100 * r['war_std']:.2f} | {100 * r['uar_mean']:.2f} | "
                  f"{100 * r['macro_f1_mean']:.2f} | {r['run_id']} |")
    out = HERE / "results_truncation.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {out.relative_to(REPO_ROOT)}")
    return 0


def pd_paths(manifest: Path) -> list[str]:
    import pandas as pd

    return list(pd.read_csv(manifest)["path"])


if __name__ == "__main__":
    sys.exit(main())
