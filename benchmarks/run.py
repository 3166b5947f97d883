"""Run every benchmark and write benchmarks/results.json and benchmarks/RESULTS.md.

    python -m benchmarks.run [--quick] [--threads N] [--accuracy [--dry_run] [--results_doc PATH]]
                             [--skip_speed]

Speed (default): feature extraction (benchmarks.bench_extraction), training
(benchmarks.bench_training) and inference (benchmarks.bench_inference), each as a subprocess
writing its own JSON (benchmarks/results_{extraction,training,inference}.json), then collected
into benchmarks/results.json and benchmarks/RESULTS.md (tables, machine info, the commands).
`--quick`: extraction with one worker and one repeat, training of the light preset on MFCC for 3
epochs, inference of the light preset with n = 20 (a few minutes on 2 cores). When TensorFlow
sees a GPU, training and inference run twice: on the CPU (CUDA_VISIBLE_DEVICES=-1, the numbers
the targets refer to) and on the GPU (results_*_gpu.json); extraction uses no GPU.

Accuracy (`--accuracy`, hours): extracts the features it needs, then runs every command of
ACCURACY_RUNS (the accuracy settings of docs/RESULTS.md) through `python -m src.training.main` with
a fixed run id `bench-acc-<name>` (re-running resumes at the first unfinished fold), and collects
each results/<run-id>/metrics.json into benchmarks/accuracy.md and into the accuracy table of
docs/RESULTS.md: only the text between the lines `<!-- accuracy-table:begin -->` and
`<!-- accuracy-table:end -->` of docs/RESULTS.md (`--results_doc PATH`, alias `--readme`, for
another file) is rewritten, atomically, with the date, the machine, the tables and the exact
commands; a file without the markers is an error (exit 2) before anything runs. `--dry_run`
prints the commands and collects whatever metrics already exist without training anything.
`--results_root` / `--models_root` point the collection elsewhere (unfinished runs show the folds
finished so far, counted from saved_models/).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
RESULTS_JSON = HERE / "results.json"
RESULTS_MD = HERE / "RESULTS.md"
ACCURACY_MD = HERE / "accuracy.md"
RESULTS_ROOT = REPO_ROOT / "results"

EXTRACTION_ARGS = {"quick": ["--workers", "1", "--repeats", "1"], "full": []}
TRAINING_ARGS = {"quick": ["--presets", "light", "--features", "MFCC", "--epochs", "3"],
                 "full": ["--presets", "light", "default", "--features", "MFCC", "FUSION",
                          "--epochs", "4"]}
INFERENCE_ARGS = {"quick": ["--preset", "light", "--n", "20"],
                  "full": ["--preset", "light", "default", "--n", "50"]}

# The same-corpus accuracy settings of docs/RESULTS.md: light preset, lr 1e-3, a fixed 60-epoch
# cosine schedule, last epoch kept (validation-based early stopping on ~50 files stopped too early).
ACCURACY_FLAGS = ["--preset", "light", "--lr", "1e-3", "--epoch", "60", "--patience", "0",
                  "--verbose", "0"]
ACCURACY_PREP = [
    ["-m", "src.data_processing.run_data_processing", "--dataset", "EMODB",
     "--features", "MFCC,LogMel"],
    ["-m", "src.data_processing.run_data_processing", "--dataset", "RAVDESS",
     "--features", "MFCC,LogMel"],
]
# Cross-corpus runs: silence-trimmed MFCCs (RAVDESS clips carry ~1 s of silence at each end, EMODB's
# do not), the five classes of published cross-corpus tables, 3 source folds, and each direction's
# best normalisation (docs/RESULTS.md, Cross corpus): per-corpus statistics R->E, per-speaker E->R.
# The adaptation methods are the best of each direction (LMMD R->E, DANN and LMMD E->R).
_TRIMMED_MFCC = "dca6b070"  # ExtractionConfig(trim_silence=True).feature_hash("MFCC")
_FIVE_CLASSES = "angry,fear,happy,neutral,sad"
ACCURACY_PREP += [
    ["-m", "src.data_processing.run_data_processing", "--dataset", name, "--features", "MFCC",
     "--trim_silence"] for name in ("EMODB", "RAVDESS")]
_TRAIN = ["--mode", "train"]
_CROSS = ["--mode", "train-lmmd", "--feature_type", "MFCC", "--feature_set", _TRIMMED_MFCC,
          "--label_set", _FIVE_CLASSES, "--split_fold", "10", "--max_folds", "3"]
_E2R = _CROSS + ["--data", "EMODB", "--target_data", "RAVDESS", "--speaker_norm"]
_R2E = _CROSS + ["--data", "RAVDESS", "--target_data", "EMODB", "--domain_norm"]
ACCURACY_RUNS: list[dict] = [
    {"name": "emodb-mfcc-kfold",
     "args": _TRAIN + ["--data", "EMODB", "--feature_type", "MFCC", "--protocol", "kfold"]},
    {"name": "ravdess-mfcc-kfold",
     "args": _TRAIN + ["--data", "RAVDESS", "--feature_type", "MFCC", "--protocol", "kfold"]},
    {"name": "emodb-mfcc-loso",
     "args": _TRAIN + ["--data", "EMODB", "--feature_type", "MFCC", "--protocol", "loso"]},
    {"name": "emodb-fusion-kfold",
     "args": _TRAIN + ["--data", "EMODB", "--feature_type", "FUSION", "--protocol", "kfold"]},
    {"name": "ravdess-fusion-kfold",
     "args": _TRAIN + ["--data", "RAVDESS", "--feature_type", "FUSION", "--protocol", "kfold"]},
    {"name": "emodb-fusion-loso",
     "args": _TRAIN + ["--data", "EMODB", "--feature_type", "FUSION", "--protocol", "loso"]},
    *({"name": f"emodb-to-ravdess-{method}", "args": _E2R + ["--da_method", method]}
      for method in ("none", "lmmd", "dann")),
    *({"name": f"ravdess-to-emodb-{method}", "args": _R2E + ["--da_method", method]}
      for method in ("none", "lmmd")),
]
# Utterance-level baselines and the fused model, in the same benchmark run: openSMILE
# functionals, per-speaker standardisation (no label read), the anchor of the paralinguistic-
# features issue being logreg on ComParE under EMODB leave-one-speaker-out.
ACCURACY_PREP += [
    ["-m", "src.data_processing.run_data_processing", "--dataset", name, "--features",
     "eGeMAPS,ComParE"] for name in ("EMODB", "RAVDESS")]
_UTT = _TRAIN + ["--speaker_norm"]
ACCURACY_RUNS += [
    *({"name": f"emodb-{feature.lower()}-{model}-loso",
       "group": "baseline" if model in ("svm", "logreg") else "ours",
       "args": _UTT + ["--data", "EMODB", "--feature_type", feature, "--model", model,
                       "--protocol", "loso"]}
      for feature, model in (("ComParE", "logreg"), ("ComParE", "svm"), ("eGeMAPS", "logreg"),
                             ("eGeMAPS", "svm"), ("ComParE", "mlp"))),
    {"name": "emodb-fused-mfcc-compare-loso",
     "args": _UTT + ["--data", "EMODB", "--feature_type", "FUSION", "--fusion_streams",
                     "MFCC,ComParE", "--protocol", "loso"]},
    *({"name": f"{data.lower()}-compare-logreg-{protocol}", "group": "baseline",
       "args": _UTT + ["--data", data, "--feature_type", "ComParE", "--model", "logreg",
                       "--protocol", protocol]}
      for data, protocol in (("EMODB", "kfold"), ("RAVDESS", "kfold"), ("RAVDESS", "loso"))),
]
# The MLP's adaptation recipe (DSAN's LMMD weight 1.0 on the 128-d embedding; no label
# smoothing, whose softened target predictions blur LMMD's class weights: docs/RESULTS.md).
_MLP_DA = ["--model", "mlp", "--label_smoothing", "0"]
_SIX_CLASSES = "angry,disgust,fear,happy,neutral,sad"
# The session-13 recipe: the MLP self-trained 4 rounds, round 1 labelled by a label-free-C logreg.
_TEACHER_SELFTRAIN = ["--lmmd_weight", "1.0", "--self_training", "4", "--st_teacher", "logreg",
                      "--epoch", "60", "--patience", "0", "--lr", "1e-3"]
_CROSS_UTT = ["--mode", "train-lmmd", "--feature_type", "eGeMAPS", "--label_set", _FIVE_CLASSES,
              "--split_fold", "10", "--max_folds", "3", "--speaker_norm"]
for _source, _target in (("RAVDESS", "EMODB"), ("EMODB", "RAVDESS")):
    _direction = f"{_source.lower()}-to-{_target.lower()}-egemaps"
    _args = _CROSS_UTT + ["--data", _source, "--target_data", _target]
    ACCURACY_RUNS += [
        *({"name": f"{_direction}-{model}", "group": "baseline",
           "args": _args + ["--model", model, "--da_method", "none"]}
          for model in ("logreg", "svm")),
        *({"name": f"{_direction}-mlp-{method}",
           "args": _args + _MLP_DA + ["--da_method", method, "--lmmd_weight", weight]}
          for method, weight in (("none", "1.0"), ("lmmd", "1.0"), ("dann", "0.3"))),
        # no adaptation, C chosen by the balance of the target's predicted class mix
        {"name": f"{_direction}-logreg-labelfree-c", "group": "baseline",
         "args": _args + ["--model", "logreg", "--da_method", "none", "--select_C",
                          "label_free"]},
        # ours: the same, then 4 rounds of class-balanced self-training on the target
        {"name": f"{_direction}-logreg-labelfree-c-selftrain4",
         "args": _args + ["--model", "logreg", "--da_method", "none", "--select_C",
                          "label_free", "--self_training", "4"]},
        # ours: the MLP, self-trained from the balanced pseudo-labels of that logreg (teacher),
        # with and without LMMD under the same code path
        *({"name": f"{_direction}-mlp-{method}-teacher-selftrain4",
           "args": _args + _MLP_DA + ["--da_method", method] + _TEACHER_SELFTRAIN}
          for method in ("none", "lmmd")),
    ]
    # The same rows on ComParE_2016 functionals (6373 dims; see "ComParE functionals across
    # corpora" in docs/RESULTS.md for the standardisation bug that kept them at chance before).
    _compare = [a if a != "eGeMAPS" else "ComParE" for a in _args]
    _compare_direction = _direction.replace("egemaps", "compare")
    ACCURACY_RUNS += [
        *({"name": f"{_compare_direction}-{model}", "group": "baseline",
           "args": _compare + ["--model", model, "--da_method", "none"]}
          for model in ("logreg", "svm")),
        *({"name": f"{_compare_direction}-mlp-{method}",
           "args": _compare + _MLP_DA + ["--da_method", method, "--lmmd_weight", weight]}
          for method, weight in (("none", "1.0"), ("lmmd", "1.0"), ("dann", "0.3"))),
    ]
    _six = [a if a != _FIVE_CLASSES else _SIX_CLASSES for a in _args]
    ACCURACY_RUNS += [
        *({"name": f"{_direction}-six-mlp-{method}",
           "args": _six + _MLP_DA + ["--da_method", method, "--lmmd_weight", "1.0"]}
          for method in ("none", "lmmd")),
        *({"name": f"{_direction}-six-mlp-{method}-teacher-selftrain4",
           "args": _six + _MLP_DA + ["--da_method", method] + _TEACHER_SELFTRAIN}
          for method in ("none", "lmmd"))]
    # The cost of adaptation: the same MLP trained on the same source training files (same
    # classes, folds and normalisation) without a target, for the s/epoch ratio of the
    # cross-corpus table (same_corpus_reference).
    ACCURACY_RUNS.append(
        {"name": f"{_source.lower()}-egemaps-mlp-five-kfold-reference",
         "args": _UTT + ["--data", _source, "--feature_type", "eGeMAPS", "--label_set",
                         _FIVE_CLASSES, "--split_fold", "10", "--max_folds", "3"] + _MLP_DA})


# Late fusion of finished runs of this list (src.experiments.late_fusion): "fuses" names them;
# "args" are the first fused run's, for the row's corpus and protocol.
_OPENSMILE_LOSO = [f"emodb-{feature.lower()}-{model}-loso" for feature in ("ComParE", "eGeMAPS")
                   for model in ("logreg", "svm")]
ACCURACY_RUNS.append(
    {"name": "emodb-opensmile-late-fusion-loso", "fuses": _OPENSMILE_LOSO,
     "model": "late fusion", "feature": "ComParE + eGeMAPS, --speaker_norm",
     "args": next(r["args"] for r in ACCURACY_RUNS if r["name"] == _OPENSMILE_LOSO[0])})


def accuracy_command(run: dict) -> list[str]:
    """argv (after the interpreter) of one accuracy run, with its fixed run id."""
    if "fuses" in run:
        return ["-m", "src.experiments.late_fusion",
                *(f"results/bench-acc-{name}" for name in run["fuses"]),
                "--name", f"bench-acc-{run['name']}"]
    return ["-m", "src.training.main", *run["args"], *ACCURACY_FLAGS,
            "--run_id", f"bench-acc-{run['name']}"]


def show(argv: list[str]) -> str:
    """A command as a person would type it (`python -m ...`)."""
    return "python " + " ".join(shlex.quote(a) for a in argv)


# ---------------------------------------------------------------------------- speed
def speed_commands(quick: bool, threads: int = 0) -> list[tuple[str, list[str]]]:
    """(name, argv after the interpreter) of the three speed benchmarks."""
    mode = "quick" if quick else "full"
    extra = ["--threads", str(threads)] if threads else []
    return [("extraction", ["-m", "benchmarks.bench_extraction", *EXTRACTION_ARGS[mode]]),
            ("training", ["-m", "benchmarks.bench_training", *TRAINING_ARGS[mode], *extra]),
            ("inference", ["-m", "benchmarks.bench_inference", *INFERENCE_ARGS[mode], *extra])]


def tf_devices() -> dict:
    """TensorFlow version and visible GPUs, asked in a subprocess (this process stays TF-free)."""
    code = ("import os, json; os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3'); "
            "import tensorflow as tf; print(json.dumps({'tensorflow': tf.__version__, "
            "'gpus': [d.name for d in tf.config.list_physical_devices('GPU')]}))")
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             cwd=REPO_ROOT, timeout=300, check=True).stdout
        return json.loads(out.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError) as err:
        return {"tensorflow": None, "gpus": [], "error": str(err)}


def machine_info(devices: dict) -> dict:
    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gib = None
    try:
        memory_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    return {"cpu_count": os.cpu_count(), "cpu_model": cpu_model, "memory_gib": memory_gib,
            "platform": platform.platform(), "python": sys.version.split()[0],
            "tensorflow": devices.get("tensorflow"), "gpus": devices.get("gpus", []),
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def output_path(name: str, device: str) -> Path:
    suffix = "" if device == "cpu" else f"_{device}"
    return HERE / f"results_{name}{suffix}.json"


def run_speed(quick: bool, threads: int, devices: dict) -> dict:
    """Run the benchmarks (CPU, and GPU when visible); returns what goes into results.json."""
    targets = ["cpu"] + (["gpu"] if devices.get("gpus") else [])
    collected = {"commands": [], "failures": [], "extraction": None,
                 "training": {}, "inference": {}}
    for name, argv in speed_commands(quick, threads):
        for device in (["cpu"] if name == "extraction" else targets):
            env = dict(os.environ)
            out = output_path(name, device)
            argv_here = list(argv)
            if name != "extraction":
                argv_here += ["--output", str(out.relative_to(REPO_ROOT))]  # cwd: REPO_ROOT
            hide_gpu = device == "cpu" and name != "extraction" and bool(devices.get("gpus"))
            if hide_gpu:
                env["CUDA_VISIBLE_DEVICES"] = "-1"
            text = ("CUDA_VISIBLE_DEVICES=-1 " if hide_gpu else "") + show(argv_here)
            print(f"\n== {name} ({device}): {text}", flush=True)
            start = time.perf_counter()
            status = subprocess.run([sys.executable, *argv_here], cwd=REPO_ROOT, env=env)
            seconds = round(time.perf_counter() - start, 1)
            collected["commands"].append({"benchmark": name, "device": device,
                                          "command": text, "seconds": seconds,
                                          "returncode": status.returncode})
            if status.returncode != 0 or not out.exists():
                collected["failures"].append(f"{name} ({device}): exit {status.returncode}")
                continue
            data = json.loads(out.read_text())
            if name == "extraction":
                collected["extraction"] = data
            else:
                collected[name][device] = data
    return collected


def extraction_table(data: dict) -> str:
    lines = ["| features | workers | seconds | x real time | x real time per CPU s |",
             "|---|---|---|---|---|"]
    for row in data.get("results", []):
        lines.append(f"| {row['features']} | {row['workers']} | {row['seconds']:.2f} | "
                     f"{row['x_real_time']:.0f} | {row['x_real_time_per_cpu']:.0f} |")
    return "\n".join(lines)


def render_markdown(results: dict) -> str:
    """RESULTS.md from the collected results."""
    m = results["machine"]
    gpus = ", ".join(m.get("gpus") or []) or "none visible to TensorFlow"
    lines = [
        "# Benchmark results",
        "",
        f"Written by `python -m benchmarks.run{' --quick' if results.get('quick') else ''}` on "
        f"{m['date']}. Wall-clock figures depend on what else runs on the machine: the load "
        f"average at the start was {m['load_average'][0]:.2f}.",
        "",
        "| machine | |",
        "|---|---|",
        f"| CPU cores | {m['cpu_count']} |",
        f"| CPU | {m.get('cpu_model') or '-'} |",
        f"| memory | {m.get('memory_gib') or '-'} GiB |",
        f"| platform | {m['platform']} |",
        f"| Python / TensorFlow | {m['python']} / {m.get('tensorflow') or '-'} |",
        f"| GPU | {gpus} |",
        f"| date | {m['date']} |",
        "",
        "## Commands",
        "",
    ]
    for c in results.get("commands", []):
        status = "" if c["returncode"] == 0 else f" (failed: exit {c['returncode']})"
        lines.append(f"- `{c['command']}` ({c['device']}, {c['seconds']:.0f} s){status}")
    if results.get("failures"):
        lines += ["", "**Failed:** " + "; ".join(results["failures"])]
    extraction = results.get("extraction")
    if extraction:
        lines += ["", "## Feature extraction", "",
                  f"{extraction['dataset']}: {extraction['n_files']} files, "
                  f"{extraction['audio_seconds']:.0f} s of audio; best of "
                  f"{extraction['repeats']} run(s); x real time = audio seconds / wall seconds.",
                  "", extraction_table(extraction)]
    for device, data in results.get("training", {}).items():
        lines += ["", f"## Training ({device.upper()})", "",
                  f"{data['dataset']}, batch {data['batch_size']}, {data['epochs']} epochs per "
                  f"run: s/epoch is the median of epochs 2..{data['epochs']} (epoch 1, with "
                  f"tracing, apart); ours = `fit_model` (tf.data, length-sorted batches padded "
                  f"per batch); baseline = eager GradientTape loop over shuffled batches padded "
                  f"to the corpus' longest utterance. Peak memory is each configuration's own "
                  f"process (ru_maxrss). Threads: {data['threads'] or 'all'}.", "",
                  data["markdown"], "",
                  f"10-fold estimate: `{data['kfold_formula']}`, in hours, for E = "
                  f"{', '.join(str(e) for e in data['kfold_epochs'])} (an upper end: early "
                  f"stopping usually ends folds sooner; evaluation not counted)."]
    for device, data in results.get("inference", {}).items():
        lines += ["", f"## Inference ({device.upper()})", "",
                  f"Per utterance, median (p90) of {data['n']} calls after {data['warmup']} "
                  f"warm-up calls; wav: {data['wav']}; randomly initialised MFCC models "
                  f"(weights do not change the timing). Targets: model < "
                  f"{data['targets_ms']['model']:.0f} ms, features + model < "
                  f"{data['targets_ms']['features_model']:.0f} ms on CPU.", "",
                  data["markdown"]]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- accuracy
# The accuracy table lives in docs/RESULTS.md (README.md keeps a short summary and links there).
RESULTS_DOC = REPO_ROOT / "docs" / "RESULTS.md"
README_BEGIN = "<!-- accuracy-table:begin -->"
README_END = "<!-- accuracy-table:end -->"
README_TITLE = "### Accuracy benchmark (`python -m benchmarks.run --accuracy`)"
ACCURACY_COMMAND = "python -m benchmarks.run --accuracy --skip_speed"
# LOSO folds = speakers (EMODB: 10 speakers, RAVDESS: 24 actors) unless --loso_groups is given.
LOSO_FOLDS = {"EMODB": 10, "RAVDESS": 24}
_METRIC_FIELDS = ("war_mean", "war_std", "uar_mean", "uar_std", "macro_f1_mean", "macro_f1_std",
                  "uar_pooled", "war_pooled", "n_folds", "seconds_per_epoch", "epochs", "finished", "machine")


class ReadmeError(Exception):
    """The results document cannot take the accuracy table (missing file or markers): one clear
    line. (Named for where the table used to live.)"""


def _flag(args: list[str], name: str, default: str | None = None) -> str | None:
    return args[args.index(name) + 1] if name in args else default


def run_info(run: dict) -> dict:
    """What an ACCURACY_RUNS entry trains, read from its flags (no TensorFlow import)."""
    from src.training.config import RunConfig

    args = run["args"]
    defaults = RunConfig()
    data = _flag(args, "--data").upper()
    target = (_flag(args, "--target_data") or "").upper() or None
    protocol = _flag(args, "--protocol", defaults.protocol)
    if protocol == "loso":
        total = int(_flag(args, "--loso_groups", "0")) or LOSO_FOLDS.get(data)
    else:
        total = int(_flag(args, "--split_fold", str(defaults.split_fold)))
    max_folds = int(_flag(args, "--max_folds", "0"))
    if max_folds and total:
        total = min(total, max_folds)
    feature = _flag(args, "--feature_type", defaults.feature_type)
    label = feature
    if _flag(args, "--feature_set") == _TRIMMED_MFCC:
        label += ", trimmed"
    for flag in ("--domain_norm", "--speaker_norm"):
        if flag in args:
            label += f", {flag}"
    label_set = RunConfig(label_set=_flag(args, "--label_set") or "").label_list()
    if label_set:
        label += f", {len(label_set)} classes"
    if feature == "FUSION":
        label += f" ({_flag(args, '--fusion_streams', defaults.fusion_streams)})"
    model = run.get("model") or _flag(args, "--model", defaults.model)
    label = run.get("feature", label)
    return {"data": data, "target_data": target, "cross": target is not None,
            "feature_type": feature, "feature": label, "protocol": protocol, "model": model,
            "label_set": ",".join(label_set),
            "baseline": run.get("group") == "baseline",
            "da_method": _flag(args, "--da_method", defaults.da_method) if target else None,
            "folds_total": total}


def finished_folds(models_root: Path, info: dict, run_id: str) -> int:
    """Folds of an unfinished run that have their result.json (how training counts them)."""
    folder = Path(models_root) / info["data"] / info["feature_type"] / run_id
    return len(list(folder.glob("fold_*/result.json")))


def collect_accuracy(results_root: Path = RESULTS_ROOT,
                     models_root: Path | None = None) -> tuple[list[dict], str]:
    """Rows and Markdown (benchmarks/accuracy.md) of every ACCURACY_RUNS entry.

    A run with results/<run-id>/metrics.json is finished; one without it counts the folds that
    training finished under `models_root` (default: the saved_models/ beside `results_root`)."""
    results_root = Path(results_root)
    models_root = Path(models_root) if models_root else results_root.parent / "saved_models"
    rows = []
    for run in ACCURACY_RUNS:
        run_id = f"bench-acc-{run['name']}"
        path = results_root / run_id / "metrics.json"
        info = run_info(run)
        row = {"name": run["name"], "run_id": run_id, "command": show(accuracy_command(run)),
               **info}
        if path.exists():
            metrics = json.loads(path.read_text())
            row.update({k: metrics.get(k) for k in _METRIC_FIELDS})
            row["source"] = metrics.get("source") or {}
            row["source_uar_mean"] = row["source"].get("uar_mean")
            row["folds_done"] = metrics.get("n_folds")
        else:
            row["folds_done"] = finished_folds(models_root, info, run_id)
        rows.append(row)

    def pct(row, key):
        mean, std = row.get(f"{key}_mean"), row.get(f"{key}_std")
        if mean is None:
            return "-"
        return f"{100 * mean:.2f} ± {100 * (std or 0):.2f}"

    lines = ["# Accuracy", "",
             "Commands of `benchmarks.run.ACCURACY_RUNS` (WAR, UAR, macro-F1 in %, mean ± std "
             "over folds; cross-corpus runs: on the whole target corpus, with the held-out "
             "source folds' UAR beside).", "",
             "| run | WAR | UAR | macro-F1 | source UAR | folds | s/epoch | command |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "war_mean" not in r:
            state = "unfinished" if r.get("folds_done") else "not run"
            lines.append(f"| {r['name']} | {state} | | | | {_folds(r)} | | `{r['command']}` |")
            continue
        source = f"{100 * r['source_uar_mean']:.2f}" if r.get("source_uar_mean") is not None \
            else "-"
        spe = f"{r['seconds_per_epoch']:.2f}" if r.get("seconds_per_epoch") else "-"
        lines.append(f"| {r['name']} | {pct(r, 'war')} | {pct(r, 'uar')} | "
                     f"{pct(r, 'macro_f1')} | {source} | {r.get('n_folds')} | {spe} | "
                     f"`{r['command']}` |")
    return rows, "\n".join(lines) + "\n"


def same_corpus_reference(row: dict, rows: list[dict]) -> dict | None:
    """The finished same-corpus row that trains what cross-corpus `row` trains without a target:
    same source corpus, feature type, model and label set (so the same training files per
    epoch), with a seconds_per_epoch; None when the benchmark has none."""
    for other in rows:
        if (not other["cross"] and other.get("seconds_per_epoch")
                and all(other[k] == row[k] for k in ("data", "feature_type", "model",
                                                     "label_set"))):
            return other
    return None


def _epoch_cost(row: dict, rows: list[dict]) -> tuple[str, str]:
    """(s/epoch, `ratio x` against its same-corpus reference) cells of a cross-corpus row."""
    seconds = row.get("seconds_per_epoch")
    if not seconds:
        return "-", "-"
    reference = same_corpus_reference(row, rows)
    if reference is None:
        return f"{seconds:.2f}", "-"
    return (f"{seconds:.2f}", f"{seconds / reference['seconds_per_epoch']:.2f}x "
                              f"({reference['name']})")


def _folds(row: dict) -> str:
    return f"{row.get('folds_done') or 0} / {row.get('folds_total') or '?'}"


def _readme_pct(values: dict, key: str) -> str:
    """`mean +/- std` in % (the notation of docs/RESULTS.md), or `-`."""
    mean, std = values.get(f"{key}_mean"), values.get(f"{key}_std")
    if mean is None:
        return "-"
    return f"{100 * mean:.2f} +/- {100 * (std or 0):.2f}"


def render_readme_block(rows: list[dict], machine: dict) -> str:
    """The text between the accuracy-table markers of docs/RESULTS.md."""
    if not any(r.get("folds_done") or "war_mean" in r for r in rows):
        return "\n".join([
            README_TITLE,
            "No run of the accuracy benchmark has finished yet. This command fills the table in",
            "(hours on 2 cores; run again, it resumes each run at its first unfinished fold):",
            "```bash", ACCURACY_COMMAND, "```"]) + "\n"
    gpus = ", ".join(machine.get("gpus") or []) or "none visible to TensorFlow"
    trained_on = sorted({r["machine"] for r in rows if r.get("machine")})
    lines = [
        README_TITLE,
        f"Written by `python -m benchmarks.run --accuracy` on {machine['date']} (the text between "
        f"the accuracy-table markers is regenerated; edit outside them). Collected on "
        f"{machine['cpu_count']} CPU cores ({machine.get('cpu_model') or 'unknown CPU'}), "
        f"{machine.get('memory_gib') or '-'} GiB, {machine['platform']}, Python "
        f"{machine['python']} / TensorFlow {machine.get('tensorflow') or '-'}, GPU: {gpus}"
        + (f"; runs trained on: {', '.join(trained_on)}" if trained_on else "") + ".",
        "Mean +/- std over the finished folds (population std), in %; folds = finished / total. "
        "Cross corpus: target figures on the whole target corpus, source UAR on the held-out "
        "source folds.",
    ]
    same = [r for r in rows if not r["cross"]]
    cross = [r for r in rows if r["cross"]]
    if same:
        lines += ["", "| run | data | feature | model | protocol | folds | WAR | UAR | macro-F1 "
                      "| UAR, all folds pooled | finished |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in same:
            pooled = (f"{100 * r['uar_pooled']:.2f}" if r.get("uar_pooled") is not None
                      else "-")
            model = r["model"] + (" (baseline)" if r.get("baseline") else "")
            lines.append(f"| {r['name']} | {r['data']} | {r['feature']} | {model} | "
                         f"{r['protocol']} | {_folds(r)} | {_readme_pct(r, 'war')} | "
                         f"{_readme_pct(r, 'uar')} | {_readme_pct(r, 'macro_f1')} | {pooled} | "
                         f"{(r.get('finished') or '-')[:10]} |")
    if cross:
        lines += ["", "s/epoch: median over folds of each fold's median epoch (with "
                      "--self_training: of its last round, whose training set holds the "
                      "pseudo-labelled target files too); x same corpus: against the same "
                      "model trained on the same source files without a target, in the same "
                      "benchmark (the row named).",
                  "", "| run | direction | feature | model | method | folds | target UAR | "
                      "target WAR | target macro-F1 | source UAR | s/epoch | x same corpus | "
                      "finished |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in cross:
            model = r["model"] + (" (baseline)" if r.get("baseline") else "")
            lines.append(f"| {r['name']} | {r['data']} -> {r['target_data']} | {r['feature']} | "
                         f"{model} | {r['da_method']} | {_folds(r)} | {_readme_pct(r, 'uar')} | "
                         f"{_readme_pct(r, 'war')} | {_readme_pct(r, 'macro_f1')} | "
                         f"{_readme_pct(r.get('source') or {}, 'uar')} | "
                         f"{' | '.join(_epoch_cost(r, same))} | "
                         f"{(r.get('finished') or '-')[:10]} |")
    lines += ["", "Commands, from the repository root (feature extraction first; a training "
                  "command run again resumes at its first unfinished fold):", "```bash"]
    lines += [show(argv) for argv in ACCURACY_PREP]
    lines += [r["command"] for r in rows]
    lines += ["```"]
    return "\n".join(lines) + "\n"


def read_readme(path: Path) -> str:
    """The text of the results document (docs/RESULTS.md), checked to have the accuracy-table
    markers once each, in order."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ReadmeError(f"cannot read {path}: {err}") from None
    begin, end = text.count(README_BEGIN), text.count(README_END)
    if begin == 0 or end == 0:
        raise ReadmeError(
            f"{path} has no accuracy table markers: add the lines {README_BEGIN} and "
            f"{README_END} where the table goes (docs/RESULTS.md has them in '## Results')")
    if begin > 1 or end > 1 or text.index(README_END) < text.index(README_BEGIN):
        raise ReadmeError(f"{path}: {README_BEGIN} and {README_END} must appear once each, "
                          f"in that order")
    return text


