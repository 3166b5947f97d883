"""Inference latency and throughput of one model on a 3 s utterance (150 frames), batch 1 and 64.

    python -m benchmarks.bench_inference [--preset light default] [--n 50] [--threads 0]
        [--output FILE]

For each preset, an MFCC model (EMODB's 7 classes and input size; randomly initialised, which
does not change the timing) is measured three ways, each against a naive baseline:

  model           batch 1, (1, 150, 40): a tf.function-compiled call with a fixed input
                  signature (ours) vs `model.predict()` per utterance (baseline);
  features+model  a ~3 s wav file (the EMODB file closest to 3 s, else a synthetic tone written
                  to a temporary folder): `extract_file` + the compiled call (ours) vs
                  librosa.load + librosa.feature.mfcc + `model.predict()` (baseline);
  batch 64        throughput in utterances/s: the compiled call on (64, 150, 40) (ours) vs
                  `model.predict()` per utterance over 64 utterances (baseline), and
                  `model.predict()` on the whole batch for reference.

Every timing is wall time of one call including the conversion of NumPy inputs and the
`.numpy()` of the output (so GPU work is finished), after warm-up calls; median and p90 over
`--n` calls. Targets (CPU, per utterance): model < 10 ms, features + model < 30 ms.
Prints a Markdown table and writes benchmarks/results_inference.json.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is first imported

import numpy as np  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results_inference.json"
EMODB_WAV = REPO_ROOT.parent / "shared" / "data" / "EMODB" / "wav"
FRAMES = 150          # 3 s at 50 frames/s
N_MFCC = 40
N_CLASSES = 7         # EMODB
THROUGHPUT_BATCH = 64
WARMUP = 3
TARGET_MODEL_MS = 10.0
TARGET_FEATURES_MODEL_MS = 30.0


# ---------------------------------------------------------------------------- helpers
def time_calls(fn, n: int, warmup: int = WARMUP) -> dict:
    """Call `fn()` `warmup` times untimed, then `n` times; milliseconds per call."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return latency_stats(times)


def latency_stats(times_ms) -> dict:
    times = np.asarray(times_ms, dtype=np.float64)
    return {"median_ms": round(float(np.median(times)), 3),
            "p90_ms": round(float(np.percentile(times, 90)), 3),
            "min_ms": round(float(times.min()), 3), "n": int(len(times))}


def make_inputs(batch: int, frames: int = FRAMES, dim: int = N_MFCC,
                seed: int = 0) -> dict[str, np.ndarray]:
    """Model inputs of `batch` utterances of `frames` frames: {"MFCC": (B, T, D), "length"}."""
    from src.training.data import LENGTH_INPUT

    rng = np.random.default_rng(seed)
    return {"MFCC": rng.standard_normal((batch, frames, dim)).astype(np.float32),
            LENGTH_INPUT: np.full((batch,), frames, dtype=np.int32)}


def features_to_inputs(mfcc: np.ndarray) -> dict[str, np.ndarray]:
    """(T, D) features of one file -> batch-1 model inputs."""
    from src.training.data import LENGTH_INPUT

    return {"MFCC": mfcc[None].astype(np.float32, copy=False),
            LENGTH_INPUT: np.array([mfcc.shape[0]], dtype=np.int32)}


def compiled_call(model, dim: int = N_MFCC):
    """tf.function of model(x, training=False) with a fixed input signature (B and T free),
    so one trace serves every batch size and length."""
    import tensorflow as tf

    from src.training.data import LENGTH_INPUT

    signature = [{"MFCC": tf.TensorSpec((None, None, dim), tf.float32),
                  LENGTH_INPUT: tf.TensorSpec((None,), tf.int32)}]

    @tf.function(input_signature=signature)
    def call(inputs):
        return model(inputs, training=False)

    return call


