"""Soak benchmark: many predictions on hostile files, and training killed with SIGKILL and resumed.

    python -m benchmarks.soak [--predicts 200] [--cycles 20] [--seconds_limit 600] [--seed 0]
        [--output benchmarks/results_soak.json] [--keep]

Not a test: CI does not run it (it is slow and random by design); run it by hand after changes
to extraction, prediction or training's resume logic. Everything is written under a temporary
folder (kept with --keep), except the JSON summary.

1. Setup: an EMODB-like synthetic corpus (tests.synthetic.write_emodb_like, 3 speakers x 3
   pitch-coded emotions x 3 files), MFCC extracted in-process (run_data_processing.main), one
   tiny model (tests.synthetic.TINY flags, 2 folds, 2 epochs) trained in-process
   (src.training.main.main).
2. Predict: `--predicts` sequential in-process `--mode predict` calls, each on 1-4 fresh files
   of random kinds: valid (a 0.6-1.4 s tone), stereo 48 kHz, silent (1 s of zeros), 10 ms,
   truncated (a valid file cut inside its header), corrupt (random bytes named .wav), empty.
   A call must either exit 0 with an --output CSV of one row per input, in input order, each row
   either predicted (an emotion, no reason) or failed (no emotion, a reason), or exit non-zero
   with exactly one line printed on stderr; never raise, never print a traceback or log one.
   Valid and stereo 48 kHz files must be predicted; corrupt, empty and truncated ones must fail.
3. Kill: `--cycles` times the same training command (a subprocess: TINY, 4 folds, 4 epochs,
   --threads 1) is started, resuming the run, and killed with SIGKILL a random 1-6 s after a
   clock starts; the clock starts, in turn, when one more fold has finished (a result.json
   appears: the kill lands in the next fold or the report, and finished folds exist), when the
   run's config.json appears (training has begun), again after a finished fold, and at launch
   (the kill often lands in start-up). Before each kill the finished folds (those with
   result.json) are hashed (result.json, split.json, model.*); after each kill and at the end
   every hashed file must be unchanged and every *.json under its final name must parse. When
   a run is complete at the start of a cycle, that cycle starts a new run id. At the end the
   current run is rerun to completion: it must exit 0 with every fold's result.json and model
   file.
4. Prints a table and writes the JSON summary (counts, seconds, violations); exit status 1 when
   there is any violation, 0 otherwise. --seconds_limit stops the predict and kill phases early
   (the summary says so); the final completion run gets what time is left (at least 60 s).

Example, a short run on a 2-core CPU shared with other jobs
(`python -m benchmarks.soak --predicts 10 --cycles 2`, 2 min 11 s, exit 0; "failed (exit 1)"
counts files of calls where no file could be used, "failed (row)" failed files of calls that
predicted others; silent and 10 ms files are refused with a reason, which is allowed):

    setup (corpus, extraction, tiny 2-fold run)  38.3 s
    predict calls                                10 in 5.0 s
    predict exit codes                           0: 4, 1: 6
      files 10ms                                 failed (exit 1) 1, failed (row) 2
      files corrupt                              failed (exit 1) 3, failed (row) 2
      files empty                                failed (exit 1) 3, failed (row) 2
      files silent                               failed (exit 1) 3, failed (row) 1
      files stereo48k                            predicted 5
      files truncated                            failed (exit 1) 3, failed (row) 2
      files valid                                predicted 1
    kill cycles                                  2 in 84.0 s
      killed during                              3-6 s after a new result.json: 1, 3-6 s after config.json: 1
      finished-fold files hashed                 3
      final run                                  exit 0, 4 folds, 54.9 s
    stopped early                                no
    violations                                   0
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is first imported

import numpy as np
import pandas as pd
import soundfile as sf

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

RESULTS = Path(__file__).resolve().parent / "results_soak.json"
KINDS = ("valid", "stereo48k", "silent", "10ms", "truncated", "corrupt", "empty")
MUST_PREDICT = {"valid", "stereo48k"}
MUST_FAIL = {"truncated", "corrupt", "empty"}
KILL_FOLDS, KILL_EPOCHS = 4, 4
# When each cycle's 1-6 s kill clock starts: at launch (the kill often lands in start-up), when
# the run's config.json appears (training has begun), or when one more fold has finished (the
# kill lands just after a fold was written, and finished folds exist to be hashed).
CLOCKS = ("a new result.json", "config.json", "a new result.json", "launch")
SETUP_FOLDS, SETUP_EPOCHS = 2, 2


# ------------------------------------------------------------------------------ audio files
def write_input(path: Path, kind: str, rng: np.random.Generator) -> Path:
    """One predict input of `kind` at `path` (.wav)."""
    from tests.synthetic import SR, tone

    if kind == "valid":
        sf.write(path, tone(rng.uniform(200, 1600), rng.uniform(0.6, 1.4), rng), SR)
    elif kind == "stereo48k":
        t = np.arange(48000) / 48000  # 1 s at 48 kHz
        mono = (0.4 * np.sin(2 * np.pi * rng.uniform(200, 1600) * t)).astype(np.float32)
        sf.write(path, np.stack([mono, 0.8 * mono], axis=1), 48000)
    elif kind == "silent":
        sf.write(path, np.zeros(SR, np.float32), SR)
    elif kind == "10ms":
        sf.write(path, tone(440.0, 0.01, rng), SR)
    elif kind == "truncated":
        buffer = io.BytesIO()
        sf.write(buffer, tone(440.0, 1.0, rng), SR, format="WAV")
        path.write_bytes(buffer.getvalue()[:int(rng.integers(8, 44))])
    elif kind == "corrupt":
        path.write_bytes(rng.integers(0, 256, int(rng.integers(16, 4096)), np.uint8).tobytes())
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        raise ValueError(kind)
    return path


# ------------------------------------------------------------------------------ in-process
def call(main, argv: list[str]) -> tuple[int, str, str]:
    """main(argv) with stdout and stderr captured: (exit code, stdout, stderr). An exception
    escaping main is returned as code None with its traceback in stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse errors exit instead of returning
            code = exc.code if isinstance(exc.code, int) else 2
        except BaseException:  # noqa: BLE001 - recorded as a violation
            import traceback

            traceback.print_exc()
            code = None
    return code, out.getvalue(), err.getvalue()


