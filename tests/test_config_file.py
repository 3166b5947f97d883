"""Run settings as files: --config FILE (YAML/TOML), the run.yaml saved with every run, and run
ids that stay stable for runs made before new flags existed."""
from __future__ import annotations

import numpy as np
import pytest

from src.training.config import RunConfig
from src.training.experiment import write_run_yaml
from src.training.main import build_parser, parse_config

# Run ids computed by the code of commit 7fbb23c (before the model families, --config,
# --target_entropy ... existed): saved runs made then must keep resuming under the same id.
PUBLISHED_IDS = [
    ({}, "EMODB-MFCC-kfold-52e3cd05"),
    ({"data": "RAVDESS", "feature_type": "FUSION", "preset": "light", "lr": 1e-3, "epoch": 60,
      "patience": 0}, "RAVDESS-FUSION-kfold-18f32443"),
    ({"mode": "train-lmmd", "target_data": "RAVDESS", "da_method": "dann", "lmmd_weight": 0.25,
      "collapse_guard": False, "speaker_norm": True}, "EMODB-to-RAVDESS-MFCC-lmmd-223f9906"),
]


@pytest.mark.parametrize("values,run_id", PUBLISHED_IDS)
def test_run_ids_of_earlier_runs_are_unchanged(values, run_id):
    assert RunConfig(**values).default_run_id() == run_id


def test_flags_to_file_to_flags_round_trip(tmp_path):
    argv = ["--mode", "train-lmmd", "--data", "RAVDESS", "--target_data", "EMODB",
            "--feature_type", "eGeMAPS", "--model", "mlp", "--mlp_units", "64,32",
            "--lmmd_weight", "0.7", "--speaker_norm", "--collapse_guard", "false",
            "--label_set", "angry,sad", "--epoch", "12", "--select_epoch", "label_free",
            "--target_entropy", "0.1", "--preset", "light"]
    direct = parse_config(argv, build_parser())
    write_run_yaml(tmp_path / "run.yaml", direct)
    again = parse_config(["--config", str(tmp_path / "run.yaml")], build_parser())
    assert again.default_run_id() == direct.default_run_id()
    for key, value in direct.to_dict().items():
        if key not in ("config", "run_id"):
            assert again.to_dict()[key] == value, key


def test_command_line_overrides_the_config_file(tmp_path):
    (tmp_path / "exp.toml").write_text('model = "logreg"\nC = 0.1\nfeature_type = "ComParE"\n')
    cfg = parse_config(["--config", str(tmp_path / "exp.toml"), "--C", "0.5"], build_parser())
    assert (cfg.model, cfg.C, cfg.feature_type) == ("logreg", 0.5, "ComParE")
    (tmp_path / "exp.yaml").write_text("--lr: 0.002\nbatch-size: 16\n")
    cfg = parse_config(["--config", str(tmp_path / "exp.yaml")], build_parser())
    assert (cfg.lr, cfg.batch_size) == (0.002, 16)


@pytest.mark.parametrize("text,message", [("lrr: 0.1\n", "unknown flag 'lrr'"),
                                          ("- just\n- a list\n", "expected a mapping"),
                                          ("a: [unclosed\n", "cannot read it")])
def test_bad_config_files_give_one_line_naming_the_file(tmp_path, capsys, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SystemExit):
        parse_config(["--config", str(path)], build_parser())
    err = capsys.readouterr().err
    assert str(path) in err and message in err and "Traceback" not in err


def test_missing_config_file_is_named(tmp_path, capsys):
    with pytest.raises(SystemExit):
        parse_config(["--config", str(tmp_path / "nope.yaml")], build_parser())
    assert "nope.yaml" in capsys.readouterr().err


def test_tensorboard_writes_event_files_per_fold(synthetic_features, tmp_path):
    from tests.synthetic import TINY, cli

    assert cli(synthetic_features, tmp_path, "--mode", "train", "--epoch", "1", "--split_fold",
               "2", "--max_folds", "1", "--tensorboard", "--run_id", "tb", *TINY) == 0
    logs = tmp_path / "models" / "EMODB" / "MFCC" / "tb" / "fold_01" / "tensorboard"
    assert list(logs.rglob("events.out.tfevents.*"))
    run_yaml = tmp_path / "models" / "EMODB" / "MFCC" / "tb" / "run.yaml"
    assert "tensorboard" in run_yaml.read_text()  # saved beside the run, reusable as --config


def test_presets_set_model_and_schedule_flags_once_and_flags_override_them(tmp_path):
    from src.training.presets import PRESET_FLAGS, preset_values

    timnet = parse_config(["--preset", "timnet"], build_parser())
    assert (timnet.lr, timnet.lr_schedule, timnet.clipnorm, timnet.batch_size, timnet.epoch,
            timnet.patience, timnet.val_fraction, timnet.fold_seed) == \
        (1e-3, "constant", 0.0, 64, 500, 0, 0.0, 46)
    assert (timnet.filter_size, timnet.block, timnet.level_weights, timnet.use_dtpm,
            timnet.use_attention, timnet.head_units) == (39, "gated", "linear", False, False,
                                                         "none")
    seed = RunConfig()
    default = parse_config([], build_parser())
    assert all(getattr(default, flag) == getattr(seed, flag) for flag in PRESET_FLAGS)
    light = parse_config(["--preset", "light"], build_parser())
    assert (light.filter_size, light.lr, light.use_dtpm) == (39, seed.lr, True)
    given = parse_config(["--preset", "timnet", "--epoch", "20", "--use_dtpm", "true",
                          "--lr_schedule", "cosine"], build_parser())
    assert (given.epoch, given.use_dtpm, given.lr_schedule, given.batch_size) == \
        (20, True, "cosine", 64)
    (tmp_path / "exp.yaml").write_text("preset: timnet\nbatch_size: 16\n")
    from_file = parse_config(["--config", str(tmp_path / "exp.yaml")], build_parser())
    assert (from_file.preset, from_file.batch_size, from_file.lr) == ("timnet", 16, 1e-3)
    assert preset_values("timnet")["head_units"] == "none"
    from src.training.report import FIXED_SCHEDULE_NOTE, HONEST_NOTE, selection_note

    assert selection_note(timnet.to_dict()) == FIXED_SCHEDULE_NOTE  # the report says so
    assert selection_note(default.to_dict()) == HONEST_NOTE
    with pytest.raises(ValueError, match="unknown preset"):
        preset_values("tiny")


def test_fold_seed_picks_the_shuffled_kfold_split():
    from sklearn.model_selection import KFold

    from src.training.experiment import make_folds

    class Corpus:
        n = 40

    for seed in (42, 46):
        ours = make_folds(Corpus(), "kfold", 10, fold_seed=seed)
        theirs = list(KFold(10, shuffle=True, random_state=seed).split(range(40)))
        assert all(np.array_equal(a[1], b[1]) for a, b in zip(ours, theirs))
    assert not np.array_equal(make_folds(Corpus(), "kfold", 10, fold_seed=42)[0][1],
                              make_folds(Corpus(), "kfold", 10, fold_seed=46)[0][1])