def pick_wav(tmp_dir: str | Path, seconds: float = 3.0) -> tuple[Path, str]:
    """The EMODB file closest to `seconds` when the corpus is present, else a synthetic tone."""
    import soundfile as sf

    if EMODB_WAV.is_dir():
        files = sorted(EMODB_WAV.glob("*.wav"))
        if files:
            best = min(files, key=lambda f: abs(sf.info(f).duration - seconds))
            return best, f"EMODB {best.name} ({sf.info(best).duration:.2f} s)"
    sr = 16000
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(0)
    y = 0.4 * np.sin(2 * np.pi * 220 * t) + 0.02 * rng.standard_normal(len(t))
    path = Path(tmp_dir) / "synthetic_3s.wav"
    sf.write(path, y.astype(np.float32), sr, subtype="PCM_16")
    return path, f"synthetic tone ({seconds:.2f} s, 16 kHz)"


def build_inference_model(preset: str, seed: int = 0):
    import keras

    from src.models.model import PRESETS, build_model

    keras.utils.set_random_seed(seed)
    stats = {"MFCC": (np.zeros(N_MFCC, np.float32), np.ones(N_MFCC, np.float32))}
    return build_model({"MFCC": N_MFCC}, N_CLASSES, PRESETS[preset], norm_stats=stats)