class LogWatch(logging.Handler):
    """Root-logger handler that writes every record to a file and counts those carrying a
    traceback (exc_info)."""

    def __init__(self, path: Path):
        super().__init__(logging.INFO)
        self.file = logging.FileHandler(path)
        self.file.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self.with_traceback: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.file.emit(record)
        if record.exc_info:
            self.with_traceback.append(record.getMessage())


def setup(work: Path) -> tuple[Path, Path]:
    """Synthetic corpus, MFCC features and one tiny trained run: (features root, run folder)."""
    from src.data_processing.run_data_processing import main as extract_main
    from src.training.main import main as train_main
    from tests.synthetic import TINY, write_emodb_like

    raw = write_emodb_like(work / "raw", speakers=("03", "08", "10"), per_class=3)
    features = work / "features"
    code, _, err = call(extract_main, ["--dataset", "EMODB", "--raw_dir", str(raw),
                                       "--features_root", str(features), "--features", "MFCC",
                                       "--workers", "0", "--no_progress"])
    if code != 0:
        raise SystemExit(f"soak: setup extraction failed ({code}): {err.strip()}")
    code, _, err = call(train_main, ["--mode", "train", "--data", "EMODB", "--features_root",
                                     str(features), "--results_root", str(work / "results"),
                                     "--models_root", str(work / "models"), "--epoch",
                                     str(SETUP_EPOCHS), "--split_fold", str(SETUP_FOLDS),
                                     "--run_id", "soak", *TINY])
    if code != 0:
        raise SystemExit(f"soak: setup training failed ({code}): {err.strip()}")
    return features, work / "models" / "EMODB" / "MFCC" / "soak"


