"""Experiment tooling: sweep files, grid/sampling/hashing, the sweep runner (with a fake entry
point), and the result analysis (fake run folders), plus one tiny real sweep end to end."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from src.experiments import (ablation, analysis_cli, collect, result_plots, sweep_cli,
                             sweep_grid, sweep_runner, sweep_spec, tables, workbook)

REPO_ROOT = Path(__file__).resolve().parents[1]

# --------------------------------------------------------------------------- sweep files

SWEEP_TEXT = textwrap.dedent("""\
    #!/usr/bin/env bash
    # a comment line
    lr=(3e-4 1e-3)            # trailing comment
    dropout=( 0.1
              0.4   # inside the array
            )
    mode=(train train-lmmd)
    lmmd_weight=(0.5 1.0)
    FIXED="--preset light --epoch 30 --split_fold 5 --max_folds 2"
""")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_parse_sweep_file(tmp_path):
    spec = sweep_spec.parse_sweep_file(write(tmp_path / "mine.sh", SWEEP_TEXT))
    assert spec.name == "mine"
    assert spec.axes == [("lr", ["3e-4", "1e-3"]), ("dropout", ["0.1", "0.4"]),
                         ("mode", ["train", "train-lmmd"]), ("lmmd_weight", ["0.5", "1.0"])]
    assert spec.fixed == ["--preset", "light", "--epoch", "30", "--split_fold", "5",
                          "--max_folds", "2"]
    assert spec.grid_size() == 16
    # the file is valid bash too: sourcing it gives the same arrays
    out = subprocess.run(["bash", "-c", f"source {tmp_path / 'mine.sh'}; echo ${{dropout[@]}}; "
                                        f"echo $FIXED"], capture_output=True, text=True)
    assert out.stdout.splitlines() == ["0.1 0.4", " ".join(spec.fixed)]


def test_variants_quotes_and_shipped_sweeps(tmp_path):
    spec = sweep_spec.parse_sweep_text(textwrap.dedent("""\
        VARIANTS=(
          "--feature_type MFCC"                   # a row
          # "--feature_type HuBERT"               # commented out
          '--feature_type FUSION --fusion_streams MFCC,LogMel'
        )
        use_dtpm=(true false)
    """))
    assert spec.axes[0] == ("VARIANTS", ["--feature_type MFCC",
                                         "--feature_type FUSION --fusion_streams MFCC,LogMel"])
    configs, size = sweep_grid.expand(spec)
    assert size == 4 and len(configs) == 4
    assert {"feature_type": "FUSION", "fusion_streams": "MFCC,LogMel",
            "use_dtpm": "false"} in [c.flags for c in configs]
    # the shipped sweep files parse and expand
    quick, quick_size = sweep_grid.expand(
        sweep_spec.parse_sweep_file(REPO_ROOT / "sweeps" / "quick.sh"))
    assert len(quick) == quick_size >= 8
    assert all(c.flags["data"] == "EMODB" and c.flags["feature_type"] == "MFCC" and
               c.flags["preset"] == "light" for c in quick)
    ablation, _ = sweep_grid.expand(
        sweep_spec.parse_sweep_file(REPO_ROOT / "sweeps" / "ablation.sh"))
    rows = [(c.flags.get("feature_type"), c.flags.get("use_dtpm", "true"),
             c.flags.get("use_attention", "true"), c.flags.get("mode"),
             c.flags.get("head_units", "1024,512")) for c in ablation]
    assert ("MFCC", "false", "false", "train", "1024,512") in rows      # TCN only
    assert ("MFCC", "true", "true", "train-lmmd", "1024,512") in rows   # + LMMD
    assert ("FUSION", "true", "true", "train", "1024,512") in rows
    assert ("MFCC", "false", "false", "train", "none") in rows          # TIM-Net's classifier
    assert len(set(rows)) == len(rows)                          # full model listed once
    default = sweep_spec.parse_sweep_file(REPO_ROOT / "sweeps" / "default.sh")
    assert dict(default.axes)["lr"] == ["1e-4", "3e-4", "1e-3"]
    assert dict(default.axes)["mode"] == ["train", "train-lmmd"]


@pytest.mark.parametrize("text, message", [
    ("lr=(1e-3", "not closed"),
    ("echo hi", "expected name=(values"),
    ("lr=()", "has no values"),
    ("OTHER=\"x\"", "only arrays"),
    ("FIXED=--epoch 3", "quote the flags"),
    ("lr=(1e-3)\nlr=(2e-3)", "given twice"),
])
def test_sweep_file_errors_name_the_line(text, message):
    with pytest.raises(sweep_spec.SweepError, match=re.escape(message)):
        sweep_spec.parse_sweep_text(text)


@pytest.mark.parametrize("text, message", [
    ("learning_rate=(1e-3)", "not a flag"),
    ("lr=(fast)", "--lr 'fast'"),
    ("block=(wide)", "choose from"),
    ('FIXED="--run_id x"', "names runs itself"),
    ('FIXED="--bogus 1"', "not a flag"),
])
def test_bad_keys_and_values_are_rejected_before_running(text, message):
    with pytest.raises(sweep_spec.SweepError, match=re.escape(message)):
        sweep_grid.expand(sweep_spec.parse_sweep_text(text))


def test_grid_size_pruning_and_precedence(tmp_path):
    spec = sweep_spec.parse_sweep_file(write(tmp_path / "g.sh", SWEEP_TEXT))
    configs, size = sweep_grid.expand(spec, ["--epoch", "2"])
    assert size == 16
    # --mode train ignores lmmd_weight: its 8 grid points collapse into 4 configurations
    train = [c for c in configs if c.flags["mode"] == "train"]
    lmmd = [c for c in configs if c.flags["mode"] == "train-lmmd"]
    assert len(train) == 4 and len(lmmd) == 8 and len(configs) == 12
    assert all("lmmd_weight" not in c.flags for c in train)
    assert {c.flags["lmmd_weight"] for c in lmmd} == {"0.5", "1.0"}
    assert all(c.flags["epoch"] == "2" for c in configs)      # extra flags beat FIXED
    assert all(c.flags["preset"] == "light" for c in configs)
    assert {c.flags["lr"] for c in configs} == {"0.0003", "0.001"}  # canonical values
    assert len({c.hash for c in configs}) == 12


def test_hash_is_stable_and_independent_of_flag_order():
    actions = sweep_grid._actions(sweep_grid._cli_parser())
    a = sweep_grid.tokens_to_flags(["--lr", "1e-3", "--dropout", "0.1", "--use_dtpm", "false"],
                              actions, "t")
    b = sweep_grid.tokens_to_flags(["--use_dtpm", "no", "--dropout=0.10", "--lr", "0.001"],
                              actions, "t")
    assert a == b and list(a) != list(b)
    assert sweep_grid.config_hash(a) == sweep_grid.config_hash(b)
    # pinned: changing the identity scheme would orphan every finished sweep run
    assert sweep_grid.config_hash({"lr": "0.001", "dropout": "0.1"}) == "1c5fda57"
    assert sweep_grid.config_hash({"lr": "0.001", "dropout": "0.1"}) == sweep_grid.config_hash(
        {"dropout": "0.1", "lr": "0.001", "threads": "4", "results_root": "/x"})
    assert sweep_grid.config_hash({"lr": "0.001"}) != sweep_grid.config_hash({"lr": "0.002"})
    defaults = sweep_grid.cli_defaults(actions)
    assert sweep_grid.config_hash({"lr": "0.001", "use_dtpm": "true"}, defaults) == \
        sweep_grid.config_hash({"lr": "0.001"}, defaults)


def test_samples_are_seeded_and_in_grid_order(tmp_path):
    configs, _ = sweep_grid.expand(
        sweep_spec.parse_sweep_file(write(tmp_path / "s.sh", SWEEP_TEXT)))
    first = sweep_grid.sample(configs, 5, seed=7)
    assert [c.hash for c in first] == [c.hash for c in sweep_grid.sample(configs, 5, seed=7)]
    assert len(first) == 5 and len({c.hash for c in first}) == 5
    order = [configs.index(c) for c in first]
    assert order == sorted(order)
    others = [[c.hash for c in sweep_grid.sample(configs, 5, seed=s)] for s in range(1, 6)]
    assert any(o != [c.hash for c in first] for o in others)
    assert sweep_grid.sample(configs, 100, seed=0) == configs
    assert sweep_grid.sample(configs, None, seed=0) == configs


def test_dry_run_prints_one_command_per_unfinished_configuration(tmp_path):
    sweep_file = write(tmp_path / "dry.sh", SWEEP_TEXT)
    results = tmp_path / "results"

    def dry():
        out = subprocess.run(["bash", str(REPO_ROOT / "tune-hyperparameter.sh"), str(sweep_file),
                              "--dry-run", "-j", "2", "--results_root", str(results), "--",
                              "--epoch", "2"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout.splitlines()

    lines = dry()
    configs, _ = sweep_grid.expand(sweep_spec.parse_sweep_file(sweep_file), ["--epoch", "2"])
    assert len(lines) == len(configs) == 12
    threads = max(1, sweep_runner.cpu_count() // 2)
    for line, config in zip(lines, configs):
        assert " -m src.training.main " in line
        assert line.endswith(f"--run_id sweep-{config.hash} --verbose 0 --threads {threads}")
        assert f"--results_root {results}" in line and "--epoch 2" in line
    assert not (results / "sweeps").exists()            # a dry run writes nothing
    write(results / f"sweep-{configs[0].hash}" / "metrics.json", "{}")
    assert dry() == lines[1:]


# --------------------------------------------------------------------------- sweep runner

FAKE_RUNNER = textwrap.dedent("""\
    import json, os, sys, time
    from pathlib import Path

    args = sys.argv[1:]
    def get(name, default=None):
        return args[args.index(name) + 1] if name in args else default

    def event(kind, **extra):
        with open(os.environ["FAKE_CALLS"], "a") as handle:
            handle.write(json.dumps({"event": kind, "run_id": get("--run_id"),
                                     "pid": os.getpid(), "t": time.time(),
                                     "threads": get("--threads"), **extra}) + "\\n")

    event("start", argv=args)
    lr = float(get("--lr", "0"))
    quick = os.environ.get("FAKE_QUICK_LR") and float(os.environ["FAKE_QUICK_LR"]) == lr
    try:
        time.sleep(0 if quick else float(os.environ.get("FAKE_SLEEP", "0")))
    except KeyboardInterrupt:
        event("interrupted")
        sys.exit(130)
    if os.environ.get("FAKE_FAIL_LR") and float(os.environ["FAKE_FAIL_LR"]) == lr:
        print("fake failure", file=sys.stderr)
        event("failed")
        sys.exit(3)
    out = Path(get("--results_root")) / get("--run_id")
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps({"uar_mean": lr, "war_mean": lr}))
    print("fake training done")
    event("end")
