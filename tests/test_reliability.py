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
            "--models_root", str(out / "models"), "--epoch", "3", "--split_fold", "2",
            "--run_id", "killed", "--threads", "1", *TINY]


_ENV = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[Path, Path]:
    """(features, output folder) of a 2-fold training run that nobody interrupted."""
    base = tmp_path_factory.mktemp("killed")
    raw = write_emodb_like(base / "corpus", speakers=("03", "08", "10"), per_class=3)
    features = base / "features"
    assert extract_main(["--dataset", "EMODB", "--raw_dir", str(raw), "--features_root",
                         str(features), "--workers", "1", "--no_progress"]) == 0
    clean = base / "clean"
    assert subprocess.run(_train_command(features, clean), env=_ENV, cwd=REPO_ROOT,
                          capture_output=True).returncode == 0
    return features, clean


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killed_training_resumes_to_the_uninterrupted_result(tmp_path, sig, uninterrupted):
    features, clean = uninterrupted
    out = tmp_path / "interrupted"
    fold_1 = out / "models" / "EMODB" / "MFCC" / "killed" / "fold_01" / "result.json"
    proc = subprocess.Popen(_train_command(features, out), env=_ENV, cwd=REPO_ROOT,
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
    assert subprocess.run(_train_command(features, out), env=_ENV, cwd=REPO_ROOT,
                          capture_output=True).returncode == 0
    for fold in ("fold_01", "fold_02"):
        a = json.loads((out / "models/EMODB/MFCC/killed" / fold / "result.json").read_text())
        b = json.loads((clean / "models/EMODB/MFCC/killed" / fold / "result.json").read_text())
        assert a["probs"] == b["probs"], fold
    assert (out / "results" / "killed" / "report.xlsx").is_file()


# ------------------------------------------------------- issue 21: extraction and feature sets
from src.data_processing import store  # noqa: E402
from src.data_processing.config import ExtractionConfig  # noqa: E402
from src.data_processing.run_data_processing import extract_dataset  # noqa: E402


def _one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _parser_error(err: str) -> str:
    """The `error:` line argparse prints after its usage (parser.error); no traceback."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    return lines[0]


def _tiny_corpus(tmp_path: Path, make_wav, n: int = 2) -> pd.DataFrame:
    paths = [make_wav(tmp_path / "audio" / f"f{i}.wav", 0.3, seed=i) for i in range(n)]
    return pd.DataFrame({"file_id": [p.stem for p in paths], "path": [str(p) for p in paths],
                         "label": "calm", "speaker": "s", "gender": "", "dataset": "CSV"})


def test_second_extraction_waits_for_the_set_and_keeps_its_files(tmp_path, make_wav, capsys):
    """21.1: while another process holds a set, an extraction waits (one line) instead of
    deleting the other's in-flight temporary files."""
    import threading

    corpus = _tiny_corpus(tmp_path, make_wav)
    root = tmp_path / "features"
    folder = store.feature_set_dir(root, "CSV", "MFCC", ExtractionConfig())
    folder.mkdir(parents=True)
    in_flight = folder / ".other.npy.x1.tmp"   # the other process's array being written
    in_flight.write_bytes(b"partial")
    finished = threading.Event()

    def second():
        extract_dataset(corpus, ExtractionConfig(), ["MFCC"], root, "CSV", workers=0,
                        progress=False)
        finished.set()

    with store.lock_sets([folder]):
        thread = threading.Thread(target=second)
        thread.start()
        deadline, err = time.time() + 30, ""
        while "waiting" not in err and time.time() < deadline:
            time.sleep(0.05)
            err += capsys.readouterr().err
        assert "waiting for feature set" in _one_line(err) and str(folder) in err
        time.sleep(0.3)
        assert in_flight.exists() and not finished.is_set()
        assert not (folder / "COMPLETE").exists()
    thread.join(60)
    assert finished.is_set() and (folder / "COMPLETE").exists()
    assert len(store.load_feature_set("CSV", "MFCC", root)) == 2


def test_a_set_is_never_marked_complete_with_missing_or_broken_arrays(tmp_path):
    folder = tmp_path / "set"
    folder.mkdir()
    np.save(folder / "a.npy", np.zeros((5, 3), np.float32))
    (folder / "b.npy").write_bytes(b"not an array")
    metadata = pd.DataFrame({"file_id": ["a", "b", "c"], "label": "sad", "speaker": "1",
                             "gender": "", "n_frames": 5, "duration_s": 0.1, "path": "/x"})
    for rows in (metadata.iloc[[0, 2]], metadata.iloc[[0, 1]]):   # c missing; b unreadable
        with pytest.raises(store.IncompleteSet, match=r"\(e\.g\. [bc]\.npy\)"):
            store.finish_set(folder, feature="MFCC", dataset="X", config=ExtractionConfig(),
                             metadata=rows, failures=pd.DataFrame())
        assert not (folder / "COMPLETE").exists()
    store.finish_set(folder, feature="MFCC", dataset="X", config=ExtractionConfig(),
                     metadata=metadata.iloc[[0]], failures=pd.DataFrame())
    assert (folder / "COMPLETE").exists()


def test_loading_a_set_with_a_missing_array_names_the_file(tmp_path, make_wav):
    corpus = _tiny_corpus(tmp_path, make_wav)
    root = tmp_path / "features"
    extract_dataset(corpus, ExtractionConfig(), ["MFCC"], root, "CSV", workers=0, progress=False)
    folder = store.feature_set_dir(root, "CSV", "MFCC", ExtractionConfig())
    (folder / "f1.npy").unlink()
    with pytest.raises(store.FeatureSetNotFound) as info:
        store.load_feature_set("CSV", "MFCC", root)
    message = str(info.value)
    assert "\n" not in message and str(folder / "f1.npy") in message and "missing" in message


def _extract(*args: str) -> int:
    from src.data_processing.run_data_processing import main as extract

    return extract([*args, "--no_progress", "--workers", "0", "--features", "MFCC"])


def test_each_manifest_gets_its_own_set_and_a_foreign_set_is_refused(tmp_path, make_wav,
                                                                      capsys):
    """21.2: the set folder is named after the manifest; extracting a manifest into a set made
    from another manifest is refused (exit 2, one line) unless --overwrite."""
    make_wav(tmp_path / "one.wav", 0.3, freq=200.0)
    make_wav(tmp_path / "two.wav", 0.3, freq=900.0)
    first, second = tmp_path / "my-set.csv", tmp_path / "lists" / "Other.v2.csv"
    second.parent.mkdir()
    first.write_text("path,label\none.wav,angry\n")
    second.write_text(f"path,label\n{tmp_path / 'two.wav'},sad\n")
    root = tmp_path / "features"
    for manifest in (first, second):
        assert _extract("--dataset", "CSV", "--manifest", str(manifest), "--features_root",
                        str(root)) == 0
    assert store.load_feature_set("MY_SET", "MFCC", root).metadata["label"].tolist() == ["angry"]
    assert store.load_feature_set("OTHER_V2", "MFCC", root).metadata["label"].tolist() == ["sad"]
    source = store.feature_set_dir(root, "MY_SET", "MFCC", ExtractionConfig()) / "source.json"
    assert json.loads(source.read_text()) == {"manifest": str(first.resolve())}
    capsys.readouterr()

    into_first = ["--dataset", "CSV", "--manifest", str(second), "--name", "my_set",
                  "--features_root", str(root)]
    assert _extract(*into_first) == 2
    line = _one_line(capsys.readouterr().err)
    assert str(first.resolve()) in line and "--overwrite" in line
    assert store.load_feature_set("MY_SET", "MFCC", root).metadata["label"].tolist() == ["angry"]
    assert _extract(*into_first, "--overwrite") == 0
    assert store.load_feature_set("MY_SET", "MFCC", root).metadata["label"].tolist() == ["sad"]


def test_colliding_manifest_rows_are_counted_failures(tmp_path, make_wav, capsys):
    """21.4: `a/b.wav` and `a__b.wav` map to one file id: the second is a failure in
    failures.csv and the summary, so --strict exits 1."""
    make_wav(tmp_path / "a" / "b.wav", 0.3)
    make_wav(tmp_path / "a__b.wav", 0.4)
    make_wav(tmp_path / "c.wav", 0.3)
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\na/b.wav,angry\na__b.wav,sad\nc.wav,sad\n")
    args = ["--dataset", "CSV", "--manifest", str(manifest), "--features_root",
            str(tmp_path / "f")]
    assert _extract(*args) == 0
    assert "M MFCC: 2 ok, 1 failed" in capsys.readouterr().out
    fs = store.load_feature_set("M", "MFCC", tmp_path / "f")
    assert fs.metadata["file_id"].tolist() == ["a__b", "c"]
    assert fs.metadata["path"][0] == str(tmp_path / "a" / "b.wav")
    failures = pd.read_csv(fs.path / "failures.csv")
    assert failures["file_id"].tolist() == ["a__b"]
    assert failures["path"][0] == str(tmp_path / "a__b.wav")
    assert "collides with" in failures["reason"][0]
    assert _extract(*args, "--strict") == 1


def test_workers_orphaned_by_a_killed_parent_exit_quietly(tmp_path, make_wav):
    """21.9: SIGKILL of the extraction process alone: its workers must not print BrokenPipe
    tracebacks (they exit with it)."""
    for i in range(24):
        make_wav(tmp_path / "raw" / f"03a0{i % 10}W{'abcdefghijklmnopqrstuvwx'[i]}.wav", 4.0,
                 sr=48000, seed=i)
    features = tmp_path / "features"
    folder = store.feature_set_dir(features, "EMODB", "MFCC", ExtractionConfig())
    proc = subprocess.Popen(
        [sys.executable, "-m", "src.data_processing.run_data_processing", "--dataset", "EMODB",
         "--raw_dir", str(tmp_path / "raw"), "--features_root", str(features), "--workers", "2",
         "--no_progress", "--features", "MFCC"],
        cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if folder.is_dir() and len(list(folder.glob("*.npy"))) >= 2:
            break
        time.sleep(0.01)
    assert proc.poll() is None, proc.stderr.read().decode()
    proc.kill()   # the parent only: its two workers are orphaned
    try:
        _, err = proc.communicate(timeout=60)   # EOF once every worker has exited
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    err = err.decode()
    assert "Traceback" not in err and "BrokenPipe" not in err, err


# ------------------------------------------------------------- issue 21: the training CLI
import shutil  # noqa: E402

from tests.synthetic import cli  # noqa: E402


@pytest.fixture(scope="module")
def tones_run(synthetic_features, tmp_path_factory) -> dict:
    """A one-fold LogMel run on the synthetic corpus stored as a corpus named TONES (not the
    --data / --feature_type defaults)."""
    tmp = tmp_path_factory.mktemp("tones")
    features = tmp / "features"
    shutil.copytree(synthetic_features["features"] / "EMODB", features / "TONES")
    common = ["--features_root", str(features), "--results_root", str(tmp / "results"),
              "--models_root", str(tmp / "models")]
    assert train_main(["--mode", "train", "--data", "TONES", "--feature_type", "LogMel",
                       "--epoch", "1", "--split_fold", "2", "--max_folds", "1", "--run_id",
                       "tones", *common, *TINY]) == 0
    return {"tmp": tmp, "common": common, "run": tmp / "models" / "TONES" / "LogMel" / "tones"}


def test_test_mode_takes_data_and_feature_type_from_the_saved_run(tones_run, capsys):
    """21.8: the --data / --feature_type defaults (EMODB, MFCC) are not held against a run
    trained on another corpus and feature; explicit flags still are."""
    assert train_main(["--mode", "test", "--test_path", str(tones_run["run"]),
                       *tones_run["common"]]) == 0
    assert (tones_run["tmp"] / "results" / "tones-test" / "metrics.json").is_file()
    capsys.readouterr()
    assert train_main(["--mode", "test", "--test_path", str(tones_run["run"]), "--data",
                       "EMODB", *tones_run["common"]]) == 2
    assert "--data EMODB but" in _one_line(capsys.readouterr().err)


def test_predict_lists_failed_files_and_exits_1_when_none_is_usable(tones_run, make_wav,
                                                                    capsys):
    """21.6: files that cannot be used are rows with an empty emotion and probabilities and a
    reason; no usable file at all is exit 1 with one line on stderr."""
    good = make_wav(tones_run["tmp"] / "in" / "good.wav", 1.0, freq=220.0)
    bad = tones_run["tmp"] / "in" / "bad.wav"
    bad.write_bytes(b"not audio at all")
    out = tones_run["tmp"] / "predictions.csv"
    predict = ["--mode", "predict", "--test_path", str(tones_run["run"]), "--output", str(out),
               *tones_run["common"]]
    assert train_main([*predict, "--audio", str(good), str(bad)]) == 0
    table = pd.read_csv(out, keep_default_na=False)
    assert table["file"].tolist() == [str(good), str(bad)]
    assert table["emotion"][0] in ("angry", "neutral", "sad") and table["reason"][0] == ""
    assert table["emotion"][1] == "" and table["reason"][1]
    assert (table.loc[1, ["angry", "neutral", "sad"]] == "").all()
    capsys.readouterr()

    out.unlink()
    assert train_main([*predict, "--audio", str(bad)]) == 1
    assert "no input file could be used" in _one_line(capsys.readouterr().err)
    table = pd.read_csv(out, keep_default_na=False)
    assert table["file"].tolist() == [str(bad)] and table["reason"][0] and not table["emotion"][0]


def test_train_label_set_with_a_class_the_corpus_lacks_fails(synthetic_features, tmp_path,
                                                             capsys):
    """21.3: a --label_set class without files is an error naming it and the corpus."""
    assert cli(synthetic_features, tmp_path, "--mode", "train", "--epoch", "1",
               "--label_set", " angry, surprise,sad", *TINY) == 2
    line = _one_line(capsys.readouterr().err)
    assert "--label_set: surprise not in EMODB" in line and "angry, neutral, sad" in line
    assert not (tmp_path / "models").exists()


def test_label_set_is_parsed_once():
    """21.3/21.5: one parser: commas split, spaces stripped, empties dropped, repeats refused."""
    assert RunConfig(label_set=" angry, happy ,,sad ").label_list() == ["angry", "happy", "sad"]
    assert RunConfig().label_list() == []
    with pytest.raises(ValueError, match="--label_set lists sad more than once"):
        RunConfig(label_set="sad,angry, sad").label_list()


def test_label_set_duplicates_are_refused_on_the_command_line(capsys):
    with pytest.raises(SystemExit) as info:
        train_main(["--label_set", "sad,sad"])
    assert info.value.code == 2 and "--label_set" in _parser_error(capsys.readouterr().err)


def test_cross_corpus_label_set_is_stripped_and_must_be_shared(monkeypatch):
    """21.5: "angry, sad" keeps both labels (spaces stripped); a label the target lacks is an
    error naming it instead of being dropped."""
    from src.training import adaptation
    from src.training.experiment import ExperimentError

    monkeypatch.setattr(adaptation, "_label_names",
                        lambda dataset, cfg: ["angry", "neutral", "sad"])
    seen = {}

    def load(dataset, saved, features_root):
        seen["names"] = saved["class_names"]
        raise ExperimentError("stop here")

    monkeypatch.setattr(adaptation, "load_data_for_models", load)
    saved = {"dataset": "EMODB", "class_names": ["angry", "happy", "neutral", "sad"],
             "run": RunConfig().to_dict()}
    cfg = RunConfig(mode="test-cross-corpus", target_data="RAVDESS", label_set="sad, angry")
    with pytest.raises(ExperimentError, match="stop here"):
        adaptation.cross_corpus_results(cfg, saved, [])
    assert seen["names"] == ["sad", "angry"]
    cfg.label_set = "angry, happy, sad"
    with pytest.raises(ExperimentError) as info:
        adaptation.cross_corpus_results(cfg, saved, [])
    assert str(info.value).startswith("--label_set: happy not shared")


@pytest.mark.parametrize("flag, value, allowed", [
    ("--lmmd_weight", "-1", ">= 0"), ("--lr", "nan", "> 0"), ("--lr", "inf", "> 0"),
    ("--mixup", "nan", ">= 0"), ("--beta1", "1", "in [0, 1)"), ("--beta2", "-0.1", "in [0, 1)"),
    ("--kernel_mul", "0", "> 0"), ("--kernel_num", "0", ">= 1"), ("--fix_sigma", "inf", ">= 0"),
    ("--confidence", "1.5", "in [0, 1]"), ("--dropout", "nan", "in [0, 1)"),
    ("--split_fold", "1", ">= 2"), ("--random_seed", "-3", "in [0, 2147483647]"),
    ("--patience", "-1", ">= 0"), ("--max_frames", "-5", ">= 0"), ("--threads", "-1", ">= 0"),
])
def test_numeric_flags_are_checked_with_their_range(flag, value, allowed, capsys):
    """21.7: every numeric flag is finite and in range, refused before anything runs."""
    with pytest.raises(SystemExit) as info:
        train_main(["--mode", "train-lmmd", flag, value])
    line = _parser_error(capsys.readouterr().err)
    assert info.value.code == 2 and f"{flag} must be" in line and allowed in line, line


def test_missing_label_map_is_one_line_naming_flag_and_file(tmp_path, capsys):
    """21.9: no FileNotFoundError traceback for --label_map."""
    missing = tmp_path / "map.json"
    with pytest.raises(SystemExit) as info:
        train_main(["--mode", "train-lmmd", "--label_map", str(missing)])
    line = _parser_error(capsys.readouterr().err)
    assert info.value.code == 2 and f"--label_map {missing}" in line
    from src.training.adaptation import apply_label_map
    from src.training.experiment import ExperimentError

    missing.write_text("[1, 2]")
    with pytest.raises(ExperimentError, match="--label_map .*JSON object"):
        apply_label_map(["sad"], str(missing))


@pytest.fixture
def read_only_dir(tmp_path, monkeypatch):
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    if os.geteuid() == 0:  # root may write anywhere: refuse as a read-only folder would
        real_mkdir = Path.mkdir

        def mkdir(self, *args, **kwargs):
            if folder in Path(os.path.abspath(self)).parents:
                raise PermissionError(13, "Permission denied", str(self))
            return real_mkdir(self, *args, **kwargs)

        monkeypatch.setattr(Path, "mkdir", mkdir)
    yield folder
    folder.chmod(0o755)


def test_read_only_models_root_is_one_line_naming_it(synthetic_features, tmp_path,
                                                     read_only_dir, capsys):
    """21.9: PermissionError -> one line naming the flag and folder."""
    code = train_main(["--data", "EMODB", "--features_root", str(synthetic_features["features"]),
                       "--results_root", str(tmp_path / "results"), "--models_root",
                       str(read_only_dir), "--mode", "train", "--epoch", "1", *TINY])
    line = _one_line(capsys.readouterr().err)
    assert code == 2 and f"--models_root {read_only_dir}: cannot write" in line


def test_ctrl_c_while_importing_tensorflow_is_one_line_and_130(tmp_path):
    """21.9: KeyboardInterrupt during the imports of `python -m src.training.main`."""
    script = tmp_path / "interrupt.py"
    script.write_text(
        "import builtins, runpy, sys\n"
        "real = builtins.__import__\n"
        "def interrupted(name, *args, **kwargs):\n"
        "    if name.split('.')[0] in ('tensorflow', 'keras'):\n"
        "        raise KeyboardInterrupt\n"
        "    return real(name, *args, **kwargs)\n"
        "builtins.__import__ = interrupted\n"
        "sys.argv = ['main', '--mode', 'train', '--epoch', '1']\n"
        "runpy.run_module('src.training.main', run_name='__main__', alter_sys=True)\n")
    proc = subprocess.run([sys.executable, str(script)], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert proc.returncode == 130, proc.stderr
    assert "interrupted" in _one_line(proc.stderr)


def test_learning_rate_schedule_and_clipping_follow_the_flags():
    import keras

    from src.training.fitting import make_optimizer

    cosine = make_optimizer(RunConfig(lr=1e-3, min_lr=1e-5, epoch=10), steps_per_epoch=5)
    assert isinstance(cosine._learning_rate, keras.optimizers.schedules.CosineDecay)
    decay = cosine._learning_rate
    assert float(decay(0)) == pytest.approx(1e-3)
    assert float(decay(50)) == pytest.approx(1e-5, rel=1e-3)  # min_lr after epoch * steps
    assert float(decay(25)) == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5), rel=1e-3)
    assert cosine.clipnorm == 1.0
    constant = make_optimizer(RunConfig(lr=1e-3, lr_schedule="constant", clipnorm=0.0),
                              steps_per_epoch=5)
    assert float(keras.ops.convert_to_numpy(constant.learning_rate)) == pytest.approx(1e-3)
    assert constant.clipnorm is None


def test_weight_decay_shrinks_every_weight_by_lr_times_the_flag_each_step():
    import keras

    from src.training.fitting import make_optimizer

    weights = keras.Variable(np.array([2.0, -4.0], dtype="float32"))
    for decay, factor in ((0.5, 1 - 0.1 * 0.5), (0.0, 1.0)):
        weights.assign(np.array([2.0, -4.0], dtype="float32"))
        optimizer = make_optimizer(RunConfig(lr=0.1, lr_schedule="constant", clipnorm=0.0,
                                             weight_decay=decay), steps_per_epoch=1)
        optimizer.apply_gradients([(keras.ops.zeros((2,)), weights)])  # Adam's step is 0 here
        np.testing.assert_allclose(keras.ops.convert_to_numpy(weights),
                                   [2.0 * factor, -4.0 * factor], rtol=1e-6)


def test_kept_epoch_is_the_last_on_a_fixed_schedule_and_the_best_with_early_stopping():
    from src.training.experiment import kept_epoch

    history = {"loss": [1.0, 0.5, 0.7], "val_loss": [0.9, 0.4, 0.6],
               "val_accuracy": [0.2, 0.9, 0.5]}
    assert kept_epoch(history, RunConfig(patience=0), 3) == 3
    assert kept_epoch(history, RunConfig(patience=5, monitor="val_loss"), 3) == 2
    assert kept_epoch(history, RunConfig(patience=5, monitor="val_accuracy"), 3) == 2
    assert kept_epoch({}, RunConfig(), 0) == 0