def predict_phase(run_dir: Path, work: Path, n: int, rng: np.random.Generator,
                  deadline: float, watch: LogWatch) -> dict:
    from src.training.main import main as train_main

    codes, by_kind, violations = Counter(), defaultdict(Counter), []
    done = 0
    for i in range(n):
        if time.time() > deadline:
            break
        folder = work / "predict" / f"{i:04d}"
        folder.mkdir(parents=True)
        kinds = [str(k) for k in rng.choice(KINDS, size=int(rng.integers(1, 5)))]
        files = [write_input(folder / f"in_{j}_{k}.wav", k, rng) for j, k in enumerate(kinds)]
        output = folder / "out.csv"
        before = len(watch.with_traceback)
        code, _, err = call(train_main, ["--mode", "predict", "--test_path", str(run_dir),
                                         "--audio", *map(str, files), "--output", str(output)])
        done += 1
        codes[str(code)] += 1
        where = f"predict call {i} ({', '.join(kinds)})"
        if "Traceback" in err or code is None:
            violations.append(f"{where}: exit {code}, traceback: {err.strip()[-300:]}")
            continue
        if len(watch.with_traceback) > before:
            violations.append(f"{where}: logged a traceback: {watch.with_traceback[-1]}")
        if code != 0:
            lines = [line for line in err.splitlines() if line.strip()]
            if len(lines) != 1:
                violations.append(f"{where}: exit {code} with {len(lines)} stderr lines: {err!r}")
            for kind in kinds:
                by_kind[kind][f"failed (exit {code})"] += 1
            if any(k in MUST_PREDICT for k in kinds):
                violations.append(f"{where}: exit {code} although a {MUST_PREDICT} file was "
                                  f"given: {err.strip()}")
            continue
        try:
            table = pd.read_csv(output, dtype=str, keep_default_na=False)
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            violations.append(f"{where}: exit 0 but --output unreadable: {exc}")
            continue
        if list(table["file"]) != list(map(str, files)):
            violations.append(f"{where}: --output rows {list(table['file'])} != inputs")
            continue
        for kind, row in zip(kinds, table.to_dict("records")):
            predicted, reason = bool(row["emotion"]), row.get("reason", "")
            if predicted == bool(reason):
                violations.append(f"{where}: {kind} row has emotion {row['emotion']!r} and "
                                  f"reason {reason!r}")
            by_kind[kind]["predicted" if predicted else "failed (row)"] += 1
            if kind in MUST_PREDICT and not predicted:
                violations.append(f"{where}: {kind} file not predicted: {reason}")
            if kind in MUST_FAIL and predicted:
                violations.append(f"{where}: {kind} file predicted as {row['emotion']}")
    return {"calls": done, "exit_codes": dict(codes),
            "files_by_kind": {k: dict(v) for k, v in sorted(by_kind.items())},
            "violations": violations}


# ---------------------------------------------------------------------------------- kills
def delay_bucket(delay: float) -> str:
    return "1-3 s" if delay < 3 else "3-6 s"


