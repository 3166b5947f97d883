"""The benchmark helpers compute what they claim, on tiny inputs (no timing asserts)."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks import (accuracy_runs, accuracy_table, bench_inference, bench_nkululeko,
                        bench_timnet_peer, bench_training, bench_truncation, run)
from src.training.data import PAD_MULTIPLE, SERData, length_sorted_batches

# A tiny network: a few hundred weights, traced in seconds.
TINY = dict(filter_size=4, kernel_size=2, stack_size=1, dilation_size=2, n_heads=1,
            head_units=(8,), use_attention=False, use_dtpm=False, fusion_width=8)


def tiny_data(n=21, dim=3, classes=3, seed=0) -> SERData:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(4, 40, size=n).astype(np.int32)
    t_max = int(lengths.max())
    x = rng.standard_normal((n, t_max, dim)).astype(np.float32)
    x[np.arange(t_max)[None, :] >= lengths[:, None]] = 0.0
    meta = pd.DataFrame({"file_id": [f"f{i:02d}" for i in range(n)],
                         "speaker": [f"s{i % 3}" for i in range(n)],
                         "label": [f"c{i % classes}" for i in range(n)]})
    return SERData("X", {"MFCC": x}, lengths, (np.arange(n) % classes).astype(np.int32),
                   [f"c{i}" for i in range(classes)], meta, {}, {})


# ---------------------------------------------------------------------------- training helpers
def test_baseline_batches_cover_every_file_once_in_ceil_n_over_b_batches():
    batches = bench_training.baseline_batches(21, 8, np.random.default_rng(0))
    assert [len(b) for b in batches] == [8, 8, 5]
    assert len(batches) == bench_training.steps_per_epoch(21, 8) == 3
    assert sorted(np.concatenate(batches).tolist()) == list(range(21))


def test_padded_frames_fixed_padding_versus_per_batch_padding():
    lengths = np.array([3, 10, 17, 40])
    batches = [np.array([0, 1]), np.array([2, 3])]
    # baseline: every row padded to the corpus maximum
    assert bench_training.padded_frames(lengths, batches, pad_to=40) == 4 * 40
    # ours: each batch to its longest member rounded up to 16, capped at the array width
    assert bench_training.padded_frames(lengths, batches, multiple=16) == 2 * 16 + 2 * 48
    assert bench_training.padded_frames(lengths, batches, multiple=16, max_frames=40) \
        == 2 * 16 + 2 * 40


def test_kfold_estimate_is_folds_times_epochs_times_seconds():
    est = bench_training.kfold_estimate(3.6)
    assert est == {"E30": 10 * 30 * 3.6 / 3600, "E100": 1.0, "E300": 3.0}
    assert bench_training.kfold_estimate(7.2, epochs=(50,), folds=5) == {"E50": 0.5}


def test_summarise_epochs_sets_the_first_epoch_apart():
    s = bench_training.summarise_epochs([30.0, 2.0, 4.0, 3.0])
    assert s["first_epoch_seconds"] == 30.0
    assert s["seconds_per_epoch"] == 3.0
    assert (s["min_seconds"], s["max_seconds"]) == (2.0, 4.0)
    assert bench_training.summarise_epochs([5.0])["seconds_per_epoch"] == 5.0


def test_train_config_takes_the_architecture_of_the_preset():
    from src.models.model import PRESETS
    from src.training.experiment import model_config_from

    for preset in ("light", "default"):
        cfg = bench_training.train_config(preset, epochs=3)
        assert model_config_from(cfg) == PRESETS[preset]
        assert (cfg.epoch, cfg.batch_size, cfg.patience) == (3, 32, 0)


def test_ours_and_baseline_run_the_same_steps_and_both_train():
    from src.models.model import ModelConfig

    data = tiny_data()
    cfg = bench_training.train_config("light", epochs=2, batch_size=8)
    steps = 2 * bench_training.steps_per_epoch(data.n, 8)
    results = {}
    for name, runner in (("ours", bench_training.run_ours),
                         ("baseline", bench_training.run_baseline)):
        model = bench_training.build_compiled(data, cfg, seed=1, model_config=ModelConfig(**TINY))
        before = [w.copy() for w in model.get_weights()]
        results[name] = runner(model, data, cfg, seed=1)
        after = model.get_weights()
        assert any(not np.allclose(a, b) for a, b in zip(before, after)), name
        assert np.isfinite(results[name]["final_loss"]), name
        assert len(results[name]["epoch_seconds"]) == 2, name
    assert results["ours"]["steps"] == results["baseline"]["steps"] == steps
    assert results["ours"]["steps_per_epoch"] == results["baseline"]["steps_per_epoch"] == 3
    t_max = data.streams["MFCC"].shape[1]
    assert results["baseline"]["padded_frames_per_epoch"] == data.n * t_max
    batches = length_sorted_batches(data.lengths, 8, np.random.default_rng(1))
    assert results["ours"]["padded_frames_per_epoch"] == bench_training.padded_frames(
        data.lengths, batches, multiple=PAD_MULTIPLE, max_frames=t_max)


def test_comparison_rows_and_table():
    runs = [{"preset": "light", "feature": "MFCC", "path": p, "seconds_per_epoch": s,
             "first_epoch_seconds": 10.0, "peak_rss_mb": 100.0, "frames_per_second": 1000.0}
            for p, s in (("ours", 2.0), ("baseline", 8.0))]
    rows = bench_training.comparison_rows(runs)
    assert len(rows) == 1 and rows[0]["speedup"] == 4.0
    assert rows[0]["kfold_hours_ours"]["E300"] == round(10 * 300 * 2.0 / 3600, 3)
    table = bench_training.markdown_table(rows)
    assert "| light | MFCC | 2.00 | 8.00 | 4.00x |" in table
    assert all(line.count("|") == table.splitlines()[0].count("|")
               for line in table.splitlines())


# ---------------------------------------------------------------------------- inference helpers
def test_latency_stats_and_time_calls_count_calls():
    stats = bench_inference.latency_stats([1.0, 2.0, 3.0, 4.0, 100.0])
    assert stats["median_ms"] == 3.0 and stats["min_ms"] == 1.0 and stats["n"] == 5
    assert stats["p90_ms"] == pytest.approx(np.percentile([1, 2, 3, 4, 100], 90))
    calls = []
    timed = bench_inference.time_calls(lambda: calls.append(1), n=7, warmup=2)
    assert len(calls) == 9 and timed["n"] == 7


def test_make_inputs_is_a_3_second_batch():
    x = bench_inference.make_inputs(4)
    assert x["MFCC"].shape == (4, 150, 40) and x["MFCC"].dtype == np.float32
    assert x["length"].tolist() == [150] * 4


def test_synthetic_wav_gives_150_frames(tmp_path, monkeypatch):
    from src.data_processing.config import ExtractionConfig
    from src.data_processing.features import extract_file

    monkeypatch.setattr(bench_inference, "EMODB_WAV", tmp_path / "absent")
    path, note = bench_inference.pick_wav(tmp_path)
    assert "synthetic" in note and path.exists()
    mfcc = extract_file(path, ExtractionConfig(), ["MFCC"])["MFCC"]
    assert mfcc.shape == (151, 40)  # 1 + 48000 // 320
    inputs = bench_inference.features_to_inputs(mfcc)
    assert inputs["MFCC"].shape == (1, 151, 40) and inputs["length"].tolist() == [151]


def test_compiled_call_matches_the_model_for_any_batch_and_length():
    import keras

    from src.models.model import ModelConfig, build_model

    keras.utils.set_random_seed(0)
    model = build_model({"MFCC": 5}, 3, ModelConfig(**TINY))
    call = bench_inference.compiled_call(model, dim=5)
    for batch, frames in ((1, 12), (3, 20)):
        x = bench_inference.make_inputs(batch, frames=frames, dim=5)
        np.testing.assert_allclose(call(x).numpy(), model(x, training=False).numpy(),
                                   atol=1e-5)
    assert call.experimental_get_tracing_count() == 1  # fixed signature: one trace


# ---------------------------------------------------------------------------- run.py
def test_accuracy_runs_parse_with_the_training_cli():
    from src.training.main import build_parser, config_from_args

    parser = build_parser()
    ids = set()
    for entry in accuracy_runs.ACCURACY_RUNS:
        argv = accuracy_runs.accuracy_command(entry)
        if "fuses" in entry:  # late fusion of runs listed before it, by their results folders
            earlier = [e["name"] for e in accuracy_runs.ACCURACY_RUNS[:accuracy_runs.ACCURACY_RUNS.index(entry)]]
            assert argv[:2] == ["-m", "src.experiments.late_fusion"]
            assert set(entry["fuses"]) <= set(earlier)
            assert argv[2:-2] == [f"results/bench-acc-{n}" for n in entry["fuses"]]
            ids.add(argv[-1])
            continue
        assert argv[:2] == ["-m", "src.training.main"]
        cfg = config_from_args(parser.parse_args(argv[2:]))
        assert (cfg.preset, cfg.lr, cfg.epoch, cfg.patience) == ("light", 1e-3, 60, 0)
        if cfg.mode == "train-lmmd" and cfg.feature_type == "MFCC":
            # trimmed MFCC, five classes, each direction's norm
            assert cfg.feature_set == accuracy_runs._TRIMMED_MFCC and cfg.max_folds == 3
            assert cfg.label_set == "angry,fear,happy,neutral,sad"
            assert (cfg.domain_norm, cfg.speaker_norm) == ((True, False) if cfg.data == "RAVDESS"
                                                           else (False, True))
        elif cfg.mode == "train-lmmd":  # utterance vectors, five or six classes, per speaker
            feature = ("ComParE" if "-compare-" in entry["name"] else
                       "GE2E" if "-ge2e-" in entry["name"] else "eGeMAPS")
            assert (cfg.feature_type, cfg.max_folds, cfg.speaker_norm) == (feature, 3, True)
            assert cfg.label_set == ("angry,disgust,fear,happy,neutral,sad" if "-six-" in
                                     entry["name"] else "angry,fear,happy,neutral,sad")
            assert cfg.da_method == "none" or cfg.model == "mlp"  # scikit-learn: no adaptation
        if entry.get("group") == "baseline":  # the utterance-level baselines of the same run
            assert cfg.model in ("svm", "logreg") and cfg.speaker_norm
        assert cfg.filter_size == 39  # the light preset's architecture
        ids.add(cfg.run_id)
    assert len(ids) == len(accuracy_runs.ACCURACY_RUNS)
    modes = [(e["args"][1], e["args"][e["args"].index("--data") + 1]) for e in accuracy_runs.ACCURACY_RUNS]
    assert ("train-lmmd", "EMODB") in modes and ("train-lmmd", "RAVDESS") in modes
    names = {e["name"] for e in accuracy_runs.ACCURACY_RUNS}
    assert "emodb-compare-logreg-loso" in names  # the anchor of the paralinguistic issue


def test_quick_speed_commands():
    commands = dict(run.speed_commands(quick=True, threads=1))
    assert commands["training"][:2] == ["-m", "benchmarks.bench_training"]
    training = " ".join(commands["training"])
    assert "--presets light" in training and "--features MFCC" in training
    assert "--epochs 3" in training and "--threads 1" in training
    assert "--n 20" in " ".join(commands["inference"])
    assert "--threads" not in commands["extraction"]


def test_collect_accuracy_reads_metrics(tmp_path):
    entry = accuracy_runs.ACCURACY_RUNS[0]
    folder = tmp_path / f"bench-acc-{entry['name']}"
    folder.mkdir()
    (folder / "metrics.json").write_text(json.dumps(
        {"war_mean": 0.8, "war_std": 0.02, "uar_mean": 0.75, "uar_std": 0.03,
         "macro_f1_mean": 0.74, "macro_f1_std": 0.01, "n_folds": 10,
         "seconds_per_epoch": 1.5}))
    rows, text = accuracy_table.collect_accuracy(tmp_path)
    assert rows[0]["war_mean"] == 0.8 and "war_mean" not in rows[1]
    assert f"| {entry['name']} | 80.00 ± 2.00 | 75.00 ± 3.00 | 74.00 ± 1.00 |" in text
    assert text.count("not run") == len(accuracy_runs.ACCURACY_RUNS) - 1


def test_render_markdown_has_machine_info_commands_and_tables():
    results = {
        "machine": {"cpu_count": 2, "cpu_model": "x", "memory_gib": 4.0, "platform": "Linux",
                    "python": "3.11", "tensorflow": "2.20", "gpus": [], "date": "2026-01-01",
                    "load_average": [1.0, 1.0, 1.0]},
        "quick": True, "failures": [],
        "commands": [{"benchmark": "training", "device": "cpu", "seconds": 5.0,
                      "returncode": 0, "command": "python -m benchmarks.bench_training"}],
        "extraction": {"dataset": "EMODB", "n_files": 535, "audio_seconds": 1487.0,
                       "repeats": 1, "results": [{"features": "MFCC", "workers": 1,
                                                  "seconds": 1.0, "x_real_time": 1487.0,
                                                  "x_real_time_per_cpu": 1400.0}]},
        "training": {"cpu": {"dataset": "EMODB", "batch_size": 32, "epochs": 3, "threads": 0,
                             "markdown": "| T |", "kfold_formula": "F", "kfold_epochs": [30]}},
        "inference": {"cpu": {"n": 20, "warmup": 3, "wav": "w", "markdown": "| I |",
                              "targets_ms": {"model": 10.0, "features_model": 30.0}}},
    }
    text = run.render_markdown(results)
    for piece in ("CPU cores | 2", "python -m benchmarks.bench_training", "| MFCC | 1 | 1.00 |",
                  "## Training (CPU)", "| T |", "## Inference (CPU)", "| I |", "2026-01-01"):
        assert piece in text


def test_accuracy_runs_name_the_trimmed_mfcc_set_by_its_real_hash():
    from benchmarks import run
    from src.data_processing.config import ExtractionConfig

    assert accuracy_runs._TRIMMED_MFCC == ExtractionConfig(trim_silence=True).feature_hash("MFCC")


# ------------------------------------------------------------- docs/RESULTS.md accuracy table
def _fake_metrics(run_id: str, *, data: str, target: str | None, n_folds: int, base: float,
                  finished: str) -> dict:
    """A metrics.json shaped like the ones src.training writes (same keys; numbers made up)."""
    rng = np.random.default_rng(int(base * 1000))
    stats = {f"{k}_{s}": float(rng.uniform(0.01, 0.06) if s == "std" else base + rng.uniform(0, .1))
             for k in ("war", "uar", "macro_f1", "macro_precision", "macro_recall")
             for s in ("mean", "std")}
    metrics = {"run_id": run_id + (f" (target {target})" if target else ""),
               "mode": "train-lmmd" if target else "train", "data": data,
               "target_data": target, "feature_type": "MFCC", "protocol": "kfold",
               "val_policy": "train_split", "note": "...", "n_folds": n_folds,
               "class_names": ["angry", "sad"], **stats,
               "per_class_recall": {"angry": 0.9, "sad": 0.7}, "seconds_per_epoch": 4.06,
               "train_seconds": 3251.9, "epochs": [60] * n_folds, "peak_memory_mb": 5788.1,
               "flags": {"mode": "train-lmmd" if target else "train", "data": data,
                         "run_id": run_id, "epoch": 60, "threads": 1},
               "finished": finished, "machine": "vm x86_64"}
    if target:
        metrics["da_method"] = "lmmd"
        metrics["source"] = {k: v + 0.5 if k.endswith("_mean") else v for k, v in stats.items()}
    return metrics


def _table_cells(block: str, name: str) -> list[str]:
    rows = [line for line in block.splitlines() if line.startswith(f"| {name} |")]
    assert len(rows) == 1, (name, block)
    return [cell.strip() for cell in rows[0].strip("|").split("|")]


def _pct(values: dict, key: str) -> str:
    return f"{100 * values[key + '_mean']:.2f} +/- {100 * values[key + '_std']:.2f}"


def test_accuracy_dry_run_rewrites_only_the_readme_table(tmp_path, monkeypatch, capsys):
    results, models = tmp_path / "results", tmp_path / "saved_models"
    same, cross, partial = (next(e for e in accuracy_runs.ACCURACY_RUNS if e["name"] == name) for name in
                            ("emodb-mfcc-kfold", "emodb-to-ravdess-lmmd", "ravdess-mfcc-kfold"))
    fake = {
        same["name"]: _fake_metrics("bench-acc-emodb-mfcc-kfold", data="EMODB", target=None,
                                    n_folds=10, base=0.8, finished="2026-11-27T01:34:26"),
        cross["name"]: _fake_metrics("bench-acc-emodb-to-ravdess-lmmd", data="EMODB",
                                     target="RAVDESS", n_folds=3, base=0.25,
                                     finished="2026-11-28T00:56:30"),
    }
    for name, metrics in fake.items():
        folder = results / f"bench-acc-{name}"
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps(metrics))
    for fold in (1, 2, 3):  # an unfinished run: 3 folds done, no metrics.json yet
        done = models / "RAVDESS" / "MFCC" / "bench-acc-ravdess-mfcc-kfold" / f"fold_{fold:02d}"
        done.mkdir(parents=True)
        (done / "result.json").write_text("{}")
    (models / "RAVDESS" / "MFCC" / "bench-acc-ravdess-mfcc-kfold" / "fold_04").mkdir()

    readme = tmp_path / "README.md"
    original = accuracy_table.RESULTS_DOC.read_bytes()                        # the repository's own file
    readme.write_bytes(original)
    monkeypatch.setattr(run, "ACCURACY_MD", tmp_path / "accuracy.md")
    monkeypatch.setattr(run, "tf_devices", lambda: {"tensorflow": "9.9.9", "gpus": []})
    assert run.main(["--skip_speed", "--accuracy", "--dry_run", "--results_root", str(results),
                     "--models_root", str(models), "--readme", str(readme)]) == 0

    text = readme.read_bytes()
    begin, end = accuracy_table.README_BEGIN.encode(), accuracy_table.README_END.encode()
    head, rest = text.split(begin)
    block, tail = rest.split(end)
    assert head == original.split(begin)[0]                         # outside: byte-identical
    assert tail == original.split(end)[1]
    block = block.decode()
    assert block.startswith("\n" + accuracy_table.README_TITLE)

    m = fake[same["name"]]
    assert _table_cells(block, same["name"]) == [
        same["name"], "EMODB", "MFCC", "tcn", "kfold", f"{m['n_folds']} / 10", _pct(m, "war"),
        _pct(m, "uar"), _pct(m, "macro_f1"), "-", m["finished"][:10]]
    m = fake[cross["name"]]
    assert _table_cells(block, cross["name"]) == [
        cross["name"], "EMODB -> RAVDESS", "MFCC, trimmed, --speaker_norm, 5 classes", "tcn",
        "lmmd", f"{m['n_folds']} / 3", _pct(m, "uar"), _pct(m, "war"), _pct(m, "macro_f1"),
        _pct(m["source"], "uar"), "4.06", "-", m["finished"][:10]]  # no 5-class MFCC reference
    assert _table_cells(block, partial["name"])[5:7] == ["3 / 10", "-"]
    loso = _table_cells(block, "emodb-mfcc-loso")
    assert loso[4:6] == ["loso", "0 / 10"]                          # 10 EMODB speakers
    anchor = _table_cells(block, "emodb-compare-logreg-loso")
    assert anchor[2:6] == ["ComParE, --speaker_norm", "logreg (baseline)", "loso", "0 / 10"]
    for entry in accuracy_runs.ACCURACY_RUNS:                                 # every exact command
        assert f"\n{accuracy_runs.show(accuracy_runs.accuracy_command(entry))}\n" in block
    assert "9.9.9" in block and "vm x86_64" in block and f"{os.cpu_count()} CPU cores" in block
    assert re.search(r"on \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", block)  # the date
    assert (tmp_path / "accuracy.md").exists()
    assert not list(tmp_path.glob(".README.md.*"))                  # no temporary left

    # run again: same result apart from the date, still nothing changed outside
    assert run.main(["--skip_speed", "--accuracy", "--dry_run", "--results_root", str(results),
                     "--models_root", str(models), "--readme", str(readme)]) == 0
    again = readme.read_bytes()
    assert again.split(begin)[0] == head and again.split(end)[1] == tail


def test_accuracy_table_without_finished_runs_shows_the_command(tmp_path, monkeypatch):
    readme = tmp_path / "README.md"
    readme.write_text(f"# T\n\nbefore\n{accuracy_table.README_BEGIN}\nold table\n{accuracy_table.README_END}\nafter\n")
    monkeypatch.setattr(run, "ACCURACY_MD", tmp_path / "accuracy.md")
    monkeypatch.setattr(run, "tf_devices", lambda: {"tensorflow": "9.9.9", "gpus": []})
    assert run.main(["--skip_speed", "--accuracy", "--dry_run", "--results_root",
                     str(tmp_path / "results"), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith(f"# T\n\nbefore\n{accuracy_table.README_BEGIN}\n{accuracy_table.README_TITLE}\n")
    assert text.endswith(f"{accuracy_table.README_END}\nafter\n") and "old table" not in text
    assert "has finished yet" in text and accuracy_table.ACCURACY_COMMAND in text


def test_readme_without_markers_is_a_clear_error(tmp_path, monkeypatch, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("# no markers here\n")
    monkeypatch.setattr(run, "ACCURACY_MD", tmp_path / "accuracy.md")
    monkeypatch.setattr(run, "tf_devices", lambda: pytest.fail("must fail before collecting"))
    assert run.main(["--skip_speed", "--accuracy", "--dry_run", "--results_root",
                     str(tmp_path / "results"), "--readme", str(readme)]) == 2
    err = capsys.readouterr().err
    assert "no accuracy table markers" in err and accuracy_table.README_BEGIN in err and str(readme) in err
    assert readme.read_text() == "# no markers here\n"
    assert not (tmp_path / "accuracy.md").exists()
    readme.write_text(f"{accuracy_table.README_END}\n{accuracy_table.README_BEGIN}\n")     # wrong order
    with pytest.raises(accuracy_table.ReadmeError, match="once each, in that order"):
        accuracy_table.read_readme(readme)


def test_the_repository_results_doc_has_the_accuracy_table_markers():
    assert accuracy_table.RESULTS_DOC == run.REPO_ROOT / "docs" / "RESULTS.md"
    text = accuracy_table.read_readme(accuracy_table.RESULTS_DOC)
    results = text.index("## Results")
    assert results < text.index(accuracy_table.README_BEGIN) < text.index("### Same corpus")
    readme = (run.REPO_ROOT / "README.md").read_text()              # one table, in one place
    assert accuracy_table.README_BEGIN not in readme and accuracy_table.README_END not in readme
    assert "docs/RESULTS.md" in readme


# ---------------------------------------------------------------------------- nkululeko peer
def _fake_corpora(root, make_wav):
    """Two EMODB and three RAVDESS wavs (one calm, outside the five classes)."""
    for name in ("03a01Wa", "10b02Ta", "11a01La"):
        make_wav(root / "EMODB" / "wav" / f"{name}.wav", seconds=0.05)
    for actor, stem in (("01", "03-01-05-01-01-01-01"), ("01", "03-01-02-01-01-01-01"),
                        ("02", "03-01-06-02-01-02-02")):
        make_wav(root / "RAVDESS" / f"Actor_{actor}" / f"{stem}.wav", seconds=0.05)


def _csv_rows(path):
    return pd.read_csv(path, dtype=str).values.tolist()


def _ini(path):
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(path)
    return cfg


def test_nkululeko_inputs_of_a_loso_and_a_cross_corpus_row(tmp_path, make_wav):
    root, work = tmp_path / "data", tmp_path / "work"
    _fake_corpora(root, make_wav)
    cfg = _ini(bench_nkululeko.prepare_row("a", work, root))
    assert cfg["DATA"]["databases"] == "['emodb']" and cfg["DATA"]["emodb.type"] == "csv"
    assert (cfg["FEATS"]["set"], cfg["FEATS"]["scale"]) == ("ComParE_2016", "speaker")
    assert (cfg["MODEL"]["type"], cfg["MODEL"]["logo"]) == ("svm", "10")
    assert cfg["EXP"]["root"] == str(work / "exp") and cfg["EXP"]["name"] == "row_a"
    wav = root.resolve() / "EMODB" / "wav"
    assert _csv_rows(cfg["DATA"]["emodb"]) == [   # labels in our names, all seven kept
        [str(wav / "03a01Wa.wav"), "angry", "emodb_03"],
        [str(wav / "10b02Ta.wav"), "sad", "emodb_10"],
        [str(wav / "11a01La.wav"), "boredom", "emodb_11"]]

    cfg = _ini(bench_nkululeko.prepare_row("d", work, root))
    assert cfg["DATA"]["databases"] == "['ravdess', 'emodb']" and "logo" not in cfg["MODEL"]
    assert cfg["DATA"]["ravdess.split_strategy"] == "train"
    assert cfg["DATA"]["emodb.split_strategy"] == "test"
    assert cfg["DATA"]["labels"] == str(list(bench_nkululeko.FIVE))
    assert cfg["FEATS"]["set"] == "eGeMAPSv02"
    actors = root.resolve() / "RAVDESS"
    assert _csv_rows(cfg["DATA"]["ravdess"]) == [      # calm left out
        [str(actors / "Actor_01" / "03-01-05-01-01-01-01.wav"), "angry", "ravdess_01"],
        [str(actors / "Actor_02" / "03-01-06-02-01-02-02.wav"), "fear", "ravdess_02"]]
    assert [r[1] for r in _csv_rows(cfg["DATA"]["emodb"])] == ["angry", "sad"]  # no boredom
    assert sorted(p.name for p in (work / "csv").iterdir()) == [
        "emodb.csv", "emodb_5.csv", "ravdess_5.csv"]


def test_nkululeko_result_parser_reads_the_report_and_the_speaker_groups(tmp_path):
    res = tmp_path / "results"
    (res / "run_0").mkdir(parents=True)
    (res / "x_runs.txt").write_text("0.7858 \nmean: 0.7858, std: 0.0000")
    (res / "run_0" / "cohens-d_x.txt").write_text("{np.True_: 0, 'True-False': 0.357}")
    (res / "run_0" / "x_conf.txt").write_text("Confusion matrix result for epoch: 0, UAR: 0.786")
    report = {"a": {"recall": 0.9}, "accuracy": 0.7963,
              "macro avg": {"precision": 0.78, "recall": 0.7858, "f1-score": 0.78}}
    (res / "run_0" / "x_last_0_000.txt").write_text(
        json.dumps(report) + "\nresult per class (F1 score): [0.8] from epoch: 0")
    got = bench_nkululeko.parse_peer_result(res)
    assert (got["uar"], got["war"]) == (0.7858, 0.7963) and "uar_folds" not in got
    (res / "run_0" / "logo_results.txt").write_text(
        "LOGO: mean 0.650,  std: 0.050\nLOGO results: [0.6,0.7]")
    got = bench_nkululeko.parse_peer_result(res)
    assert got["uar_folds"] == [0.6, 0.7] and got["uar_fold_mean"] == pytest.approx(0.65)

    (res / "run_0" / "x_last_0_000.txt").write_text('{"macro avg": {"recall": 0.1}')
    with pytest.raises(RuntimeError, match="x_last_0_000.txt"):
        bench_nkululeko.parse_peer_result(res)
    with pytest.raises(RuntimeError, match="under .*empty"):
        bench_nkululeko.parse_peer_result(tmp_path / "empty")


def test_our_nkululeko_rows_read_pooled_figures_from_metrics_json(tmp_path, monkeypatch):
    monkeypatch.setenv("NKULULEKO_WORK", str(tmp_path))
    args = bench_nkululeko.parse_args(["--features_root", "/f"])
    run_id, cmd = bench_nkululeko.our_command("c", "svm", args)
    assert run_id == "bench-nkulu-ours-emodb2ravdess-svm-eGeMAPS"
    flags = " ".join(cmd)
    assert "--mode train-lmmd --data EMODB --target_data RAVDESS --da_method none" in flags
    assert "--label_set angry,fear,happy,neutral,sad" in flags and "--speaker_norm" in flags
    assert f"--results_root {tmp_path}/ours/results" in flags and "--features_root /f" in flags
    run_id, cmd = bench_nkululeko.our_command("a", "logreg", args)
    assert run_id == "bench-nkulu-ours-loso-logreg-ComParE"
    assert "--protocol loso" in " ".join(cmd) and "--feature_type ComParE" in " ".join(cmd)
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({"uar_mean": 0.84, "war_mean": 0.86, "uar_pooled": 0.85,
                                "war_pooled": 0.87, "n_folds": 10}))
    got = bench_nkululeko.read_our_metrics(path)
    assert (got["uar"], got["war"], got["uar_fold_mean"]) == (0.85, 0.87, 0.84)


def test_missing_nkululeko_is_one_skip_line_and_exit_0(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NKULULEKO_PYTHON", str(tmp_path / "no-venv" / "python"))
    out, md = tmp_path / "r.json", tmp_path / "r.md"
    assert bench_nkululeko.main(["--skip_ours", "--output", str(out), "--markdown",
                                 str(md)]) == 0
    lines = capsys.readouterr().out.splitlines()
    skips = [line for line in lines if line.startswith("nkululeko peer skipped")]
    assert len(skips) == 1 and str(tmp_path / "no-venv" / "python") in skips[0]
    assert "pip install torch==2.13.0" in skips[0] and "nkululeko" in skips[0]
    report = json.loads(out.read_text())
    assert report["results"] == [] and report["peer_skipped"] == skips[0]
    assert skips[0] in md.read_text()


def test_a_python_without_nkululeko_is_skipped_too(tmp_path):
    import sys

    versions, skip = bench_nkululeko.peer_version(Path(sys.executable))
    assert versions == {} and skip.startswith("nkululeko peer skipped")
    assert "cannot import nkululeko" in skip and "pip install" in skip


def test_cross_corpus_epochs_are_timed_against_the_same_model_on_the_same_source_files():
    names = ("emodb-to-ravdess-egemaps-mlp-lmmd", "emodb-egemaps-mlp-five-kfold-reference",
             "emodb-compare-mlp-loso", "ravdess-to-emodb-egemaps-mlp-lmmd")
    rows = {name: {"name": name, **accuracy_table.run_info(next(e for e in accuracy_runs.ACCURACY_RUNS
                                                     if e["name"] == name))}
            for name in names}
    cross, reference, other_feature, other_source = rows.values()
    reference["seconds_per_epoch"], other_feature["seconds_per_epoch"] = 0.4, 0.1
    cross["seconds_per_epoch"] = 0.5
    same = [other_feature, reference]
    assert accuracy_table.same_corpus_reference(cross, same) is reference
    assert accuracy_table._epoch_cost(cross, same) == ("0.50", f"1.25x ({reference['name']})")
    assert accuracy_table.same_corpus_reference(other_source, same) is None  # RAVDESS has its own row
    reference["seconds_per_epoch"] = None                            # not finished yet
    assert accuracy_table._epoch_cost(cross, same) == ("0.50", "-")


def _silence_tone_silence(lead: float, tone_s: float, tail: float, sr: int = 16000) -> np.ndarray:
    t = np.arange(int(tone_s * sr)) / sr
    return np.concatenate([np.zeros(int(lead * sr)), 0.5 * np.sin(2 * np.pi * 220 * t),
                           np.zeros(int(tail * sr))]).astype(np.float32)


def test_speech_span_finds_onset_end_and_a_cut_while_speaking():
    onset, end, cut = bench_truncation.speech_span(_silence_tone_silence(0.5, 1.0, 0.3), 16000)
    assert (onset, end, cut) == pytest.approx((0.5, 1.5, False))
    assert bench_truncation.speech_span(_silence_tone_silence(0.5, 1.0, 0.0), 16000)[2]


def test_cut_copies_keep_s_seconds_after_onset_in_the_same_order(tmp_path):
    import soundfile as sf

    paths = []
    for i, lead in enumerate((0.2, 0.6)):
        paths.append(tmp_path / f"in{i}.wav")
        sf.write(paths[-1], _silence_tone_silence(lead, 1.5, 0.2), 16000)
    table = pd.DataFrame({"path": [str(p) for p in paths], "label": ["a", "b"],
                          "speaker": ["s1", "s2"]})
    manifest = bench_truncation.write_cut_copy(table, 0.8, tmp_path / "cut")
    rows = pd.read_csv(manifest)
    assert list(rows["label"]) == ["a", "b"] and list(rows["speaker"]) == ["s1", "s2"]
    for lead, path in zip((0.2, 0.6), rows["path"]):
        info = sf.info(path)
        assert info.frames == int(round((lead + 0.8) * 16000))
    audit = bench_truncation.audit(list(rows["path"]))
    assert audit["cut_while_speaking"] == 1.0 and audit["speech_s_mean"] == pytest.approx(0.8)


def test_timnet_on_our_tensorflow_needs_an_unpacked_tf_keras(tmp_path, monkeypatch):
    """--peer_tf_keras: a folder without tf_keras gives one skip line naming it and the flag;
    with one, the peer runs on our python with Keras 2 switched on and the folder first on
    PYTHONPATH (the rest of PYTHONPATH kept)."""
    line = bench_timnet_peer.tf_keras_missing(str(tmp_path))
    assert str(tmp_path) in line and "--peer_tf_keras" in line
    (tmp_path / "tf_keras").mkdir()
    (tmp_path / "tf_keras" / "__init__.py").write_text("")
    assert bench_timnet_peer.tf_keras_missing(str(tmp_path)) == ""
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    python, env = bench_timnet_peer.peer_under_our_tf(str(tmp_path))
    assert python == Path(os.sys.executable)
    assert env["TF_USE_LEGACY_KERAS"] == "1"
    assert env["PYTHONPATH"].split(os.pathsep) == [str(tmp_path.resolve()), "/elsewhere"]


def test_timnet_peer_table_has_a_row_per_system_and_the_skip_lines():
    row = {"fold": 1, "accuracy": 0.5, "uar": 0.25, "macro_f1": 0.2, "epochs": 3,
           "seconds_per_epoch_median": 1.5, "seconds_per_epoch": None, "peak_rss_mb": 100.0}
    report = {"corpus": "EMODB", "feature_set": "abc", "epochs": 3, "threads": 2,
              "machine": {"platform": "p", "cpus": 2}, "fold_check": "checked",
              "systems": {"ours": {"rows": [row], "mean": row, "command": "ours-cmd"},
                          "timnet": {"skipped": "peer skipped: no venv"},
                          "timnet-our-tf": {"rows": [{**row, "accuracy": 0.75}],
                                            "mean": {**row, "accuracy": 0.75},
                                            "command": "tfk-cmd"}}}
    text = bench_timnet_peer.markdown(report)
    rows = [r for r in text.splitlines() if r.startswith("| 1 |") or r.startswith("| mean |")]
    assert [r.split(" | ")[1] for r in rows] == ["ours", "timnet-our-tf", "ours", "timnet-our-tf"]
    assert "| 1 | timnet-our-tf | 3 | 75.00 | 25.00 | 20.00 | 1.50 | – | 100 |" in text
    assert "- timnet: peer skipped: no venv" in text and "- timnet-our-tf: `tfk-cmd`" in text
