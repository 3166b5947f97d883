"""Shipping trained models: compact .keras export, reproducible figures, predict on new audio,
and the models shipped in test_models/ (reproduced on the real corpus when it is present)."""
from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from src.training.config import RunConfig
from src.training.export import export_run, main as export_main, training_command
from src.training.main import build_parser, config_from_args
from src.training.presets import preset_values
from tests.conftest import REPO_ROOT, SHARED_DATA, write_wav
from tests.synthetic import TINY, cli

SHIPPED = REPO_ROOT / "test_models"


@pytest.fixture(scope="module")
def trained_run(synthetic_features, tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("export")
    assert cli(synthetic_features, tmp, "--mode", "train", "--epoch", "4", "--split_fold", "3",
               "--max_folds", "2", "--run_id", "ship", "--dropout", "0.2", *TINY) == 0
    return {"tmp": tmp, "run": tmp / "models" / "EMODB" / "MFCC" / "ship"}


def _load(path: Path):
    import keras

    import src.models.model  # noqa: F401  registers the custom layers

    return keras.saving.load_model(path)


def test_compact_weights_are_the_float16_rounding_of_the_trained_ones(trained_run,
                                                                      synthetic_features):
    dest = trained_run["tmp"] / "shipped"
    export_run(trained_run["run"], dest, features_root=str(synthetic_features["features"]))
    for fold in ("fold_01", "fold_02"):
        before = _load(trained_run["run"] / fold / "model.keras")
        after = _load(dest / fold / "model.keras")
        assert (dest / fold / "model.keras").stat().st_size < \
            0.7 * (trained_run["run"] / fold / "model.keras").stat().st_size
        for old, new in zip(before.weights, after.weights):
            assert new.dtype == "float32"
            expected = np.asarray(old.numpy(), np.float32).astype(np.float16).astype(np.float32)
            np.testing.assert_array_equal(new.numpy(), expected, err_msg=old.path)


def test_test_mode_reproduces_the_figures_stored_at_export(trained_run, synthetic_features):
    dest = trained_run["tmp"] / "shipped-repro"
    export_run(trained_run["run"], dest, features_root=str(synthetic_features["features"]))
    out = trained_run["tmp"] / "repro"
    assert cli(synthetic_features, out, "--mode", "test", "--test_path", str(dest)) == 0
    predictions = pd.read_csv(out / "results" / "ship-test" / "predictions.csv")
    for fold, rows in predictions.groupby("fold"):
        stored = json.loads((dest / f"fold_{fold:02d}" / "result.json").read_text())
        names = json.loads((dest / "config.json").read_text())["class_names"]
        assert list(rows["pred"]) == [names[i] for i in stored["y_pred"]]
        assert list(rows["file_id"]) == stored["file_ids"]
        accuracy = float(np.mean(np.array(stored["y_pred"]) == np.array(stored["y_true"])))
        assert stored["metrics"]["war"] == pytest.approx(accuracy, abs=1e-12)
        assert "trained" in stored  # the pre-export figures are kept beside the shipped ones
    readme = (dest / "README.md").read_text()
    config = json.loads((dest / "config.json").read_text())
    assert config["export"]["command"] in readme and config["export"]["weights_dtype"] in readme


def test_training_command_reproduces_the_run_config(trained_run):
    saved = json.loads((trained_run["run"] / "config.json").read_text())
    command = training_command(saved["run"])
    words = shlex.split(command)
    assert words[:3] == ["python", "-m", "src.training.main"]
    parsed = config_from_args(build_parser().parse_args(words[3:]))
    assert parsed.run_hash() == RunConfig.from_dict(saved["run"]).run_hash()
    assert parsed.run_id == "ship" and "--dropout 0.2" in command


def test_export_refuses_to_replace_without_overwrite(trained_run, synthetic_features, capsys):
    dest = trained_run["tmp"] / "taken"
    dest.mkdir()
    (dest / "keep.txt").write_text("user file")
    args = ["--run", str(trained_run["run"]), "--to", str(dest), "--features_root",
            str(synthetic_features["features"])]
    assert export_main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (dest / "keep.txt").read_text() == "user file"
    assert export_main(args[:2] + ["--to", str(trained_run["tmp"] / "nowhere" / "x"),
                                   "--features_root", str(trained_run["tmp"] / "no-features")
                                   ]) == 2
    assert not (trained_run["tmp"] / "nowhere" / "x").exists()


def test_models_refuse_features_made_with_other_settings(trained_run, synthetic_features,
                                                         capsys):
    from src.data_processing.run_data_processing import main as extract_main

    other = trained_run["tmp"] / "trimmed-features"
    assert extract_main(["--dataset", "EMODB", "--raw_dir", str(synthetic_features["raw"]),
                         "--features_root", str(other), "--features", "MFCC", "--workers", "1",
                         "--trim_silence", "--no_progress"]) == 0
    capsys.readouterr()
    code = cli({"features": other}, trained_run["tmp"] / "mismatch", "--mode", "test",
               "--test_path", str(trained_run["run"]))
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error:") and "Traceback" not in err
    assert "settings they were trained on" in err and "'trim_silence': False" in err


# ------------------------------------------------------------- the models shipped in the repo
def _shipped_runs() -> list[Path]:
    return sorted(p.parent for p in SHIPPED.glob("*/*/config.json"))


def test_shipped_models_are_complete_and_small():
    runs = _shipped_runs()
    if not runs:
        pytest.skip("no models shipped in test_models/ yet")
    total = sum(f.stat().st_size for f in SHIPPED.rglob("*") if f.is_file())
    assert total < 30 * 2 ** 20, f"test_models/ holds {total / 2 ** 20:.1f} MiB"
    for run in runs:
        config = json.loads((run / "config.json").read_text())
        assert config["export"]["command"].startswith("python -m src.training.main")
        assert set(config["extraction"]) == set(config["input_dims"])
        for fold in run.glob("fold_*"):
            names = {p.name for p in fold.iterdir()}
            assert {"split.json", "result.json"} <= names
            assert names & {"model.keras", "model.skops"}


@pytest.fixture(scope="module")
def emodb_features(tmp_path_factory) -> Path:
    if not (SHARED_DATA / "EMODB").is_dir():
        pytest.skip(f"EMODB not found at {SHARED_DATA}")
    if not (SHIPPED / "EMODB" / "MFCC" / "config.json").exists():
        pytest.skip("test_models/EMODB/MFCC not shipped yet")
    from src.data_processing.run_data_processing import main as extract_main

    root = tmp_path_factory.mktemp("emodb-features")
    assert extract_main(["--dataset", "EMODB", "--raw_dir", str(SHARED_DATA / "EMODB"),
                         "--features_root", str(root), "--features", "MFCC",
                         "--no_progress"]) == 0
    return root


def _first_fold_copy(tmp: Path, run: str = "EMODB/MFCC") -> Path:
    """test_models/<run> with only fold 1 (keeps the test within CI time)."""
    copy = tmp / run.replace("/", "-")
    copy.mkdir()
    shutil.copyfile(SHIPPED / run / "config.json", copy / "config.json")
    shutil.copytree(SHIPPED / run / "fold_01", copy / "fold_01")
    return copy


def _linked_subset(dataset: str, keep, tmp: Path) -> Path:
    """A folder of links to the audio files of corpus `dataset` whose `load_corpus` row passes
    `keep` (e.g. on its file_id or speaker), the corpus's own layout kept."""
    from src.data_processing.corpora import load_corpus

    corpus, subset = SHARED_DATA / dataset, tmp / f"{dataset}-subset"
    for row in load_corpus(dataset, raw_dir=corpus).itertuples():
        if keep(row):
            link = subset / Path(row.path).relative_to(corpus)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(row.path)
    return subset


def _extract_like(run: str, tmp: Path, dataset: str = "", raw_dir: Path | None = None) -> Path:
    """Features of `dataset` (default: the run's corpus; its audio in `raw_dir`, default the
    whole corpus) made with the run's extraction settings (its streams, silence trimming and
    openSMILE level)."""
    from src.data_processing.run_data_processing import main as extract_main

    saved = json.loads((SHIPPED / run / "config.json").read_text())
    streams = list(saved["extraction"])
    settings = saved["extraction"][streams[0]]
    extra = ["--trim_silence"] if settings["trim_silence"] else []
    extra += ["--smile_level", settings.get("smile_level", "functionals")]
    for name in ("sample_rate", "n_fft", "win_length", "hop_length", "n_mels", "n_mfcc", "fmin",
                 "fmax", "normalize", "fixed_samples"):  # e.g. the timnet extraction preset's
        if settings.get(name) is not None:
            extra += [f"--{name}", str(settings[name])]
    root, dataset = tmp / "features", dataset or saved["dataset"]
    assert extract_main(["--dataset", dataset, "--raw_dir",
                         str(raw_dir or SHARED_DATA / dataset), "--features_root", str(root),
                         "--features", ",".join(streams), "--no_progress", *extra]) == 0
    return root


@pytest.mark.parametrize("run", ["EMODB/MFCC", "RAVDESS/MFCC", "RAVDESS/MFCC-e200", "EMODB/GE2E"])
def test_shipped_fold_reproduces_its_figures(run, tmp_path):
    if not (SHIPPED / run / "config.json").exists():
        pytest.skip(f"test_models/{run} not shipped yet")
    if not (SHARED_DATA / run.split("/")[0]).is_dir():
        pytest.skip(f"{run.split('/')[0]} not found at {SHARED_DATA}")
    fold1 = _first_fold_copy(tmp_path, run)
    settings = json.loads((fold1 / "config.json").read_text())["run"]
    # per-speaker statistics of a subset equal the whole corpus's only when fold 1's test
    # files are whole speakers (leave one speaker out)
    assert not settings["speaker_norm"] or settings["protocol"] == "loso"
    test_files = set(json.loads((fold1 / "fold_01" / "split.json").read_text())["test"])
    features = _extract_like(run, tmp_path, raw_dir=_linked_subset(  # fold 1's test files only
        run.split("/")[0], lambda row: row.file_id in test_files, tmp_path))
    assert cli({"features": features}, tmp_path, "--mode", "test", "--data", run.split("/")[0],
               "--test_path", str(fold1)) == 0
    stored = json.loads((fold1 / "fold_01" / "result.json").read_text())["metrics"]
    run_id = json.loads((fold1 / "config.json").read_text())["run_id"]
    again = json.loads((tmp_path / "results" / f"{run_id}-test" / "metrics.json").read_text())
    for key in ("war", "uar", "macro_f1"):
        assert again[f"{key}_mean"] == stored[key], key


def test_predict_with_shipped_models_on_new_and_real_audio(emodb_features, tmp_path):
    fold1 = _first_fold_copy(tmp_path)
    stored = json.loads((fold1 / "fold_01" / "result.json").read_text())
    real = [next((SHARED_DATA / "EMODB").rglob(f"{stem}.wav")) for stem in stored["file_ids"][:2]]
    synthetic = write_wav(tmp_path / "synthetic.wav", seconds=2.0, sr=44100, channels=2)
    out = tmp_path / "preds.csv"
    assert cli({"features": emodb_features}, tmp_path, "--mode", "predict", "--test_path",
               str(fold1), "--audio", str(synthetic), *map(str, real), "--output",
               str(out)) == 0
    table = pd.read_csv(out)
    names = json.loads((fold1 / "config.json").read_text())["class_names"]
    assert len(table) == 3 and list(table.columns) == ["file", "emotion", *names, "reason"]
    assert table["reason"].isna().all()   # every file predicted: no reason given
    probs = table[names].to_numpy()
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-3)
    assert list(table["emotion"]) == [names[i] for i in probs.argmax(axis=1)]
    # the same file through predict and through the stored test split: same probabilities
    for k in range(2):
        row = table.index[table["file"] == str(real[k])][0]
        np.testing.assert_allclose(probs[row], stored["probs"][k], atol=1e-4)