def hash_finished(run_dir: Path) -> dict[str, str]:
    """sha256 of result.json, split.json and model.* of every finished fold of `run_dir`."""
    hashes = {}
    for result in sorted(run_dir.glob("fold_*/result.json")):
        for path in sorted(result.parent.iterdir()):
            if path.name in ("result.json", "split.json") or path.name.startswith("model."):
                hashes[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes


def check_hashes(recorded: dict[str, str], when: str) -> list[str]:
    bad = []
    for name, digest in recorded.items():
        path = Path(name)
        if not path.exists():
            bad.append(f"{when}: {name} of a finished fold disappeared")
        elif hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            bad.append(f"{when}: {name} of a finished fold changed")
    return bad


def check_json(root: Path, when: str) -> list[str]:
    bad = []
    for path in root.rglob("*.json"):
        if ".tmp" in path.name:
            continue
        try:
            json.loads(path.read_text())
        except ValueError as exc:
            bad.append(f"{when}: {path} is not complete JSON ({exc})")
    return bad


def train_command(features: Path, out: Path, run_id: str) -> list[str]:
    from tests.synthetic import TINY

    return [sys.executable, "-m", "src.training.main", "--mode", "train", "--data", "EMODB",
            "--features_root", str(features), "--results_root", str(out / "results"),
            "--models_root", str(out / "models"), "--epoch", str(KILL_EPOCHS), "--split_fold",
            str(KILL_FOLDS), "--run_id", run_id, "--threads", "1", *TINY]


def kill_phase(features: Path, work: Path, cycles: int, rng: random.Random, deadline: float
               ) -> dict:
    out = work / "kill"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    logs = out / "logs"
    logs.mkdir(parents=True)
    run_index, recorded, violations = 1, {}, []
    killed_during, folds_at_kill, finished_runs, done = Counter(), [], 0, 0

    def run_dir(index: int) -> Path:
        return out / "models" / "EMODB" / "MFCC" / f"killed_{index}"

    for cycle in range(cycles):
        if time.time() > deadline:
            break
        if len(list(run_dir(run_index).glob("fold_*/result.json"))) == KILL_FOLDS:
            finished_runs += 1  # the last cycle's run completed before its kill: start another
            run_index += 1
        command = train_command(features, out, f"killed_{run_index}")
        with open(logs / f"cycle_{cycle:03d}.log", "wb") as log_file:
            proc = subprocess.Popen(command, env=env, cwd=REPO_ROOT, stdout=log_file,
                                    stderr=subprocess.STDOUT)
            clock = CLOCKS[cycle % len(CLOCKS)]
            delay = rng.uniform(1.0, 6.0)
            started = time.time()
            if clock != "launch":  # wait for the run's config.json or for one more finished fold
                before = len(list(run_dir(run_index).glob("fold_*/result.json")))
                config = run_dir(run_index) / "config.json"
                while proc.poll() is None and time.time() < started + 300 and not (
                        config.exists() if clock == "config.json" else
                        len(list(run_dir(run_index).glob("fold_*/result.json"))) > before):
                    time.sleep(0.05)
                started = time.time()
            while proc.poll() is None and time.time() < started + delay:
                time.sleep(0.05)
            if proc.poll() is None:
                recorded.update(hash_finished(run_dir(run_index)))
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                during = f"killed {delay:.1f} s after {clock}"
                killed_during[f"{delay_bucket(delay)} after {clock}"] += 1
            else:
                during = f"exited {proc.returncode} before the kill"
                killed_during["exited before kill"] += 1
                if proc.returncode != 0:
                    violations.append(f"cycle {cycle}: training exited {proc.returncode} "
                                      f"unkilled (see {logs / f'cycle_{cycle:03d}.log'})")
                recorded.update(hash_finished(run_dir(run_index)))
        done += 1
        finished = sorted(p.parent.name for p in run_dir(run_index).glob("fold_*/result.json"))
        folds_at_kill.append({"cycle": cycle, "run": f"killed_{run_index}", "delay_s":
                              round(delay, 2), "clock_from": clock, "outcome": during,
                              "finished_folds": len(finished)})
        violations += check_hashes(recorded, f"after cycle {cycle}")
        violations += check_json(out, f"after cycle {cycle}")

    final = {"run": f"killed_{run_index}", "exit": None, "seconds": None, "folds": None}
    timeout = max(60.0, deadline - time.time())
    started = time.time()
    with open(logs / "final.log", "wb") as log_file:
        try:
            code = subprocess.run(train_command(features, out, f"killed_{run_index}"), env=env,
                                  cwd=REPO_ROOT, stdout=log_file, stderr=subprocess.STDOUT,
                                  timeout=timeout, check=False).returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    final.update(exit=code, seconds=round(time.time() - started, 1))
    stopped = None
    if code == "timeout":
        stopped = f"final completion run stopped by --seconds_limit after {timeout:.0f} s"
    else:
        folds = [d for d in sorted(run_dir(run_index).glob("fold_*"))
                 if (d / "result.json").is_file() and list(d.glob("model.*"))]
        final["folds"] = len(folds)
        if code != 0:
            violations.append(f"final run exited {code} (see {logs / 'final.log'})")
        if len(folds) != KILL_FOLDS:
            violations.append(f"final run has {len(folds)} of {KILL_FOLDS} finished folds")
    violations += check_hashes(recorded, "after the final run")
    violations += check_json(out, "after the final run")
    return {"cycles": done, "killed_during": dict(killed_during), "runs_completed_in_cycles":
            finished_runs, "hashed_files": len(recorded), "per_cycle": folds_at_kill,
            "final": final, "stopped": stopped, "violations": violations}


# ------------------------------------------------------------------------------------ main
def table(summary: dict) -> str:
    p, k = summary["predict"], summary["kill"]
    rows = [("setup (corpus, extraction, tiny 2-fold run)", f"{summary['seconds']['setup']:.1f} s"),
            ("predict calls", f"{p['calls']} in {summary['seconds']['predict']:.1f} s"),
            ("predict exit codes", ", ".join(f"{c}: {n}" for c, n in sorted(p["exit_codes"].items()))),
            *[(f"  files {kind}", ", ".join(f"{o} {n}" for o, n in sorted(v.items())))
              for kind, v in p["files_by_kind"].items()],
            ("kill cycles", f"{k['cycles']} in {summary['seconds']['kill']:.1f} s"),
            ("  killed during", ", ".join(f"{w}: {n}" for w, n in sorted(k["killed_during"].items()))),
            ("  finished-fold files hashed", str(k["hashed_files"])),
            ("  final run", (f"exit {k['final']['exit']}, {k['final']['folds']} folds, "
                             f"{k['final']['seconds']} s")),
            ("stopped early", summary["stopped_early"] or "no"),
            ("violations", str(len(summary["violations"])))]
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.split("\n")[0])
    p.add_argument("--predicts", type=int, default=200)
    p.add_argument("--cycles", type=int, default=20)
    p.add_argument("--seconds_limit", type=float, default=600.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default=str(RESULTS))
    p.add_argument("--keep", action="store_true", help="keep the work folder (printed)")
    args = p.parse_args(argv)

    begin = time.time()
    deadline = begin + args.seconds_limit
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    watch = LogWatch(work / "soak.log")
    logging.basicConfig(level=logging.INFO, handlers=[watch], force=True)
    np_rng, rng = np.random.default_rng(args.seed), random.Random(args.seed)
    seconds = {}
    try:
        t = time.time()
        features, run_dir = setup(work)
        seconds["setup"] = time.time() - t
        t = time.time()
        predict = predict_phase(run_dir, work, args.predicts, np_rng, deadline, watch)
        seconds["predict"] = time.time() - t
        t = time.time()
        kill = kill_phase(features, work, args.cycles, rng, deadline)
        seconds["kill"] = time.time() - t
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    stopped = []
    if predict["calls"] < args.predicts:
        stopped.append(f"{predict['calls']} of {args.predicts} predict calls")
    if kill["cycles"] < args.cycles:
        stopped.append(f"{kill['cycles']} of {args.cycles} kill cycles")
    if kill["stopped"]:
        stopped.append(kill["stopped"])
    summary = {
        "settings": {"predicts": args.predicts, "cycles": args.cycles,
                     "seconds_limit": args.seconds_limit, "seed": args.seed,
                     "kill_run": {"folds": KILL_FOLDS, "epochs": KILL_EPOCHS},
                     "cpu_count": os.cpu_count()},
        "seconds": {k: round(v, 1) for k, v in {**seconds, "total": time.time() - begin}.items()},
        "stopped_early": ("--seconds_limit reached: " + "; ".join(stopped)) if stopped else None,
        "predict": predict, "kill": kill,
        "violations": predict["violations"] + kill["violations"],
    }
    Path(args.output).write_text(json.dumps(summary, indent=2) + "\n")
    print(table(summary))
    for violation in summary["violations"]:
        print(f"VIOLATION {violation}")
    if args.keep:
        print(f"work folder kept: {work}")
    print(f"summary written to {args.output}")
    return 1 if summary["violations"] else 0


if __name__ == "__main__":
    sys.exit(main())
