"""--distribute: two worker processes on 127.0.0.1 (multi_worker over TF_CONFIG, CPU), and two
local replicas (mirrored over two logical CPUs, standing in for two GPUs), train like one
process with the same global batch and seed; only the chief writes."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.synthetic import TINY

REPO_ROOT = Path(__file__).resolve().parents[1]
# The training CLI with the head's dropout off too (it has no flag; --dropout 0 covers the
# temporal blocks): Keras draws the same dropout mask on every replica for its slice of the
# batch, so with dropout on, a distributed step is not the single-device step by design.
# With SER_TEST_CPU_REPLICAS set, --distribute mirrored runs over two logical CPUs (without
# GPUs MirroredStrategy would take the one CPU device).
CLI = """
import dataclasses, functools, os, sys
from src.models import model
model.PRESETS = {k: dataclasses.replace(v, head_dropout=0.0) for k, v in model.PRESETS.items()}
if os.environ.get("SER_TEST_CPU_REPLICAS"):
    import tensorflow as tf
    from src.training import experiment
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    experiment.distribution_strategy = functools.lru_cache(None)(
        lambda kind: tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
from src.training.main import main
sys.exit(main(sys.argv[1:]))
"""
TIMEOUT_S = 180


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start(args: list[str], log: Path, **env_extra: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env.update(CUDA_VISIBLE_DEVICES="-1", TF_CPP_MIN_LOG_LEVEL="2", **env_extra)
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-c", CLI, *args], cwd=REPO_ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def wait_all(procs: dict[str, subprocess.Popen], logs: dict[str, Path]) -> None:
    """Wait for every process; as soon as one fails (its peer would wait for it), or at the
    timeout, kill the rest and show the logs."""
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            codes = [proc.poll() for proc in procs.values()]
            if None not in codes or any(code for code in codes):
                break
            time.sleep(0.5)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    codes = {name: proc.returncode for name, proc in procs.items()}
    if any(codes.values()):
        tails = "\n".join(f"--- {name} (exit {codes[name]}):\n{logs[name].read_text()[-3000:]}"
                          for name in procs)
        raise AssertionError(f"a run failed or timed out ({TIMEOUT_S} s):\n{tails}")


@pytest.fixture(scope="module")
def runs(synthetic_features, tmp_path_factory) -> dict:
    """The same 1-fold, 3-epoch run four ways, at once: two multi_worker workers, mirrored over
    two local replicas, and one plain process. Returns {"root": folder, name: result.json}."""
    root = tmp_path_factory.mktemp("distribute")
    common = ["--mode", "train", "--data", "EMODB", "--feature_type", "MFCC",
              "--features_root", str(synthetic_features["features"]), "--epoch", "3",
              "--split_fold", "3", "--max_folds", "1", "--val_policy", "test_fold",
              "--dropout", "0", "--threads", "1", "--run_id", "run", *TINY]

    def args(name, distribute):  # separate output roots, as on separate machines
        return [*common, "--models_root", str(root / name / "models"), "--results_root",
                str(root / name / "results"), "--distribute", distribute]

    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    logs = {name: root / f"{name}.log" for name in ("worker0", "worker1", "mirrored", "single")}
    procs = {}
    for index in (0, 1):
        tf_config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        procs[f"worker{index}"] = start(args(f"worker{index}", "multi_worker"),
                                        logs[f"worker{index}"], TF_CONFIG=json.dumps(tf_config))
    procs["mirrored"] = start(args("mirrored", "mirrored"), logs["mirrored"],
                              SER_TEST_CPU_REPLICAS="1")
    procs["single"] = start(args("single", "none"), logs["single"])
    wait_all(procs, logs)
    out = {"root": root}
    for name in ("worker0", "mirrored", "single"):
        path = root / name / "models" / "EMODB" / "MFCC" / "run" / "fold_01" / "result.json"
        out[name] = json.loads(path.read_text())
    return out


def assert_same_training(distributed: dict, single: dict) -> None:
    """32 training files in 4 batches of 8 per epoch, each split 4 + 4 over the two replicas,
    and the 16 validation files likewise; same batches, same initial weights and batch-norm
    statistics over the whole batch, so the runs differ only in floating-point rounding: the
    all-reduce sums two half-batch gradients where one device sums the batch, and synchronised
    batch norm computes E[x^2] - E[x]^2 where tf.nn.moments subtracts the mean first. Measured
    here: training losses within 8e-6 (relative), validation losses within 5e-5 and predicted
    probabilities within 6e-5. Unsynchronised batch norm alone moves the first epoch's training
    loss by 1.2 % and its validation loss by 3.5 %; different batches per worker or a loss or
    lr scaled by the replica count, more."""
    np.testing.assert_allclose(distributed["history"]["loss"], single["history"]["loss"],
                               rtol=1e-4)
    # Validation runs on batch norm's moving statistics, which accumulate that rounding.
    np.testing.assert_allclose(distributed["history"]["val_loss"],
                               single["history"]["val_loss"], rtol=1e-3)
    np.testing.assert_allclose(distributed["probs"], single["probs"], atol=1e-3)
    assert distributed["history"]["accuracy"] == single["history"]["accuracy"]


def test_two_workers_train_like_one_process(runs):
    assert_same_training(runs["worker0"], runs["single"])
    assert (runs["root"] / "worker0" / "results" / "run" / "metrics.json").is_file()
    assert not (runs["root"] / "worker1").exists(), "only the chief writes"


def test_two_local_replicas_train_like_one_process(runs):
    assert_same_training(runs["mirrored"], runs["single"])