@pytest.mark.parametrize("run", ["EMODB-to-RAVDESS/MFCC", "RAVDESS-to-EMODB/MFCC",
                                 "RAVDESS-to-EMODB/eGeMAPS", "EMODB-to-RAVDESS/eGeMAPS",
                                 "RAVDESS-to-EMODB/eGeMAPS-selftrain",
                                 "RAVDESS-to-EMODB/GE2E-selftrain",
                                 "EMODB-to-RAVDESS/GE2E-selftrain", "RAVDESS-to-EMODB/GE2E-lmmd"])
def test_shipped_adapted_model_reproduces_its_target_figures(run, tmp_path):
    """Models normalised per corpus (--domain_norm) are tested on the whole target and must
    give its stored figures; models normalised per speaker (--speaker_norm) on two target
    speakers only (a speaker's statistics do not depend on the others), whose stored
    probabilities they must give file by file."""
    source, target = run.split("/")[0].split("-to-")
    if not (SHIPPED / run / "config.json").exists():
        pytest.skip(f"test_models/{run} not shipped yet")
    if not (SHARED_DATA / target).is_dir():
        pytest.skip(f"{target} not found at {SHARED_DATA}")
    saved = json.loads((SHIPPED / run / "config.json").read_text())
    per_speaker = saved["run"]["speaker_norm"]
    speakers = {"03", "08"} if target == "EMODB" else {"01", "02"}
    raw = _linked_subset(target, lambda row: row.speaker in speakers,
                         tmp_path) if per_speaker else None
    features = _extract_like(run, tmp_path, target, raw)
    fold1 = _first_fold_copy(tmp_path, run)
    assert cli({"features": features}, tmp_path, "--mode", "test-cross-corpus", "--data",
               source, "--feature_type", saved["run"]["feature_type"], "--test_path",
               str(fold1)) == 0
    stored = json.loads((fold1 / "fold_01" / "result.json").read_text())["target"]
    out = tmp_path / "results" / f"{saved['run_id']}-on-{target}"
    if not per_speaker:
        again = json.loads((out / "metrics.json").read_text())
        for key in ("war", "uar", "macro_f1"):
            assert again[f"{key}_mean"] == stored["metrics"][key], key
        return
    again = pd.read_csv(out / "predictions.csv", dtype={"file_id": str}).set_index("file_id")
    assert 40 <= len(again) < len(stored["file_ids"])  # two speakers' files, each predicted
    position = {f: i for i, f in enumerate(stored["file_ids"])}
    rows = [position[f] for f in again.index]
    names = saved["class_names"]
    np.testing.assert_allclose(again[[f"p_{c}" for c in names]].to_numpy(),
                               np.asarray(stored["probs"])[rows], atol=1e-5)
    assert list(again["pred"]) == [names[stored["y_pred"][i]] for i in rows]