""")


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """A fake entry point module `fakerunner` on PYTHONPATH; its events go to calls.jsonl."""
    module_dir = tmp_path / "fake_module"
    write(module_dir / "fakerunner.py", FAKE_RUNNER)
    calls = tmp_path / "calls.jsonl"
    monkeypatch.setenv("PYTHONPATH", str(module_dir))
    monkeypatch.setenv("FAKE_CALLS", str(calls))
    monkeypatch.delenv("FAKE_FAIL_LR", raising=False)
    monkeypatch.delenv("FAKE_SLEEP", raising=False)
    monkeypatch.delenv("FAKE_QUICK_LR", raising=False)

    def events(kind=None):
        if not calls.exists():
            return []
        rows = [json.loads(line) for line in calls.read_text().splitlines()]
        return [r for r in rows if kind is None or r["event"] == kind]

    return {"results": tmp_path / "results", "events": events}


def run_sweep(sweep_file: Path, results: Path, *extra: str) -> int:
    return sweep_cli.main([str(sweep_file), "--results_root", str(results), "--runner",
                       "fakerunner", *extra])


def test_failed_configuration_is_logged_and_retried_finished_ones_skipped(tmp_path, fake,
                                                                           monkeypatch, capsys):
    sweep_file = write(tmp_path / "resume.sh", 'lr=(0.001 0.002 0.003)\nFIXED="--epoch 3"\n')
    results = fake["results"]
    monkeypatch.setenv("FAKE_FAIL_LR", "0.002")
    assert run_sweep(sweep_file, results) == 1                 # one failure -> exit 1
    assert len(fake["events"]("start")) == 3                   # the sweep went on
    state = json.loads((results / "sweeps" / "resume" / "sweep.json").read_text())["configs"]
    by_lr = {e["flags"]["lr"]: (h, e) for h, e in state.items()}
    assert {lr: e["status"] for lr, (h, e) in by_lr.items()} == {
        "0.001": "done", "0.002": "failed", "0.003": "done"}
    failed_hash, failed = by_lr["0.002"]
    assert failed["exit_code"] == 3 and by_lr["0.001"][1]["uar_mean"] == 0.001
    failed_txt = (results / "sweeps" / "resume" / "failed.txt").read_text().splitlines()
    assert len(failed_txt) == 1 and failed_txt[0].startswith(f"{failed_hash}\texit 3")
    log = results / "sweeps" / "resume" / "logs" / f"{failed_hash}.log"
    assert "fake failure" in log.read_text() and failed["log"] == str(log)
    assert "FAILED" in capsys.readouterr().err

    monkeypatch.delenv("FAKE_FAIL_LR")
    assert run_sweep(sweep_file, results) == 0
    starts = fake["events"]("start")
    assert len(starts) == 4 and starts[-1]["run_id"] == f"sweep-{failed_hash}"  # only the retry
    state = json.loads((results / "sweeps" / "resume" / "sweep.json").read_text())["configs"]
    assert [e["status"] for e in state.values()] == ["done", "done", "done"]
    assert [e["skipped"] for e in state.values()] == [True, False, True]
    assert "3 configurations, 2 already finished, 1 to run" in capsys.readouterr().out
    assert (results / "sweeps" / "resume" / "failed.txt").read_text() == ""
    assert log.read_text().count("# ") == 2                    # the log is appended to
    assert "--epoch 3" in " ".join(starts[-1]["argv"])


def test_jobs_run_in_parallel(tmp_path, fake, monkeypatch):
    sweep_file = write(tmp_path / "par.sh", "lr=(0.001 0.002 0.003 0.004)\n")
    monkeypatch.setenv("FAKE_SLEEP", "1.0")
    begin = time.monotonic()
    assert run_sweep(sweep_file, fake["results"], "-j", "2") == 0
    elapsed = time.monotonic() - begin
    starts = {e["run_id"]: e["t"] for e in fake["events"]("start")}
    ends = {e["run_id"]: e["t"] for e in fake["events"]("end")}
    assert len(starts) == len(ends) == 4
    moments = sorted([(t, 1) for t in starts.values()] + [(t, -1) for t in ends.values()])
    level = peak = 0
    for _, step in moments:
        level += step
        peak = max(peak, level)
    assert peak == 2                                            # two at once, never more
    assert elapsed < 4 * 1.0 + 1.5                             # faster than one at a time
    assert {e["threads"] for e in fake["events"]("start")} == {
        str(max(1, sweep_runner.cpu_count() // 2))}


def test_sigterm_stops_running_children_cleanly(tmp_path, fake, monkeypatch):
    sweep_file = write(tmp_path / "stop.sh", "lr=(0.001 0.002 0.003)\n")
    monkeypatch.setenv("FAKE_SLEEP", "60")
    env = {**os.environ, "SER_SWEEP_PYTHON_MODULE": "fakerunner",
           "PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{os.environ['PYTHONPATH']}"}
    proc = subprocess.Popen([sys.executable, "-m", "src.experiments.sweep_cli", str(sweep_file),
                             "-j", "2", "--results_root", str(fake["results"])],
                            cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 20
    while len(fake["events"]("start")) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(fake["events"]("start")) == 2
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "re-run the same command to resume" in err
    assert len(fake["events"]("interrupted")) == 2             # children got SIGINT, exited
    for event in fake["events"]("start"):
        with pytest.raises(ProcessLookupError):
            os.kill(event["pid"], 0)
    state = json.loads((fake["results"] / "sweeps" / "stop" / "sweep.json").read_text())
    assert sorted(e["status"] for e in state["configs"].values()) == [
        "interrupted", "interrupted", "pending"]



def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie left for init to reap counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _outputs(results: Path) -> dict:
    """What a finished sweep leaves under final names: file names (temporaries of atomic writes
    aside), every run's metrics and each configuration's entry of sweep.json."""
    files = sorted(str(p.relative_to(results)) for p in results.rglob("*")
                   if p.is_file() and not p.name.endswith(".tmp"))
    metrics = {p.parent.name: json.loads(p.read_text())
               for p in results.glob("sweep-*/metrics.json")}
    state = json.loads((results / "sweeps" / "kill" / "sweep.json").read_text())["configs"]
    table = {h: (e["status"], e["run_id"], e["flags"], e.get("uar_mean"))
             for h, e in state.items()}
    return {"files": files, "metrics": metrics, "state": table,
            "failed": (results / "sweeps" / "kill" / "failed.txt").read_text()}


@pytest.mark.parametrize("victims", ["driver", "driver and children"])
def test_sigkill_mid_sweep_then_rerun_gives_the_uninterrupted_outputs(tmp_path, fake,
                                                                       monkeypatch, victims):
    """kill -9 of the sweep driver (its children, in their own sessions, survive it) or of
    everything (a crash): re-running the sweep finishes with what an uninterrupted sweep writes,
    never runs a configuration twice at once, and no stale lock blocks it."""
    sweep_file = write(tmp_path / "kill.sh", "lr=(0.001 0.002 0.003 0.004)\n")
    results = fake["results"]
    monkeypatch.setenv("FAKE_SLEEP", "60")
    monkeypatch.setenv("FAKE_QUICK_LR", "0.001")       # one configuration finishes before the kill
    env = {**os.environ, "SER_SWEEP_PYTHON_MODULE": "fakerunner",
           "PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{os.environ['PYTHONPATH']}"}
    proc = subprocess.Popen([sys.executable, "-m", "src.experiments.sweep_cli", str(sweep_file),
                             "-j", "2", "--results_root", str(results)], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while (len(fake["events"]("start")) < 3 or not fake["events"]("end")) \
                and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(fake["events"]("start")) == 3 and len(fake["events"]("end")) == 1
        # a second driver of the same sweep is refused while the first one runs
        assert run_sweep(sweep_file, results, "-j", "2") == 2
        assert len(fake["events"]("start")) == 3
        running = [e for e in fake["events"]("start")
                   if e["run_id"] not in {x["run_id"] for x in fake["events"]("end")}]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=20)
        if victims == "driver and children":
            for event in running:
                os.killpg(event["pid"], signal.SIGKILL)
        killed_at = time.time()
        state = json.loads((results / "sweeps" / "kill" / "sweep.json").read_text())
        assert sorted(e["status"] for e in state["configs"].values()) == [
            "done", "pending", "running", "running"]
        for path in results.rglob("*.json"):                # complete under every final name
            json.loads(path.read_text())

        monkeypatch.setenv("FAKE_SLEEP", "0")
        assert run_sweep(sweep_file, results, "-j", "2") == 0
    finally:
        for event in fake["events"]("start"):             # never leave a sleeper behind
            if _alive(event["pid"]):
                os.killpg(event["pid"], signal.SIGKILL)

    events = fake["events"]()
    assert not any(_alive(e["pid"]) for e in events if e["event"] == "start")
    ends = {e["pid"]: e["t"] for e in events if e["event"] in ("end", "interrupted", "failed")}
    if victims == "driver":                               # the orphans were stopped, not left
        assert {e["pid"] for e in running} <= {e["pid"] for e in events
                                               if e["event"] == "interrupted"}
    for run_id in {e["run_id"] for e in events}:
        spans = sorted((e["t"], ends.get(e["pid"], killed_at)) for e in events
                       if e["event"] == "start" and e["run_id"] == run_id)
        for (_, end), (next_start, _) in zip(spans, spans[1:]):
            assert end <= next_start, f"{run_id} ran twice at once"
    assert len(fake["events"]("end")) == 4               # each configuration finished once

    reference = tmp_path / "uninterrupted"
    assert run_sweep(sweep_file, reference, "-j", "2") == 0
    assert _outputs(results) == _outputs(reference)
    state = _outputs(results)["state"]
    assert sorted(s[0] for s in state.values()) == ["done"] * 4


# --------------------------------------------------------------------------- analysis

CLASSES = ["angry", "happy", "sad"]


def fake_run(root: Path, run_id: str, *, uar: float, war: float, f1: float, data="EMODB",
             feature="MFCC", mode="train", recalls=(0.9, 0.5, 0.7), finished="2026-11-10T10:00:00",
             target=None, da="lmmd", n_folds=2, std=0.01, seed=46, **flags) -> Path:
    run = root / run_id
    run.mkdir(parents=True)
    all_flags = {"mode": mode, "data": data, "feature_type": feature, "preset": "light",
                 "lr": 0.001, "dropout": 0.1, "filter_size": 39, "dilation_size": 8,
                 "kernel_size": 2, "stack_size": 1, "batch_size": 32, "epoch": 50,
                 "protocol": "kfold", "val_policy": "train_split", "use_dtpm": True,
                 "use_attention": True, "block": "gated", "lmmd_weight": 0.5, "da_method": da,
                 "target_data": target or "", "fusion_streams": "MFCC,LogMel",
                 "random_seed": seed, "run_id": run_id, **flags}
    metrics = {"run_id": run_id, "mode": mode, "data": data, "target_data": target,
               "feature_type": feature, "protocol": "kfold", "val_policy": "train_split",
               "n_folds": n_folds, "class_names": CLASSES,
               "war_mean": war, "war_std": std, "uar_mean": uar, "uar_std": std,
               "macro_f1_mean": f1, "macro_f1_std": std, "macro_precision_mean": f1 + 0.01,
               "macro_precision_std": std, "macro_recall_mean": uar, "macro_recall_std": std,
               "per_class_recall": dict(zip(CLASSES, recalls)), "seconds_per_epoch": 5.5,
               "train_seconds": 600.0, "peak_memory_mb": 2600.0, "flags": all_flags,
               "finished": finished}
    if mode == "train-lmmd":
        metrics["da_method"] = da
        metrics["source"] = {"uar_mean": 0.8, "war_mean": 0.81}
    (run / "metrics.json").write_text(json.dumps(metrics))
    true = ["angry"] * 4 + ["happy"] * 3 + ["sad"] * 3
    pred = ["angry"] * 3 + ["sad"] + ["happy"] * 2 + ["angry"] + ["sad"] * 3
    pd.DataFrame({"fold": 1, "file_id": [f"f{i}" for i in range(10)], "true": true,
                  "pred": pred}).to_csv(run / "predictions.csv", index=False)
    return run


@pytest.fixture
def fake_results(tmp_path) -> Path:
    root = tmp_path / "results"
    fake_run(root, "emodb-mfcc", uar=0.80, war=0.82, f1=0.79)
    fake_run(root, "emodb-logmel", uar=0.90, war=0.88, f1=0.89, feature="LogMel",
             recalls=(1.0, 0.8, 0.9), finished="2026-11-20T08:00:00")
    fake_run(root, "emodb-mfcc-test", uar=0.80, war=0.82, f1=0.79)
    fake_run(root, "ravdess-mfcc", uar=0.60, war=0.62, f1=0.58, data="RAVDESS",
             finished="2026-10-01T00:00:00", use_dtpm=False, use_attention=False)
    fake_run(root, "e2r-lmmd-s1", uar=0.45, war=0.47, f1=0.44, mode="train-lmmd",
             target="RAVDESS", recalls=(0.6, 0.3, 0.45))
    fake_run(root, "e2r-lmmd-s2", uar=0.55, war=0.57, f1=0.54, mode="train-lmmd",
             target="RAVDESS", seed=47, recalls=(0.7, 0.4, 0.55))
    fake_run(root, "e2r-lmmd-w1", uar=0.40, war=0.41, f1=0.39, mode="train-lmmd",
             target="RAVDESS", lmmd_weight=1.0)
    fake_run(root, "e2r-none", uar=0.35, war=0.36, f1=0.33, mode="train-lmmd",
             target="RAVDESS", da="none", recalls=(0.5, 0.2, 0.35))
    write(root / "broken" / "metrics.json", "{not json")
    return root


def test_collect_runs_kinds_and_columns(fake_results, capsys):
    frame = collect.collect_runs(fake_results, warn=print)
    assert "skipped" in capsys.readouterr().out                 # the broken file
    kinds = dict(zip(frame["run_id"], frame["kind"]))
    assert kinds == {"emodb-mfcc": "train", "emodb-logmel": "train", "emodb-mfcc-test": "test",
                     "ravdess-mfcc": "train", "e2r-lmmd-s1": "train-lmmd",
                     "e2r-lmmd-s2": "train-lmmd", "e2r-lmmd-w1": "train-lmmd",
                     "e2r-none": "train-lmmd"}
    for column in collect.KEY_FLAGS + ("n_folds", "war_mean", "uar_std", "macro_f1_mean",
                                        "recall_angry", "recall_sad", "seconds_per_epoch",
                                        "peak_memory_mb", "finished"):
        assert column in frame.columns, column
    row = frame.set_index("run_id").loc["e2r-lmmd-s1"]
    assert row["setting"] == "EMODB->RAVDESS" and row["source_uar_mean"] == 0.8
    plain = frame.set_index("run_id").loc["emodb-mfcc"]
    assert pd.isna(plain["da_method"])                          # DA flags blank for train runs
    assert plain["n_folds_total"] == plain["n_folds"] == 2      # runs from before the key
    seeds = frame[frame["run_id"].isin(["e2r-lmmd-s1", "e2r-lmmd-s2"])]["config"]
    assert seeds.nunique() == 1                                 # seeds share a configuration


def test_analyze_results_tables_workbook_and_plots(fake_results, tmp_path):
    out = tmp_path / "analysis"
    assert analysis_cli.main_results(["--results_root", str(fake_results), "--out", str(out)]) == 0
    table = pd.read_csv(out / "summary.csv")
    assert list(table["run_id"][:3]) == ["emodb-logmel", "emodb-mfcc", "emodb-mfcc-test"]
    assert list(table["uar_mean"]) == sorted(table["uar_mean"], reverse=True)
    assert len(table) == 8

    from openpyxl import load_workbook

    book = load_workbook(out / "summary.xlsx")
    assert {"summary", "EMODB MFCC", "EMODB LogMel", "RAVDESS MFCC",
            "EMODB-to-RAVDESS MFCC"} <= set(book.sheetnames)
    sheet = book["summary"]
    header = [c.value for c in sheet[1]]
    assert sheet.cell(row=2, column=header.index("run_id") + 1).value == "emodb-logmel"
    assert sheet["A2"].font.bold and sheet["A2"].fill.fgColor.rgb.endswith(
        workbook.HIGHLIGHT_FILL)
    assert not sheet["A3"].font.bold and not sheet["A3"].fill.fgColor.rgb.endswith(
        workbook.HIGHLIGHT_FILL)
    cross = book["EMODB-to-RAVDESS MFCC"]
    assert cross.cell(row=2, column=header.index("run_id") + 1).value == "e2r-lmmd-s2"

    md = (out / "tables.md").read_text()
    overall = section(md, "Overall comparison")
    assert "| EMODB | emodb-logmel | train | LogMel |  | 2 | 88.00 ± 1.00 | 90.00 ± 1.00 | " \
           "89.00 ± 1.00 |" in overall
    assert "| RAVDESS | ravdess-mfcc |" in overall and "62.00 ± 1.00" in overall
    assert "| E->R | e2r-lmmd-s2 | train-lmmd | MFCC | lmmd |" in overall
    assert "| R->E | not run |" in overall
    recall = section(md, "Per-class recall")
    assert "| happy | 80.00 | 50.00 | 40.00 |" in recall         # EMODB, RAVDESS, E->R
    da = section(md, "Domain adaptation")
    # lmmd: best configuration (weight 0.5) averaged over its two seeds
    assert "| E->R | lmmd | 2 (std over seeds) | 52.00 ± 5.00 | 50.00 ± 5.00 | 49.00 ± 5.00 | " \
           "50.00 ± 5.00 | 50.00 ± 5.00 |" in da
    assert "| E->R | none | 1 (std over folds) | 36.00 ± 1.00 | 35.00 ± 1.00 |" in da
    assert "| E->R | dann | not run |" in da and "| R->E | lmmd | not run |" in da
    assert "| EMODB | LogMel | emodb-logmel | light | 2 | 5.50 | 10.0 | 2600 |" in \
        section(md, "Computational efficiency")
    features = section(md, "Ablation: features")
    assert "| MFCC | emodb-mfcc | EMODB |" in features and "| LogMel | emodb-logmel |" in features
    assert "| HuBERT | not run |" in features
    components = section(md, "Ablation: components")
    assert "| TCN only | not run |" in components               # only RAVDESS has TCN only
    assert "| TCN + DTPM + attention | emodb-mfcc |" in components
    assert "| + LMMD (E->R) | e2r-lmmd-s2 | RAVDESS (target) |" in components
    assert "| full model, no adaptation (E->R) | e2r-none |" in components

    plots = out / "plots"
    for name in ("confusion_best.png", "per_class_recall_top.png", "uar_vs_feature_type.png",
                 "uar_vs_use_dtpm.png"):
        assert (plots / name).stat().st_size > 1000, name
    assert not (plots / "uar_vs_lr.png").exists()              # lr never varies


def test_class_subsets_are_their_own_cross_corpus_setting(tmp_path):
    """--label_set runs (five classes) are never pooled with the full shared label set."""
    fake_run(tmp_path, "six", uar=0.30, war=0.30, f1=0.30, mode="train-lmmd", target="RAVDESS")
    fake_run(tmp_path, "five", uar=0.50, war=0.50, f1=0.50, mode="train-lmmd", target="RAVDESS",
             label_set="angry,happy,sad")
    frame = collect.collect_runs(tmp_path, warn=print)
    settings = frame.set_index("run_id")["setting"]
    assert settings["six"] == "EMODB->RAVDESS"
    assert settings["five"] == "EMODB->RAVDESS (3 classes)"
    table = tables.da_table(tables.method_summary(frame))
    lmmd = table[table["method"] == "lmmd"].set_index("direction")
    assert lmmd.loc["E->R", "UAR %"].startswith("30.00")
    assert lmmd.loc["E->R (3 classes)", "UAR %"].startswith("50.00")


def test_ablation_rows_keep_the_heads_apart(tmp_path):
    """A run with --head_units none is its own row, never the default-head "TCN only"."""
    fake_run(tmp_path, "full", uar=0.80, war=0.81, f1=0.79)
    fake_run(tmp_path, "full-new", uar=0.70, war=0.71, f1=0.69, head_units="1024,512",
             time_masks=0)
    fake_run(tmp_path, "timnet", uar=0.90, war=0.91, f1=0.89, use_dtpm=False,
             use_attention=False, head_units="none")
    frame = collect.collect_runs(tmp_path, warn=print)
    _, _, components = ablation.ablation_tables(frame, "EMODB", "MFCC")
    runs = dict(zip(components["row"], components["run"]))
    assert runs["TCN only"] == tables.NOT_RUN
    assert runs["TCN only, softmax on the pooled features (TIM-Net)"] == "timnet"
    assert runs["TCN + DTPM + attention"] == "full"
    keys = frame.set_index("run_id")["config"]
    assert keys["full"] == keys["full-new"] != keys["timnet"]   # defaults of later flags


def section(markdown: str, title: str) -> str:
    start = markdown.index(f"## {title}")
    end = markdown.find("\n## ", start + 3)
    return markdown[start:] if end < 0 else markdown[start:end]


def test_confusion_comes_from_predictions(fake_results):
    cm, names = result_plots.confusion_from_predictions(fake_results / "emodb-mfcc")
    assert names == CLASSES
    assert cm.tolist() == [[3, 0, 1], [1, 2, 0], [0, 0, 3]]


def test_filters_data_feature_and_since(fake_results, tmp_path):
    out = tmp_path / "a"
    assert analysis_cli.main_results(["--results_root", str(fake_results), "--out", str(out),
                                  "--data", "ravdess"]) == 0
    assert list(pd.read_csv(out / "summary.csv")["run_id"]) == ["ravdess-mfcc"]
    assert analysis_cli.main_results(["--results_root", str(fake_results), "--out", str(out),
                                  "--since", "2026-11-15"]) == 0
    assert list(pd.read_csv(out / "summary.csv")["run_id"]) == ["emodb-logmel"]
    assert analysis_cli.main_results(["--results_root", str(fake_results), "--out", str(out),
                                  "--feature_type", "mfcc", "--kind", "train"]) == 0
    assert list(pd.read_csv(out / "summary.csv")["run_id"]) == ["emodb-mfcc", "ravdess-mfcc"]


def test_no_matching_runs_exit_1_with_a_clear_message(fake_results, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = subprocess.run([sys.executable, str(REPO_ROOT / "analyze_results.py"),
                          "--results_root", str(empty)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 1
    assert f"{empty} holds no finished runs; run training first" in out.stderr
    assert "Traceback" not in out.stderr
    assert analysis_cli.main_results(["--results_root", str(fake_results), "--data", "IEMOCAP",
                                  "--since", "2026-01-01"]) == 1
    assert "holds no finished runs matching --data IEMOCAP --since 2026-01-01; run training " \
           "first" in capsys.readouterr().err
    assert analysis_cli.main_cross_corpus(["--results_root", str(fake_results), "--data",
                                       "RAVDESS"]) == 1
    assert "no finished train-lmmd runs matching --data RAVDESS" in capsys.readouterr().err
    assert analysis_cli.main_results(["--results_root", str(fake_results), "--since",
                                  "yesterday"]) == 2


def test_analyze_cross_corpus(fake_results, tmp_path):
    out = tmp_path / "cc"
    assert analysis_cli.main_cross_corpus(["--results_root", str(fake_results), "--out",
                                       str(out)]) == 0
    table = pd.read_csv(out / "cross_corpus.csv").set_index("method")
    assert set(table.index) == {"none", "lmmd"}
    assert table.loc["lmmd", "uar_mean"] == pytest.approx(0.50)
    assert table.loc["lmmd", "uar_std"] == pytest.approx(0.05)
    assert table.loc["lmmd", "n_runs"] == 2 and table.loc["lmmd", "runs"] == \
        "e2r-lmmd-s1,e2r-lmmd-s2"
    md = (out / "cross_corpus.md").read_text()
    assert "| E->R | lmmd | 2 (std over seeds) | 52.00 ± 5.00 | 50.00 ± 5.00 |" in md
    assert "| happy | 20.00 | 35.00 |" in md                     # before (none) / after (lmmd)
    assert (out / "plots" / "cross_corpus_methods.png").stat().st_size > 1000
    assert (out / "plots" / "cross_corpus_recall_EMODB-to-RAVDESS.png").is_file()
    # --aggregate all: every lmmd run, whatever its weight
    assert analysis_cli.main_cross_corpus(["--results_root", str(fake_results), "--out", str(out),
                                       "--aggregate", "all"]) == 0
    table = pd.read_csv(out / "cross_corpus.csv").set_index("method")
    assert table.loc["lmmd", "n_runs"] == 3
    assert table.loc["lmmd", "uar_mean"] == pytest.approx(np.mean([0.45, 0.55, 0.40]))


# --------------------------------------------------------------------------- end to end

def test_tiny_real_sweep_then_analysis(tmp_path, monkeypatch):
    """Two real 1-epoch trainings on a synthetic corpus through the shell script, then the
    analysis of their results."""
    from src.data_processing.run_data_processing import main as extract_main
    from tests.synthetic import TINY, write_emodb_like

    raw = write_emodb_like(tmp_path / "raw", speakers=("03", "08"), per_class=3)
    features = tmp_path / "features"
    assert extract_main(["--dataset", "EMODB", "--raw_dir", str(raw), "--features_root",
                         str(features), "--features", "MFCC", "--workers", "1"]) == 0
    sweep_file = write(tmp_path / "tiny.sh", "lr=(3e-3 1e-2)\n")
    results = tmp_path / "results"
    monkeypatch.delenv("SER_SWEEP_PYTHON_MODULE", raising=False)
    command = ["bash", str(REPO_ROOT / "tune-hyperparameter.sh"), str(sweep_file), "-j", "2",
               "--results_root", str(results), "--threads", "1", "--",
               "--data", "EMODB", "--feature_type", "MFCC", "--features_root", str(features),
               "--models_root", str(tmp_path / "models"), "--epoch", "1", "--split_fold", "2",
               "--max_folds", "1", *[t for t in TINY if t not in ("--lr", "3e-3")]]
    env = {**os.environ, "PY": sys.executable}
    out = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    logs = "\n".join(p.read_text() for p in (results / "sweeps" / "tiny" / "logs").glob("*.log"))
    assert out.returncode == 0, out.stdout + out.stderr + logs
    state = json.loads((results / "sweeps" / "tiny" / "sweep.json").read_text())["configs"]
    assert sorted(e["status"] for e in state.values()) == ["done", "done"]
    runs = sorted(p.parent.name for p in results.glob("sweep-*/metrics.json"))
    assert runs == sorted(f"sweep-{h}" for h in state)
    again = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert again.returncode == 0 and "2 already finished, 0 to run" in again.stdout

    assert analysis_cli.main_results(["--results_root", str(results)]) == 0
    table = pd.read_csv(results / "analysis" / "summary.csv")
    assert sorted(table["run_id"]) == runs and set(table["kind"]) == {"train"}
    assert sorted(table["lr"]) == [0.003, 0.01]
    assert (results / "analysis" / "plots" / "uar_vs_lr.png").is_file()
    assert (results / "analysis" / "plots" / "confusion_best.png").is_file()


# --------------------------------------------------------------------------- YAML sweep files

def test_yaml_sweep_equals_its_bash_twin():
    bash = sweep_spec.parse_sweep_file(REPO_ROOT / "sweeps" / "quick.sh")
    yaml_spec = sweep_spec.parse_sweep_file(REPO_ROOT / "sweeps" / "quick.yaml")
    assert yaml_spec == bash
    configs = sweep_grid.expand(yaml_spec)
    assert [(c.hash, c.flags) for c in configs[0]] == \
        [(c.hash, c.flags) for c in sweep_grid.expand(bash)[0]]
    assert sweep_cli.resolve_sweep_file("quick.yaml") == REPO_ROOT / "sweeps" / "quick.yaml"


def test_yaml_sweep_groups_switches_and_variants(tmp_path):
    bash = sweep_spec.parse_sweep_file(write(tmp_path / "g.sh", SWEEP_TEXT + textwrap.dedent("""\
        speaker_norm=(true false)
        VARIANTS=("--feature_type MFCC" "--feature_type FUSION --fusion_streams MFCC,LogMel")
    """)))
    yaml_file = write(tmp_path / "g.yaml", textwrap.dedent("""\
        fixed: {run: {preset: light}, optimisation: {epoch: 30},
                evaluation: {split_fold: 5, max_folds: 2}, domain_norm: false}
        grid:
          optimisation: {lr: [3e-4, 1e-3]}
          dropout: [0.1, 0.4]
          mode: [train, train-lmmd]
          lmmd_weight: [0.5, 1.0]
          speaker_norm: [true, false]
          VARIANTS: ["--feature_type MFCC", {feature_type: FUSION, fusion_streams: "MFCC,LogMel"}]
    """))
    spec = sweep_spec.parse_sweep_file(yaml_file)
    assert spec.axes == bash.axes and spec.fixed == bash.fixed
    assert [c.hash for c in sweep_grid.expand(spec)[0]] == \
        [c.hash for c in sweep_grid.expand(bash)[0]]


@pytest.mark.parametrize("text,message", [
    ("grid: {lrr: [0.1, 0.2]}\n", "grid: unknown flag 'lrr'"),
    ("grid: {optimisation: {lrr: [0.1]}}\n", "grid: unknown flag 'lrr'"),
    ("fixed: {epochs: 3}\n", "fixed: unknown flag 'epochs'"),
    ("grid: {lr: 0.1}\n", "grid: lr: expected a list"),
    ("grid: {lr: []}\n", "grid: lr: the list has no values"),
    ("grids: {lr: [0.1]}\n", "unknown key 'grids'"),
    ("grid: [lr]\n", "grid: expected a mapping"),
    ("grid: {lr: [0.1\n", "cannot read it")])
def test_yaml_sweep_errors_name_the_file_and_the_key(tmp_path, capsys, text, message):
    path = write(tmp_path / "bad.yaml", text)
    with pytest.raises(sweep_spec.SweepError, match=re.escape(message)) as err:
        sweep_spec.parse_sweep_file(path)
    assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)
    assert sweep_cli.main([str(path), "--dry-run"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