def replace_readme_block(text: str, block: str) -> str:
    """`text` with everything between the markers replaced by `block` (markers kept)."""
    start = text.index(README_BEGIN) + len(README_BEGIN)
    end = text.index(README_END)
    return text[:start] + "\n" + block.rstrip("\n") + "\n" + text[end:]


def update_readme(path: Path, block: str) -> None:
    """Rewrite only the text between the markers, atomically (bytes outside them unchanged)."""
    from src.utils.io import atomic_path

    text = replace_readme_block(read_readme(path), block)
    with atomic_path(path) as tmp:
        tmp.write_bytes(text.encode("utf-8"))


def run_accuracy(dry_run: bool, results_root: Path = RESULTS_ROOT, readme: Path = RESULTS_DOC,
                 models_root: Path | None = None, devices: dict | None = None,
                 only: list[str] | None = None) -> list[str]:
    """Extract features, run ACCURACY_RUNS, write accuracy.md and the accuracy table of `readme`
    (docs/RESULTS.md); returns the failed commands. Raises ReadmeError before running anything
    when that file lacks the markers."""
    from src.utils.io import write_text

    read_readme(readme)  # fail now, not after hours of training
    failures = []
    env = dict(os.environ)
    shared = REPO_ROOT.parent / "shared" / "data"
    if not env.get("SER_DATA_ROOT") and shared.is_dir():
        env["SER_DATA_ROOT"] = str(shared)  # as scripts/env.sh does
    chosen = [r for r in ACCURACY_RUNS if not only or r["name"] in only]
    for argv in ACCURACY_PREP + [accuracy_command(r) for r in chosen]:
        print(f"\n== {show(argv)}", flush=True)
        if dry_run:
            continue
        status = subprocess.run([sys.executable, *argv], cwd=REPO_ROOT, env=env)
        if status.returncode != 0:
            failures.append(f"{show(argv)}: exit {status.returncode}")
    rows, text = collect_accuracy(results_root, models_root)
    write_text(ACCURACY_MD, text)
    machine = machine_info(tf_devices() if devices is None else devices)
    update_readme(readme, render_readme_block(rows, machine))
    print(f"\n{text}\nwrote {ACCURACY_MD} and the accuracy table of {readme}")
    if failures:
        print("failed:\n  " + "\n  ".join(failures), file=sys.stderr)
    return failures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="light preset, MFCC, 3 epochs, n = 20 (minutes)")
    parser.add_argument("--threads", type=int, default=0,
                        help="TensorFlow threads for training and inference (0 = all cores)")
    parser.add_argument("--accuracy", action="store_true",
                        help="also run ACCURACY_RUNS (hours), write benchmarks/accuracy.md and "
                             "the accuracy table of docs/RESULTS.md")
    parser.add_argument("--dry_run", action="store_true",
                        help="with --accuracy: print the commands, only collect metrics (no "
                             "training, no speed benchmarks)")
    parser.add_argument("--skip_speed", action="store_true", help="no speed benchmarks")
    parser.add_argument("--only", nargs="+", metavar="NAME", default=None,
                        help="with --accuracy: train only these ACCURACY_RUNS names (the table "
                             "still collects every run)")
    parser.add_argument("--results_doc", "--readme", dest="readme", type=Path,
                        default=RESULTS_DOC,
                        help="Markdown file whose accuracy table (between the accuracy-table "
                             "markers) --accuracy rewrites (default: docs/RESULTS.md)")
    parser.add_argument("--results_root", type=Path, default=RESULTS_ROOT,
                        help="where --accuracy reads <run-id>/metrics.json (default results/)")
    parser.add_argument("--models_root", type=Path, default=None,
                        help="where --accuracy counts the finished folds of unfinished runs "
                             "(default: saved_models/ beside --results_root)")
    args = parser.parse_args(argv)

    if args.accuracy:
        try:
            read_readme(args.readme)  # before the speed benchmarks too
        except ReadmeError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    status = 0
    devices = None
    if not (args.skip_speed or args.dry_run):
        start = time.perf_counter()
        devices = tf_devices()
        if devices.get("gpus"):
            print(f"GPU visible to TensorFlow: {', '.join(devices['gpus'])}; training and "
                  f"inference run on the CPU and then on the GPU")
        results = {"machine": machine_info(devices), "quick": args.quick,
                   "threads": args.threads}
        results.update(run_speed(args.quick, args.threads, devices))
        results["seconds"] = round(time.perf_counter() - start, 1)
        from src.utils.io import write_json

        write_json(RESULTS_JSON, results)
        RESULTS_MD.write_text(render_markdown(results))
        print(f"\nwrote {RESULTS_JSON} and {RESULTS_MD} ({results['seconds']:.0f} s)")
        status = 1 if results["failures"] else 0
    if args.accuracy:
        try:
            unknown = sorted(set(args.only or []) - {r["name"] for r in ACCURACY_RUNS})
            if unknown:
                print(f"error: --only: unknown run(s) {', '.join(unknown)}", file=sys.stderr)
                return 2
            failures = run_accuracy(args.dry_run, args.results_root, args.readme,
                                    args.models_root, devices, args.only)
        except ReadmeError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        status = 1 if failures or status else 0
    return status


if __name__ == "__main__":
    sys.exit(main())