# Non-default values for the RunConfig fields whose type alone does not give a valid one.
_NON_DEFAULT = {"mode": "train-lmmd", "data": "RAVDESS", "feature_type": "FUSION",
                "fusion_streams": "MFCC,HuBERT", "feature_set": "MFCC=abc,LogMel=def",
                "preset": "light", "monitor": "val_accuracy", "activation": "gelu",
                "block": "gated", "head_units": "none", "protocol": "loso",
                "val_policy": "test_fold", "folds": "2-3", "target_data": "EMODB",
                "da_method": "dann", "pseudo_label": "hard", "label_set": "angry,sad",
                "label_map": "map.json", "run_id": "r1", "distribute": "mirrored",
                "dropout": 0.25, "val_fraction": 0.2, "time_mask_width": 0.3,
                "freq_mask_width": 0.3, "beta1": 0.8, "beta2": 0.9, "confidence": 0.7,
                "model": "mlp", "mlp_units": "64,32", "frame_pooling": "mean_std",
                "select_epoch": "label_free", "select_C": "label_free", "mlp_dropout": 0.5,
                "lr_schedule": "constant", "st_teacher": "logreg",
                "level_weights": "linear", "init_from": "saved_models/EMODB/MFCC/run-a",
                "weight_ema": 0.99, "vtlp": "0.9,1.1", "lmmd_targets": "teacher"}
