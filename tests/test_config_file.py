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


@pytest.mark.parametrize("text,message", [
    ("lrr: 0.1\n", "unknown flag 'lrr'"),
    ("- just\n- a list\n", "expected a mapping"),
    ("a: [unclosed\n", "cannot read it"),
    ("optimisation: 3\n", "group 'optimisation' must be a mapping"),
    ("lr: 0.1\noptimisation: {lr: 0.2}\n", "flag 'lr' is given twice"),
    ("optimisation: {lrr: 0.1}\n", "unknown flag 'lrr'")])
def test_bad_config_files_give_one_line_naming_the_file(tmp_path, capsys, text, message):
    """Flat and nested (grouped) config files alike."""
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


# Run ids computed by the code of commit 43c2cf4 (before the settings were declared with their
# metadata in src.training.flags and the parser generated from them): the same command lines
# must keep giving the same ids.
IDS_BEFORE_FLAG_METADATA = [
    ([], "EMODB-MFCC-kfold-52e3cd05"),
    (["--mode", "train-lmmd", "--target_data", "ravdess", "--da_method", "mmd", "--select_epoch",
      "label_free", "--target_entropy", "0.1", "--collapse_guard", "false", "--domain_norm",
      "--label_map", "x"], "EMODB-to-RAVDESS-MFCC-lmmd-eb1904ab"),
    (["--preset", "timnet"], "EMODB-MFCC-kfold-4ae26318"),
    (["--preset", "light", "--model", "mlp", "--feature_type", "eGeMAPS", "--mixup", "0.2",
      "--balanced_batches", "--time_masks", "2", "--fold_seed", "46", "--threads", "3",
      "--folds", "1-3", "--mixed_precision"], "EMODB-eGeMAPS-kfold-5ad3f691"),
    (["--protocol", "loso", "--data", "RAVDESS", "--feature_type", "FUSION", "--fusion_streams",
      "MFCC,LogMel,eGeMAPS", "--head_units", "none", "--use_dtpm", "false", "--level_weights",
      "linear", "--speaker_norm", "--label_set", "angry,sad"], "RAVDESS-FUSION-loso-7a724fdd"),
]


@pytest.mark.parametrize("argv,run_id", IDS_BEFORE_FLAG_METADATA)
def test_run_ids_of_command_lines_are_unchanged(argv, run_id):
    assert parse_config(argv, build_parser()).default_run_id() == run_id


def test_run_ids_of_configs_built_directly_are_unchanged():
    assert RunConfig().default_run_id() == "EMODB-MFCC-kfold-52e3cd05"
    assert RunConfig(mode="train-lmmd", target_data="RAVDESS").default_run_id() == \
        "EMODB-to-RAVDESS-MFCC-lmmd-a8349c7c"


def test_every_field_has_exactly_one_flag_and_the_help_lists_the_groups():
    import argparse
    import dataclasses

    from src.training.flags import FIELDS, GROUPS
    from src.training.main import NO_FLAG
    from src.training.presets import PRESET_FLAGS

    parser = build_parser()
    actions = [a for a in parser._actions if a.dest != "help"]
    assert NO_FLAG == {"min_lr"}  # the documented exception: a config-file-only setting
    assert sorted(a.dest for a in actions) == sorted(set(FIELDS) - NO_FLAG)
    assert all(a.option_strings == [f"--{a.dest}"] for a in actions)
    seed = RunConfig()
    for action in actions:
        default = getattr(seed, action.dest)
        if action.dest in PRESET_FLAGS:
            assert action.default is None, action.dest
        elif isinstance(action, argparse._StoreTrueAction):
            assert default is False and action.default is False
        else:
            assert action.default == (list(default) if action.dest == "audio" else default)
    help_text = parser.format_help()
    assert all(f"\n{title}:\n" in help_text for title in GROUPS.values())
    assert not set(GROUPS) & set(FIELDS)  # a nested config key is never a flag
    assert all(f.metadata["help"] for f in dataclasses.fields(RunConfig))