# ---------------------------------------------------------------------------- benchmark
def bench_preset(preset: str, n: int, wav: Path, batch: int = THROUGHPUT_BATCH) -> dict:
    import librosa

    from src.data_processing.config import ExtractionConfig
    from src.data_processing.features import extract_file

    model = build_inference_model(preset)
    call = compiled_call(model)
    config = ExtractionConfig()
    one = make_inputs(1)
    many = make_inputs(batch)
    singles = [{k: v[i:i + 1] for k, v in many.items()} for i in range(batch)]

    def ours_model():
        return call(one).numpy()

    def base_model():
        return model.predict(one, verbose=0)

    def ours_features():
        mfcc = extract_file(wav, config, ["MFCC"])["MFCC"]
        return call(features_to_inputs(mfcc)).numpy()

    mfcc_kwargs = dict(n_mfcc=config.n_mfcc, n_fft=config.n_fft, hop_length=config.hop_length,
                       win_length=config.win_length, n_mels=config.n_mels, fmin=config.fmin,
                       fmax=config.fmax)

    def base_features():
        y, sr = librosa.load(wav, sr=config.sample_rate)
        mfcc = librosa.feature.mfcc(y=y, sr=sr, **mfcc_kwargs).T
        return model.predict(features_to_inputs(mfcc), verbose=0)

    def ours_batch():
        return call(many).numpy()

    def base_batch_loop():
        return [model.predict(x, verbose=0) for x in singles]

    def predict_batch():
        return model.predict(many, batch_size=batch, verbose=0)

    # the two feature paths agree (same settings), so their timing compares like with like
    a = extract_file(wav, config, ["MFCC"])["MFCC"]
    y, sr = librosa.load(wav, sr=config.sample_rate)
    b = librosa.feature.mfcc(y=y, sr=sr, **mfcc_kwargs).T
    features_match = bool(a.shape == b.shape and np.allclose(a, b, atol=1e-2, rtol=1e-3))
    out_ours, out_base = ours_model(), base_model()
    outputs_match = bool(np.allclose(out_ours, out_base, atol=1e-5))

    loops = max(3, n // 10)  # batch-64 timings: fewer calls, each much longer
    rows = {
        "model_ours": time_calls(ours_model, n),
        "model_baseline": time_calls(base_model, n),
        "features_model_ours": time_calls(ours_features, n),
        "features_model_baseline": time_calls(base_features, n),
        "batch_ours": time_calls(ours_batch, loops, warmup=2),
        "batch_baseline_predict_per_utterance": time_calls(base_batch_loop, max(2, loops // 2),
                                                           warmup=1),
        "batch_predict_whole_batch": time_calls(predict_batch, loops, warmup=2),
    }
    for key in ("batch_ours", "batch_baseline_predict_per_utterance",
                "batch_predict_whole_batch"):
        rows[key]["utterances_per_s"] = round(batch * 1000.0 / rows[key]["median_ms"], 1)
    return {"preset": preset, "n_params": int(model.count_params()), "frames": FRAMES,
            "feature_frames": int(a.shape[0]), "features_match_librosa": features_match,
            "outputs_match_predict": outputs_match, "timings": rows,
            "meets_target_model": rows["model_ours"]["median_ms"] < TARGET_MODEL_MS,
            "meets_target_features_model":
                rows["features_model_ours"]["median_ms"] < TARGET_FEATURES_MODEL_MS,
            "speedup_model": ratio(rows["model_baseline"], rows["model_ours"]),
            "speedup_features_model": ratio(rows["features_model_baseline"],
                                            rows["features_model_ours"]),
            "speedup_batch": ratio(rows["batch_baseline_predict_per_utterance"],
                                   rows["batch_ours"])}


def ratio(baseline: dict, ours: dict) -> float:
    return round(baseline["median_ms"] / ours["median_ms"], 2)


def markdown_table(results: list[dict], batch: int = THROUGHPUT_BATCH) -> str:
    lines = ["| preset | measure | ours | baseline | speedup | target |", "|---|---|---|---|---|---|"]
    for r in results:
        t = r["timings"]

        def ms(row):
            return f"{row['median_ms']:.2f} ms (p90 {row['p90_ms']:.2f})"

        ok_model = "met" if r["meets_target_model"] else "missed"
        ok_feat = "met" if r["meets_target_features_model"] else "missed"
        lines += [
            f"| {r['preset']} | model, batch 1, {r['frames']} frames | {ms(t['model_ours'])} | "
            f"{ms(t['model_baseline'])} (predict) | {r['speedup_model']:.2f}x | "
            f"< {TARGET_MODEL_MS:.0f} ms: {ok_model} |",
            f"| {r['preset']} | features + model, 3 s wav | {ms(t['features_model_ours'])} | "
            f"{ms(t['features_model_baseline'])} (librosa + predict) | "
            f"{r['speedup_features_model']:.2f}x | < {TARGET_FEATURES_MODEL_MS:.0f} ms: "
            f"{ok_feat} |",
            f"| {r['preset']} | throughput, batch {batch} | "
            f"{t['batch_ours']['utterances_per_s']:.0f} utt/s | "
            f"{t['batch_baseline_predict_per_utterance']['utterances_per_s']:.0f} utt/s "
            f"(predict per utterance); "
            f"{t['batch_predict_whole_batch']['utterances_per_s']:.0f} utt/s (predict on the "
            f"batch) | {r['speedup_batch']:.2f}x | - |",
        ]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", nargs="+", default=["light", "default"],
                        choices=["light", "default"])
    parser.add_argument("--n", type=int, default=50, help="timed calls per measurement")
    parser.add_argument("--threads", type=int, default=0, help="TF threads (0 = all cores)")
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("--n must be at least 1")
    from benchmarks.bench_training import peak_rss_mb, set_threads

    set_threads(args.threads)
    import tensorflow as tf

    from src.utils.io import write_json

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench_inference_") as tmp:
        wav, wav_note = pick_wav(tmp)
        results = []
        for preset in args.preset:
            start = time.perf_counter()
            results.append(bench_preset(preset, args.n, wav))
            print(f"{preset}: done in {time.perf_counter() - start:.0f} s", flush=True)
    load_after = os.getloadavg()
    gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
    table = markdown_table(results)
    print(f"\nwav: {wav_note}; n = {args.n} timed calls after {WARMUP} warm-up calls; "
          f"{os.cpu_count()} CPU cores, threads {args.threads or 'all'}, "
          f"{'GPU: ' + ', '.join(gpus) if gpus else 'CPU only'}; randomly initialised models; "
          f"load average before/after {load_before[0]:.2f} / {load_after[0]:.2f}\n")
    print(table)
    write_json(args.output, {
        "wav": wav_note, "n": args.n, "warmup": WARMUP, "threads": args.threads,
        "frames": FRAMES, "throughput_batch": THROUGHPUT_BATCH,
        "targets_ms": {"model": TARGET_MODEL_MS, "features_model": TARGET_FEATURES_MODEL_MS},
        "cpu_count": os.cpu_count(), "python": sys.version.split()[0],
        "machine": platform.machine(), "gpus": gpus, "tensorflow": tf.__version__,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "load_average_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        "results": results, "markdown": table,
        "note": ("randomly initialised MFCC models (timing does not depend on the weights); "
                 "ours = tf.function with a fixed input signature, extract_file for features; "
                 "baseline = model.predict per utterance, librosa.load + librosa.feature.mfcc; "
                 "wall ms per call incl. NumPy conversion and reading the output back"),
    })
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