# Fields that have no command-line flag (set only by code that builds a RunConfig).
_WITHOUT_FLAG = {"min_lr"}


def _round_trip(cfg: RunConfig) -> RunConfig:
    words = shlex.split(training_command(cfg.to_dict()))
    assert words[:3] == ["python", "-m", "src.training.main"]
    return config_from_args(build_parser().parse_args(words[3:]))


def _recipe(cfg: RunConfig) -> dict:
    from src.training.export import _NOT_IN_COMMAND

    return {k: v for k, v in cfg.to_dict().items() if k not in _NOT_IN_COMMAND | _WITHOUT_FLAG}


def test_training_command_keeps_every_non_default_flag():
    """Issue 21.11: each RunConfig field with a flag, set to a non-default value, survives
    command -> parse -> config (e.g. --collapse_guard false was dropped)."""
    import dataclasses

    from src.training.export import _NOT_IN_COMMAND

    assert _round_trip(RunConfig()) == RunConfig()
    for field in dataclasses.fields(RunConfig):
        if field.name in _NOT_IN_COMMAND | _WITHOUT_FLAG:
            continue
        default = field.default
        if field.name in _NON_DEFAULT:
            value = _NON_DEFAULT[field.name]
        elif isinstance(default, bool):
            value = not default
        elif isinstance(default, int):
            value = default + 3
        elif isinstance(default, float):
            value = default * 2 + 0.5
        else:
            raise AssertionError(f"add a non-default value for {field.name}")
        cfg = RunConfig(**{field.name: value})
        parsed = _round_trip(cfg)
        assert _recipe(parsed) == _recipe(cfg), field.name
        assert parsed.run_hash() == cfg.run_hash(), field.name
    # architecture flags are compared with the preset's values, not the seed defaults
    light_wide = RunConfig(preset="light", filter_size=128, kernel_size=3, block="residual",
                           dropout=0.4, stack_size=3, dilation_size=8)
    assert _recipe(_round_trip(light_wide)) == _recipe(light_wide)
    timnet = RunConfig(**{**preset_values("timnet"), "preset": "timnet", "epoch": 20})
    command = training_command(timnet.to_dict())
    assert "--epoch 20" in command and "--lr" not in command and "--use_dtpm" not in command
    assert _recipe(_round_trip(timnet)) == _recipe(timnet)
    assert "--collapse_guard false" in training_command(RunConfig(collapse_guard=False).to_dict())