def test_identity_sets_follow_the_field_metadata():
    from src.training import config
    from src.training.flags import FIELDS

    assert config.HARDWARE <= config.BOOKKEEPING
    assert config.ADAPTATION_ONLY == {n for n, f in FIELDS.items()
                                      if f.metadata["group"] == "adaptation"}
    assert config._NOT_IN_RUN_ID == config.BOOKKEEPING | {"mode"}
    assert not config._IN_RUN_ID_WHEN_SET & config._NOT_IN_RUN_ID
    cfg = RunConfig(data="RAVDESS", lr=1e-3)
    other = {bool: True, int: 3, str: "x", tuple: ("x",)}
    for name in config.BOOKKEEPING:  # bookkeeping never moves the id
        changed = RunConfig(**{**cfg.to_dict(), "audio": (),
                               name: other[type(FIELDS[name].default)]})
        assert changed.run_hash() == cfg.run_hash(), name
    assert RunConfig(data="RAVDESS", lr=1e-3, mixed_precision=True).run_hash() != cfg.run_hash()


NESTED_ARGV = ["--mode", "train-lmmd", "--data", "RAVDESS", "--target_data", "EMODB",
               "--model", "mlp", "--lr", "0.002", "--epoch", "7", "--speaker_norm",
               "--collapse_guard", "false", "--preset", "timnet", "--head_units", "64",
               "--time_masks", "1", "--threads", "2"]


def test_run_yaml_is_nested_by_group_and_round_trips(tmp_path):
    import yaml

    from src.training.flags import GROUPS

    direct = parse_config(NESTED_ARGV, build_parser())
    write_run_yaml(tmp_path / "run.yaml", direct)
    saved = yaml.safe_load((tmp_path / "run.yaml").read_text())
    assert set(saved) <= set(GROUPS) and saved["optimisation"]["lr"] == 0.002
    assert saved["input"]["speaker_norm"] is True and saved["hardware"]["threads"] == 2
    again = parse_config(["--config", str(tmp_path / "run.yaml")], build_parser())
    assert again == RunConfig.from_dict({**direct.to_dict(), "config": again.config})
    assert again.default_run_id() == direct.default_run_id()


def test_flat_and_nested_files_give_the_same_config(tmp_path):
    import yaml

    direct = parse_config(NESTED_ARGV, build_parser())
    flat = {k: v for k, v in direct.to_dict().items() if k not in ("config", "audio")}
    (tmp_path / "flat.yaml").write_text(yaml.safe_dump(flat))  # run.yaml as written before
    (tmp_path / "mixed.toml").write_text(
        'mode = "train-lmmd"\ndata = "RAVDESS"\npreset = "timnet"\n'
        '[input]\nspeaker_norm = true\n[optimisation]\nlr = 0.002\nepoch = 7\n'
        '[architecture]\nmodel = "mlp"\nhead_units = "64"\ntime_masks = 1\n'
        '[adaptation]\ntarget_data = "EMODB"\ncollapse_guard = false\n'
        '[hardware]\nthreads = 2\n')
    for name in ("flat.yaml", "mixed.toml"):
        cfg = parse_config(["--config", str(tmp_path / name)], build_parser())
        assert cfg.default_run_id() == direct.default_run_id(), name
        assert {**cfg.to_dict(), "config": ""} == {**direct.to_dict(), "config": ""}, name


@pytest.mark.parametrize("args, message", [
    (["--mode", "train", "--self_training", "2"], "--self_training needs --mode train-lmmd"),
    (["--mode", "train-lmmd", "--self_training", "-1"], "--self_training"),
    (["--weight_decay", "-0.1"], "--weight_decay"),
    (["--mode", "train-lmmd", "--st_teacher", "logreg"], "--st_teacher needs --self_training"),
    (["--mode", "train-lmmd", "--self_training", "1", "--st_teacher", "mlp"], "--st_teacher"),
    (["--mode", "train-lmmd", "--lmmd_targets", "teacher"], "--lmmd_targets teacher needs"),
    (["--mode", "train-lmmd", "--model", "mlp", "--da_method", "dann", "--lmmd_targets",
      "teacher"], "--da_method lmmd"),
    (["--mode", "train", "--model", "mlp", "--lmmd_targets", "teacher"], "--mode train-lmmd"),
])
def test_bad_self_training_and_weight_decay_flags_are_one_line_errors(args, message, capsys):
    from src.training.validation import validate

    parser = build_parser()
    with pytest.raises(SystemExit) as exit_info:
        validate(parse_config(args, parser), parser)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
