"""How training fails: non-finite losses, killed runs, and the corpus folder left untouched."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from src.data_processing.run_data_processing import main as extract_main
from src.training.config import RunConfig
from src.training.data import SERData
from src.training.experiment import NonFiniteLoss, compile_model, fit_model
from src.training.main import main as train_main
from tests.synthetic import TINY, write_emodb_like

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_nan_loss_stops_with_the_epoch_and_likely_cause():
    from src.models.model import ModelConfig, build_model

    n = 16
    streams = np.random.default_rng(0).standard_normal((n, 12, 4)).astype(np.float32)
    streams[3, 2, 1] = np.nan  # one poisoned frame makes the loss NaN from the first step
    meta = pd.DataFrame({"file_id": [f"f{i}" for i in range(n)], "speaker": "s", "label": "a"})
    data = SERData("X", {"MFCC": streams}, np.full(n, 12, np.int32),
                   (np.arange(n) % 2).astype(np.int32), ["a", "b"], meta, {}, {})
    cfg = RunConfig(epoch=3, batch_size=8, patience=0, verbose=0)
    model = build_model({"MFCC": 4}, 2, ModelConfig(filter_size=4, kernel_size=2, stack_size=1,
                                                     dilation_size=2, head_units=(8, 8)))
    compile_model(model, cfg, steps_per_epoch=2)
    with pytest.raises(NonFiniteLoss, match=r"epoch 1.*--lr"):
        fit_model(model, data, None, cfg, seed=0)


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


def test_pipeline_never_writes_into_the_corpus_folder(tmp_path):
    raw = write_emodb_like(tmp_path / "corpus", speakers=("03", "08"), per_class=3)
    before = snapshot(raw)
    features = tmp_path / "features"
    assert extract_main(["--dataset", "EMODB", "--raw_dir", str(raw), "--features_root",
                         str(features), "--workers", "1", "--no_progress"]) == 0
    common = ["--data", "EMODB", "--features_root", str(features), "--results_root",
              str(tmp_path / "results"), "--models_root", str(tmp_path / "models")]
    assert train_main([*common, "--mode", "train", "--epoch", "1", "--split_fold", "2",
                       "--max_folds", "1", "--run_id", "r", *TINY]) == 0
    assert train_main([*common, "--mode", "predict", "--test_path",
                       str(tmp_path / "models" / "EMODB" / "MFCC" / "r"), "--audio",
                       str(raw)]) == 0
    assert snapshot(raw) == before


def _train_command(features: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "src.training.main", "--mode", "train", "--data", "EMODB",
            "--features_root", str(features), "--results_root", str(out / "results"),
            "--models_root", str(out / "models"), "--epoch", "3", "--split_fold", "3",
            "--run_id", "killed", "--threads", "1", *TINY]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killed_training_resumes_to_the_uninterrupted_result(tmp_path, sig):
    raw = write_emodb_like(tmp_path / "corpus", speakers=("03", "08", "10"), per_class=3)
    features = tmp_path / "features"
    assert extract_main(["--dataset", "EMODB", "--raw_dir", str(raw), "--features_root",
                         str(features), "--workers", "1", "--no_progress"]) == 0
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = tmp_path / "interrupted"
    fold_1 = out / "models" / "EMODB" / "MFCC" / "killed" / "fold_01" / "result.json"
    proc = subprocess.Popen(_train_command(features, out), env=env, cwd=REPO_ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not fold_1.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(sig)
    proc.wait(timeout=60)
    assert fold_1.exists()
    for path in out.rglob("*.json"):  # every file under a final name is complete
        if ".tmp" not in path.name:
            json.loads(path.read_text())
    assert subprocess.run(_train_command(features, out), env=env, cwd=REPO_ROOT,
                          capture_output=True).returncode == 0
    clean = tmp_path / "clean"
    assert subprocess.run(_train_command(features, clean), env=env, cwd=REPO_ROOT,
                          capture_output=True).returncode == 0
    for fold in ("fold_01", "fold_02", "fold_03"):
        a = json.loads((out / "models/EMODB/MFCC/killed" / fold / "result.json").read_text())
        b = json.loads((clean / "models/EMODB/MFCC/killed" / fold / "result.json").read_text())
        assert a["probs"] == b["probs"], fold
    assert (out / "results" / "killed" / "report.xlsx").is_file()
