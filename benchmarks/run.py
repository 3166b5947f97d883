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
ACCURACY_RUNS (benchmarks/accuracy_runs.py: the accuracy settings of docs/RESULTS.md) through
`python -m src.training.main` with a fixed run id `bench-acc-<name>` (re-running resumes at the
first unfinished fold), and collects each results/<run-id>/metrics.json into
benchmarks/accuracy.md and into the accuracy table of docs/RESULTS.md
(benchmarks/accuracy_table.py): only the text between the lines `<!-- accuracy-table:begin -->`
and `<!-- accuracy-table:end -->` of docs/RESULTS.md (`--results_doc PATH`, alias `--readme`, for
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
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.accuracy_runs import ACCURACY_PREP, ACCURACY_RUNS, accuracy_command, show
from benchmarks.accuracy_table import (RESULTS_DOC, RESULTS_ROOT, ReadmeError, collect_accuracy,
                                       read_readme, render_readme_block, update_readme)

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
RESULTS_JSON = HERE / "results.json"
RESULTS_MD = HERE / "RESULTS.md"
ACCURACY_MD = HERE / "accuracy.md"

EXTRACTION_ARGS = {"quick": ["--workers", "1", "--repeats", "1"], "full": []}
TRAINING_ARGS = {"quick": ["--presets", "light", "--features", "MFCC", "--epochs", "3"],
                 "full": ["--presets", "light", "default", "--features", "MFCC", "FUSION",
                          "--epochs", "4"]}
INFERENCE_ARGS = {"quick": ["--preset", "light", "--n", "20"],
                  "full": ["--preset", "light", "default", "--n", "50"]}


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
